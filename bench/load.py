#!/usr/bin/env python3
"""End-to-end load benchmark for intentgate (normally started through bench/load.sh).

In one run it starts a fast local upstream (nginx, `return 200` with a ~100 B JSON body), one
intentgate per variant (and optionally peer proxies from apt, or `hyper-floor`, the stack's floor
built from bench/floor, and `hyper-floor-pgo`, the same built with its own profile by
bench/floor_pgo.sh), then drives load with oha:

  max   - maximum throughput at --conns connections for --dur seconds
  rate  - latency at a fixed --rate req/s (oha -q RATE --latency-correction); also reported for
          the requests scheduled after the first second only (oha --db-url), without the set-up
          of the connections
  mix   - (--kinds max,mix) maximum throughput with a varied request mix instead of one repeated
          URL: oha --urls-from-file with URLs under /mix/ drawn with Zipf weights (write_mix), so
          policy decisions are real; intentgate's decision-cache hit rate is scraped from the
          admin /metrics before and after each run and reported per run

Repetitions are interleaved (rep 1: every system, rep 2: every system, ...; the order rotates
each rep) and the report shows medians. For every proxy it samples /proc: CPU (utime+stime of
the process tree, delta over the run, divided by completed requests) and VmRSS (idle before any
load, peak sampled every 0.25 s). Results go to stdout and to bench/results/<stamp>.md (+ .json).

Variants: the built-in `intentgate` variant runs with the base config (listen on 127.0.0.1:0,
admin on 127.0.0.1:0 for /metrics, audit off, egress to 127.0.0.0/8 allowed, agent bench-agent with an owner, and
"policy off": bench/variants/allow-all.rego instead of the builtin policy). `--variant NAME=FILE` adds another
intentgate run whose config is the base config with FILE's top-level sections appended; a
top-level key present in FILE replaces the base key of the same name (e.g. an `intents:` catalog
and `policy:` section for a "policy on" variant; see bench/catalog.py, bench/variants/). In FILE,
@RUN@ is the variant's temp dir, @UPSTREAM@ the upstream's 127.0.0.1:PORT, @UPSTREAM_PORT@ its port.

--https adds two systems: `direct-tls` (oha to a TLS listener of the same nginx, P-256 leaf for
127.0.0.1 signed by a throwaway bench CA made with openssl) and `intentgate-tls` (the base config plus
`tls: {ca_cert, ca_key, upstream_ca, intercept: all}`, CA from `intentgate ca init`; oha sends CONNECT,
trusts intentgate's CA with --cacert, and keeps the intercepted tunnels alive). The report then has an
"HTTPS interception" section: ×direct-tls throughput and CPU/request against the plain `intentgate`.

All traffic is to 127.0.0.1. Every wait is bounded. Everything started is stopped on exit,
also on error or Ctrl-C (process groups get SIGTERM, then SIGKILL after 8 s).
"""
import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time

from loadlib.common import HERE, ROOT, log
from loadlib.procs import PIN, STARTED, on_signal, status_kb, tree, wait_quiet
from loadlib.report import git_rev, machine_facts, report, version_of
from loadlib.runs import describe, measure, perf_profile, write_mix
from loadlib.systems import (BUILT, PEER_BIN, PEERS, http_check, https_check, make_tls_material, start_intentgate,
                             start_nginx, start_peer)


def main():
    ap = argparse.ArgumentParser(
        prog="bench/load.sh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  bench/load.sh                                 # direct vs intentgate, 3 reps (~3 min)\n"
               "  bench/load.sh --reps 5 --peers squid,tinyproxy\n"
               "  bench/load.sh --variant policy=bench/policy-on.yaml\n"
               "  bench/load.sh --no-build --bin target/release/intentgate --reps 1 --dur 5\n")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions (default 3)")
    ap.add_argument("--dur", type=int, default=10, help="seconds per max-throughput run (default 10)")
    ap.add_argument("--rate-dur", type=int, default=10, help="seconds per fixed-rate run (default 10)")
    ap.add_argument("--conns", type=int, default=32, help="connections (default 32)")
    ap.add_argument("--rate", type=int, default=1000, help="fixed request rate, req/s (default 1000; 0 = skip)")
    ap.add_argument("--kinds", default="max,rate",
                    help="which measurements: max,rate,mix (default max,rate); mix = max throughput with the "
                         "varied request mix (oha --urls-from-file) instead of one repeated URL")
    ap.add_argument("--mix-distinct", type=int, default=20000,
                    help="mix: distinct URLs to draw from, Zipf weights 1/rank (default 20000)")
    ap.add_argument("--mix-lines", type=int, default=50000,
                    help="mix: URLs in the file oha picks from at random (default 50000)")
    ap.add_argument("--peers", default="", help="comma list of peers to include: squid,tinyproxy,privoxy (apt), "
                    "mitmproxy (PyPI; with --https also mitmproxy-tls, intercepting), haproxy (apt; a reverse "
                    "proxy, as a reference: oha addresses it as the origin; with --https also haproxy-tls, "
                    "terminating and re-originating TLS), hyper-floor (bench/floor, built on demand: a bare "
                    "hyper/tokio forward proxy with intentgate's stack, the floor of its cost; with --https also "
                    "hyper-floor-tls, intercepting as intentgate-tls does), hyper-floor-pgo (the same built with "
                    "its own profile as intentgate's release is: bench/floor_pgo.sh, run on demand, two floor builds; "
                    "with --https also hyper-floor-pgo-tls)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=FILE",
                    help="an extra intentgate run: base config + FILE's top-level YAML sections (repeatable)")
    ap.add_argument("--variant-bin", action="append", default=[], metavar="NAME=BIN",
                    help="an extra intentgate run with the base config (policy off) but another binary, "
                         "for a same-run A/B of two builds (repeatable); with a --variant of the same NAME, "
                         "that variant's config runs on BIN")
    ap.add_argument("--no-default-variant", action="store_true",
                    help="do not run the plain `intentgate` variant (only --variant ones)")
    ap.add_argument("--no-direct", action="store_true", help="skip the direct (no proxy) baseline")
    ap.add_argument("--https", action="store_true",
                    help="also measure HTTPS: `direct-tls` (oha straight to nginx's TLS listener) and "
                         "`intentgate-tls` (CONNECT tunnels intercepted: tls.intercept all, leaf minted by a CA "
                         "from `intentgate ca init`, upstream re-originated and verified against tls.upstream_ca)")
    ap.add_argument("--pin", action="store_true",
                    help="pin the proxies to the last CPU and nginx + oha to the others (taskset): each proxy "
                         "gets a core of its own, and `direct` runs on the remaining cores only")
    ap.add_argument("--https-new", action="store_true",
                    help="with --https, also `direct-tls-new` and `intentgate-tls-new`: a new connection for "
                         "every request (oha --disable-keepalive), so each one pays a CONNECT and TLS handshakes")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of unrecorded load per system first (default 2)")
    ap.add_argument("--log-level", default="info",
                    help="INTENTGATE_LOG for the proxy (default info, intentgate's own default)")
    ap.add_argument("--quiet-thresh", type=float, default=30,
                    help="before each run wait until the host is busy < this %% of one core ... (default 30)")
    ap.add_argument("--quiet-max-wait", type=float, default=60, help="... but at most this many seconds (default 60)")
    ap.add_argument("--max-foreign", type=float, default=25,
                    help="repeat a run once if other processes used more than this %% of a core (default 25)")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "intentgate"),
                    help="intentgate binary (load.sh builds target/release/intentgate unless --no-build)")
    ap.add_argument("--oha", default=shutil.which("oha") or os.path.expanduser("~/.cargo/bin/oha"),
                    help="oha binary (load.sh installs it with `cargo install oha --locked` if missing)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="results directory (default bench/results)")
    ap.add_argument("--perf", action="store_true",
                    help="after the reps, profile each intentgate variant with perf during one extra max run "
                         "(report next to the results: <stamp>-NAME.perf.txt)")
    ap.add_argument("--perf-dur", type=int, default=8, help="seconds of the profiled run (default 8)")
    ap.add_argument("--perf-freq", type=int, default=999, help="perf sampling frequency, Hz (default 999)")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temporary run directory (configs, logs)")
    ap.add_argument("--no-build", action="store_true", help="(load.sh) do not run cargo build --release")
    ap.add_argument("--no-install", action="store_true", help="(load.sh) do not apt-get/cargo install missing tools")
    ap.add_argument("--report", metavar="JSON", help="only re-render the markdown of an earlier run's .json")
    a = ap.parse_args()
    if a.report:
        with open(a.report) as f:
            md = report(json.load(f))
        with open(os.path.splitext(a.report)[0] + ".md", "w") as f:
            f.write(md)
        print(md)
        return 0

    if a.https_new and not a.https:
        ap.error("--https-new needs --https")
    if a.pin:
        n = os.cpu_count() or 1
        if n < 2 or not shutil.which("taskset"):
            ap.error("--pin needs at least 2 CPUs and taskset (util-linux)")
        PIN.update(proxy=str(n - 1), load="0" if n == 2 else f"0-{n - 2}")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    kinds = [k for k in a.kinds.split(",") if k]
    if not a.rate:
        kinds = [k for k in kinds if k != "rate"]
    peers = [p for p in a.peers.split(",") if p]
    for p in peers:
        if p not in PEERS:
            ap.error(f"unknown peer {p!r} (known: {', '.join(PEERS)})")
        if p in BUILT:
            try:
                BUILT[p]()
            except RuntimeError as e:
                ap.error(str(e))
        elif not shutil.which(PEER_BIN.get(p, p)):
            ap.error(f"peer {p} is not installed ({'pip install mitmproxy' if p == 'mitmproxy' else 'apt-get install ' + p};"
                     " bench/load.sh installs it)")
    variants = [] if a.no_default_variant else [("intentgate", "")]
    for v in a.variant:
        name, sep, path = v.partition("=")
        if not sep or not name or not os.path.isfile(path):
            ap.error(f"--variant wants NAME=FILE with an existing file, got {v!r}")
        with open(path) as f:
            variants.append((name, f.read()))
    bins = {}
    for v in a.variant_bin:
        name, sep, path = v.partition("=")
        if not sep or not name or not os.access(path, os.X_OK):
            ap.error(f"--variant-bin wants NAME=BIN with an executable BIN, got {v!r}")
        if name not in (n for n, _ in variants):
            variants.append((name, ""))
        bins[name] = os.path.abspath(path)
    if variants and not os.access(a.bin, os.X_OK):
        ap.error(f"intentgate binary {a.bin} not found (run bench/load.sh, or cargo build --release)")
    if not os.access(a.oha, os.X_OK):
        ap.error(f"oha not found at {a.oha} (run bench/load.sh, or cargo install oha --locked)")
    if not shutil.which("nginx"):
        ap.error("nginx not found (apt-get install nginx-light)")

    stamp = time.strftime("%Y%m%d-%H%M%S")
    run = tempfile.mkdtemp(prefix="intentgate-bench.")
    os.chmod(run, 0o777)  # squid/tinyproxy drop privileges and write their logs here
    raw = dict(stamp=stamp, args=vars(a), host=machine_facts(), git=git_rev(a.bin), binary=a.bin,
               versions=dict(oha=version_of([a.oha, "--version"]), nginx=version_of(["nginx", "-v"])),
               link_order=version_of([os.path.join(HERE, "order.sh"), "--check", a.bin]),
               systems=[], runs=[], memory={}, retried=0)
    os.makedirs(a.out, exist_ok=True)
    md_path, json_path = os.path.join(a.out, stamp + ".md"), os.path.join(a.out, stamp + ".json")
    log(f"run dir {run}; results -> {md_path}")
    exit_code = 0
    try:
        tls = make_tls_material(run, a.bin) if a.https else None
        nginx_pid, upstream, tls_upstream = start_nginx(run, tls)
        systems = [] if a.no_direct else [dict(name="direct")]
        if tls:
            raw["tls_upstream"] = tls_upstream
            if not a.no_direct:
                systems.append(dict(name="direct-tls", tls_upstream=tls_upstream, cacert=tls["upstream_ca"], tls=True))
            intercepting = (
                f"tls:\n  ca_cert: \"{tls['ig_ca']}\"\n  ca_key: \"{tls['ig_ca_key']}\"\n"
                f"  upstream_ca: \"{tls['upstream_ca']}\"\n  intercept: all\n"
                # intercepted CONNECTs go only to ports an intent or egress.connect_ports names
                f"egress:\n  allow_cidrs: [\"127.0.0.0/8\"]\n"
                f"  connect_ports: [{str(tls_upstream).rsplit(':', 1)[1]}]\n")
            variants = variants + [("intentgate-tls", intercepting)]
            if a.https_new:
                variants.append(("intentgate-tls-new", intercepting))
                if not a.no_direct:
                    systems.append(dict(name="direct-tls-new", tls_upstream=tls_upstream, cacert=tls["upstream_ca"],
                                        tls=True, no_keepalive=True, base="direct-tls-new"))
        for name, extra in variants:
            s = start_intentgate(name, bins.get(name, a.bin), extra, run, a.log_level, upstream)
            with open(s["config"]) as f:
                lines = f.read().splitlines()
            more = [f"# ... {len(lines) - 40} more lines"] if len(lines) > 40 else []
            s.update(intentgate=True, config_text="\n".join(lines[:40] + more) + "\n")
            if name.startswith("intentgate-tls"):
                # the client (oha) trusts intentgate's CA; intentgate verifies nginx against upstream_ca
                s.update(tls=True, tls_upstream=tls_upstream, cacert=tls["ig_ca"])
            if name == "intentgate-tls-new":
                s.update(no_keepalive=True, base="direct-tls-new")
            systems.append(s)
        for p in peers:
            s = start_peer(p, run, up=dict(upstream=upstream))
            s["peer"] = True
            systems.append(s)
            if p == "haproxy" and tls:
                # the TLS reference: haproxy terminating TLS (nginx's leaf, trusted by oha through the
                # bench CA) and re-originating it to nginx's TLS listener
                s = start_peer(p, run, label="haproxy-tls", up=dict(tls=tls, tls_upstream=tls_upstream))
                s.update(peer=True, tls=True, tls_upstream=s["target"], cacert=tls["upstream_ca"])
                systems.append(s)
            if p in ("hyper-floor", "hyper-floor-pgo") and tls:
                # the interception floor: CONNECT tunnels terminated with a leaf from intentgate's CA
                # (oha trusts it as for intentgate-tls), the upstream over rustls
                s = start_peer(p, run, label=f"{p}-tls", up=dict(tls=tls))
                s.update(peer=True, tls=True, tls_upstream=tls_upstream, cacert=tls["ig_ca"])
                systems.append(s)
            if p == "mitmproxy" and tls:
                # The HTTPS peer: mitmproxy intercepting the tunnels as intentgate-tls does (oha trusts
                # its CA; it verifies nginx against the bench's upstream CA).
                s = start_peer(p, run, label="mitmproxy-tls")
                s.update(peer=True, tls=True, tls_upstream=tls_upstream,
                         cacert=os.path.join(s["confdir"], "mitmproxy-ca-cert.pem"))
                systems.append(s)
        raw["systems"] = systems
        raw["upstream"] = upstream
        if "mix" in kinds:
            raw["mix"] = write_mix(run, upstream, a.mix_distinct, a.mix_lines)
            log(f"request mix: {raw['mix']['lines']} URLs, {raw['mix']['unique_in_file']} distinct")

        for s in systems:
            s["check"] = (https_check(s.get("proxy"), s["tls_upstream"], "/small", s["cacert"]) if s.get("tls")
                          else http_check(s.get("proxy"), s.get("target", upstream), "/small"))
            log(f"check {s['name']}: {'ok' if s['check'][0] else 'FAILED'} ({s['check'][1]})")
            if s.get("pid"):
                raw["memory"][s["name"]] = dict(idle_kb=status_kb(tree(s["pid"]), "VmRSS"))
        if not all(s["check"][0] for s in systems):
            raise RuntimeError("functional check failed: " + "; ".join(
                f"{s['name']}: {s['check'][1]}" for s in systems if not s["check"][0]))

        if a.warmup:
            for s in systems:
                measure(a, "warmup", s, upstream, nginx_pid, a.warmup, record=False)
                if "mix" in kinds and not s.get("tls"):
                    measure(a, "warmup", s, upstream, nginx_pid, a.warmup, record=False, mix=raw["mix"])
            time.sleep(2)
            for s in systems:
                if s.get("pid"):
                    raw["memory"][s["name"]]["warm_idle_kb"] = status_kb(tree(s["pid"]), "VmRSS")

        for rep in range(a.reps):
            order = systems[rep % len(systems):] + systems[:rep % len(systems)]
            for kind in kinds:
                for s in order:
                    if kind == "mix" and s.get("tls"):
                        continue  # the mix is plain HTTP
                    dur, rate = (a.dur, None) if kind in ("max", "mix") else (a.rate_dur, a.rate)
                    for attempt in (0, 1):
                        busy, waited = wait_quiet(a.quiet_thresh, a.quiet_max_wait)
                        r = measure(a, kind, s, upstream, nginx_pid, dur, rate,
                                    mix=raw.get("mix") if kind == "mix" else None)
                        r.update(rep=rep + 1, pre_busy_pct=busy, quiet_wait_s=waited)
                        if attempt == 0 and r.get("foreign_cpu_pct", 0) > a.max_foreign:
                            raw["retried"] += 1
                            log(f"repeating {kind}/{s['name']}: foreign CPU {r['foreign_cpu_pct']:.0f}% of a core")
                            continue
                        break
                    raw["runs"].append(r)
                    log(f"rep {rep + 1}/{a.reps} " + (describe(r) if not r.get("failed")
                                                      else f"{kind} {s['name']} FAILED: {r['stderr'][:300]}"))
                    with open(json_path, "w") as f:
                        json.dump(raw, f, indent=1)
        if a.perf:
            for s in systems:
                if s.get("intentgate"):
                    raw.setdefault("perf", {})[s["name"]] = perf_profile(
                        a, s, upstream, nginx_pid, os.path.join(a.out, stamp), run)
        for s in systems:
            if s.get("pid"):
                pids = tree(s["pid"])
                raw["memory"][s["name"]]["end_kb"] = status_kb(pids, "VmRSS")
                raw["memory"][s["name"]]["hwm_kb"] = status_kb(pids, "VmHWM")
    except KeyboardInterrupt:
        log("interrupted")
        exit_code = 130
    except SystemExit as e:
        log(f"stopped by signal (exit {e.code})")
        exit_code = e.code if isinstance(e.code, int) else 1
    except Exception as e:  # report what we have, then fail
        log(f"ERROR: {e}")
        raw["error"] = str(e)
        exit_code = 1
    finally:
        STARTED.stop_all()
        for s in raw["systems"]:
            if s.get("log") and os.path.exists(s["log"]):
                lines = [x for x in open(s["log"], errors="replace").read().splitlines() if x.strip()]
                s["log_lines"], s["log_first"] = len(lines), (lines[0][:300] if lines else "")
        with open(json_path, "w") as f:
            json.dump(raw, f, indent=1)
        if raw["runs"]:
            md = report(raw)
            if raw.get("error"):
                md += f"\n**Run aborted:** {raw['error']}\n"
            with open(md_path, "w") as f:
                f.write(md)
            print(md)
            log(f"written {md_path} and {json_path}")
        if a.keep_tmp or exit_code:
            log(f"kept run dir {run} (configs and logs)")
        else:
            shutil.rmtree(run, ignore_errors=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
