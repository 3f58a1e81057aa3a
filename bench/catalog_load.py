#!/usr/bin/env python3
"""Start-up with a large intent catalog: load time and memory (docs/performance-log.md, "Scale and memory").

    python3 bench/catalog_load.py [--bin BIN] [--sizes 100,1000,10000] [--rules 20] [--reps 3]

For each size, bench/catalog.py writes a config with that many intents × RULES scope rules (in
the config YAML, or with --json in a JSON data file of the policy directory), and BIN
(target/release/intentgate by default) starts `serve` with it on 127.0.0.1, REPS times. Each
start reports: the time from exec to the ready file (parse, compile the catalog and the policy,
bind), VmHWM once ready (the load-time peak), and VmRSS 3 s later (jemalloc returns the pages
used only while loading ~1 s after they fall idle). The median of the reps is printed.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    raise KeyError(field)


def catalog(tmp, n, rules, as_json):
    text = subprocess.run([sys.executable, os.path.join(HERE, "catalog.py"), str(n), "--rules", str(rules)],
                          check=True, capture_output=True, text=True).stdout.replace("@UPSTREAM_PORT@", "8080")
    path = os.path.join(tmp, f"catalog-{n}.yaml")
    if as_json:
        # The same intents as a data file ({"intents": {...}}) beside the builtin policy.
        import yaml  # PyYAML, only for --json
        doc = yaml.safe_load(text)
        pdir = os.path.join(tmp, f"policy-{n}")
        os.makedirs(pdir, exist_ok=True)
        data = json.dumps({"intents": doc.pop("intents")})
        with open(os.path.join(pdir, "intents.json"), "w") as f:
            f.write(data)
        doc["policy"]["paths"] = [pdir]
        text = json.dumps(doc)
    with open(path, "w") as f:
        f.write(text)
    return path, len(data if as_json else text)


def start(binary, config, tmp):
    ready = os.path.join(tmp, "ready")
    if os.path.exists(ready):
        os.unlink(ready)
    env = dict(os.environ, RUST_BACKTRACE="0", RUST_LOG="warn")
    t0 = time.monotonic()
    p = subprocess.Popen([binary, "serve", "--config", config, "--listen", "127.0.0.1:0",
                          "--admin", "127.0.0.1:0", "--ready-file", ready],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    while not (os.path.exists(ready) and os.path.getsize(ready) > 0):
        if p.poll() is not None:
            sys.exit(f"intentgate exited: {p.stderr.read().decode()}")
        time.sleep(0.002)
    took = time.monotonic() - t0
    hwm = status(p.pid, "VmHWM")
    time.sleep(3)
    rss = status(p.pid, "VmRSS")
    p.terminate()
    p.wait()
    return took, hwm, rss


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "target", "release", "intentgate"))
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--rules", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="the catalog in a JSON data file, not the config YAML")
    a = ap.parse_args()
    print(f"{a.bin}: {a.rules} rules per intent, catalog in {'a JSON data file' if a.json else 'the config YAML'}, "
          f"median of {a.reps}")
    print("| intents | catalog MB | ready after s | VmHWM at ready MiB | VmRSS 3 s later MiB |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in a.sizes.split(",")):
            config, size = catalog(tmp, n, a.rules, a.json)
            runs = [start(a.bin, config, tmp) for _ in range(a.reps)]
            med = [statistics.median(r[i] for r in runs) for i in range(3)]
            print(f"| {n:,} | {size / 1e6:.1f} | {med[0]:.2f} | {med[1]:.1f} | {med[2]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
