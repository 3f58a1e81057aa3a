#!/usr/bin/env python3
"""Many concurrent intercepted CONNECT tunnels to many distinct hosts: the TLS handshake time
intentgate adds, and whether minting leaf certificates stalls its runtime (docs/performance-log.md,
"Intercepted tunnels to 200 hosts").

    python3 bench/tunnels.py [--bin BIN] [--tunnels 1000] [--hosts 200] [--spread 2] [--reps 3]

Everything stays on loopback. HOSTS distinct upstream hosts are the addresses 127.0.0.2,
127.0.0.3, ... (the whole 127/8 reaches `lo`), all served by one nginx (1 worker) listening with
TLS on each of them, its P-256 leaf naming every address (IP SANs) signed by a throwaway
upstream CA (openssl); nginx also answers plain HTTP on 127.0.0.1 for the probe below. BIN
(target/release/intentgate by default) serves with interception on (`tls.intercept: all`, a CA
from `BIN ca init`, nginx verified against the upstream CA through `tls.upstream_ca`), the
allow-all policy, audit off, egress to 127.0.0.0/8 and nginx's TLS port allowed, and its own
defaults otherwise (one runtime thread unless --workers). The client is bench/tunnels_client.rs
(`cargo build --release --example tunnels-client`): one thread, rustls, a full handshake each
(no resumption); a first version in Python (asyncio + OpenSSL 3.0) spent ~1 ms of its own CPU per
handshake, which queued its connections by tens of ms and swamped a 2 ms bar; this one ~0.4 ms,
kernel included (printed). Each tunnel is a TCP connect to the proxy, CONNECT host:port, the TLS
handshake with the proxy (trusting intentgate's CA) and one GET; each "direct" connection is the
same without the proxy and its CONNECT: TCP connect, TLS handshake with nginx, one GET. Per
connection it records the time from the start of the TCP connect to the CONNECT's answer (direct:
to the connect), to the end of the handshake (`handshake`) and to the end of the first answer
(`answer`: through the proxy it includes the proxy's own connection to nginx, dialled and
handshaken at that first request, or taken from its pool).

1. A probe process sends a plain keep-alive GET through the proxy every millisecond for the
   whole run and records each one's latency (a stalled runtime thread shows up as its maximum).
2. Warm-up: one tunnel to each host, all at once, a handshake each (no GET, so no upstream
   connection either): the proxy mints HOSTS leaf certificates
   (shown by its `intentgate_tls_leaf_certificates_total` counter), and the CPU time of each of
   its threads over the warm-up is printed (the mints run on the blocking pool's threads, not
   on the runtime thread). Then the same again, its leaves now cached ("re-warm"): the probe's
   latency in the two phases tells what the mints add to the runtime's stalls. Then one tunnel
   to each host with a GET warms the proxy's side to nginx (a pooled connection, a TLS session
   to resume), and one direct connection to each host warms nginx.
3. REPS repetitions of: "steady" (TUNNELS tunnels opened at an even rate over SPREAD seconds)
   and "burst" (TUNNELS opened at once), each through the proxy and direct (the order alternates
   per repetition), TUNNELS/HOSTS per host. Every connection of a run stays open until the last
   one has its answer. Printed: p50/p90/p99/max of each measure, proxy - direct per percentile
   (the added time), the p99s per repetition, the connections that waited a SYN retransmit (1 s),
   the proxy's CPU per tunnel (runtime thread: user, system; other threads), VmRSS and pooled
   connections to nginx per run, the probe's latency during each phase, and the mints (none
   after warm-up). --dump DIR keeps each run's times.
In "burst" the TUNNELS handshakes queue in the client's single thread and in the proxy's (and
nginx's) one, so its percentiles are mostly those queues' length; "steady" is the figure for the
target (p99 handshake added after warm-up): tunnels arriving while the earlier ones stay open.
nginx's handshake (OpenSSL 3.0) may be slower than intentgate's (rustls, aws-lc), so "added" can
be negative: the proxy's own p99 is then the bound on what it adds.
"""
import argparse
import ipaddress
import json
import multiprocessing
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from loadlib.procs import terminate_all, wait_ready
from loadlib.systems import free_port

HERE = os.path.dirname(os.path.abspath(__file__))


def hosts_of(n):
    first = ipaddress.IPv4Address("127.0.0.2")
    return [str(first + i) for i in range(n)]


def make_tls(tmp, binary, hosts):
    """An upstream CA and one leaf for every host (openssl), and intentgate's CA (`ca init`)."""
    with open(f"{tmp}/leaf.ext", "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=" + ",".join(f"IP:{h}" for h in hosts) + "\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for cmd in (
        ["openssl", "req", "-x509", *ec, "-days", "2", "-keyout", f"{tmp}/up-ca-key.pem", "-out",
         f"{tmp}/up-ca.pem", "-subj", "/CN=intentgate bench upstream CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", *ec, "-subj", "/CN=bench upstream", "-keyout", f"{tmp}/up-key.pem",
         "-out", f"{tmp}/up.csr"],
        ["openssl", "x509", "-req", "-in", f"{tmp}/up.csr", "-CA", f"{tmp}/up-ca.pem", "-CAkey",
         f"{tmp}/up-ca-key.pem", "-CAcreateserial", "-days", "2", "-extfile", f"{tmp}/leaf.ext",
         "-out", f"{tmp}/up.pem"],
        [binary, "ca", "init", "--out", f"{tmp}/ig"],
    ):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            sys.exit(f"TLS set-up failed: {' '.join(cmd)}: {(r.stderr or r.stdout)[-500:]}")


def probe(port, plain, stop, out):
    """Process body: a keep-alive GET through the proxy every ms until `stop`; sends
    [(start, latency µs)] (CLOCK_MONOTONIC) to `out`."""
    req = f"GET http://127.0.0.1:{plain}/ HTTP/1.1\r\nHost: 127.0.0.1:{plain}\r\n\r\n".encode()
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    got, buf = [], b""
    while not stop.is_set():
        t = time.monotonic()
        s.sendall(req)
        while True:
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if sep:
                n = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                if len(rest) >= n:
                    buf = rest[n:]
                    break
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("the proxy closed the probe's connection")
            buf += chunk
        got.append((t, (time.monotonic() - t) * 1e6))
        time.sleep(0.001)
    out.send(got)


class Client:
    """Runs bench/tunnels_client.rs: one run of connections through the proxy or direct."""

    def __init__(self, binary, proxy_port, tls_port, tmp):
        self.bin, self.proxy_port, self.tls_port = binary, proxy_port, tls_port
        self.ca = {"proxy": f"{tmp}/ig/ca.pem", "direct": f"{tmp}/up-ca.pem"}
        self.cpu = {"proxy": [], "direct": []}  # the client's CPU µs per connection, per run

    def run(self, via, hosts, per_host, spread, handshake_only=False):
        """len(hosts) * per_host connections opened at an even rate over `spread` s (0: at once);
        [(handshake ms, answer ms, CONNECT answered or TCP connected ms)]."""
        cmd = [self.bin, "--port", str(self.tls_port), "--ca", self.ca[via], "--hosts", ",".join(hosts),
               "--per-host", str(per_host), "--spread", str(spread)]
        if via == "proxy":
            cmd += ["--proxy", str(self.proxy_port)]
        if handshake_only:
            cmd.append("--handshake-only")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if r.returncode != 0 or r.stderr:
            print(f"  {via}: {r.stderr.strip() or r.returncode}")
        times = [tuple(int(x) / 1000 for x in line.split()) for line in r.stdout.splitlines()]
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        self.cpu[via].append(cpu * 1e6 / max(1, len(times)))
        return [(hs, ans, connect) for connect, hs, ans in times]


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))] if xs else float("nan")


QS = [("p50", .5), ("p90", .9), ("p99", .99), ("max", 1.0)]


def metric(admin, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10).read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(name))


def thread_cpu(pid):
    """{tid: (name, seconds on a CPU)} of a process's threads (schedstat: ns, not clock ticks)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[tid] = (name, int(f.read().split()[0]) / 1e9)
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def proxy_cpu(pid):
    """Seconds on a CPU of the proxy's runtime thread (its main thread) and of its other threads,
    the runtime thread's user and system time (clock ticks), and the proxy's VmRSS (MiB)."""
    threads = thread_cpu(pid)
    main = threads.get(str(pid), ("", 0.0))[1]
    with open(f"/proc/{pid}/task/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmRSS:"))
    return main, sum(cpu for _, cpu in threads.values()) - main, int(fields[11]) / tick, int(fields[12]) / tick, rss


def probe_table(samples, phases):
    print("probe (a plain keep-alive GET through the proxy every ms), latency µs:")
    print("| phase | requests | p50 | p99 | max |")
    print("|---|---|---|---|---|")
    for name, t0, t1 in phases:
        lat = [l for t, l in samples if t0 <= t < t1]
        print(f"| {name} | {len(lat)} | {pct(lat, .5):.0f} | {pct(lat, .99):.0f} | {pct(lat, 1):.0f} |")


def times_table(runs, reps):
    print(f"time from the TCP connect's start, ms ({reps} repetitions pooled):")
    print("| arrival | measure | path | " + " | ".join(q for q, _ in QS) + " |")
    print("|---|---|---|" + "---|" * len(QS))
    for arrival in ("steady", "burst"):
        for i, measure in ((0, "handshake"), (1, "answer")):
            got = {via: [t[i] for rep in runs[arrival][via] for t in rep] for via in ("direct", "proxy")}
            for via in ("direct", "proxy"):
                print(f"| {arrival} | {measure} | {via} | " + " | ".join(f"{pct(got[via], q):.2f}" for _, q in QS) + " |")
            print(f"| {arrival} | {measure} | added | " +
                  " | ".join(f"{pct(got['proxy'], q) - pct(got['direct'], q):+.2f}" for _, q in QS) + " |")
        for via, what in (("direct", "TCP connected"), ("proxy", "CONNECT answered")):
            cn = [t[2] for rep in runs[arrival][via] for t in rep]
            print(f"| {arrival} | {what} | {via} | " + " | ".join(f"{pct(cn, q):.2f}" for _, q in QS) + " |")
    for arrival in ("steady", "burst"):
        slow = {via: sum(t[2] >= 1000 for rep in runs[arrival][via] for t in rep) for via in ("direct", "proxy")}
        print(f"{arrival}: connections whose TCP connect (direct) or CONNECT answer (proxy) took 1 s or more "
              f"(a dropped SYN is sent again after 1 s): direct {slow['direct']}, proxy {slow['proxy']}")
        p99 = [(pct([t[0] for t in d], .99), pct([t[0] for t in p], .99))
               for d, p in zip(runs[arrival]["direct"], runs[arrival]["proxy"])]
        print(f"{arrival}: p99 handshake per repetition, direct / proxy / added (ms): " +
              ", ".join(f"{d:.2f} / {p:.2f} / {p - d:+.2f}" for d, p in p99))


def settle(admin):
    """Waits for the last run's tunnels to be gone from the proxy, and half a second more."""
    for _ in range(500):
        if metric(admin, "intentgate_tunnels_active") == 0:
            break
        time.sleep(0.02)
    time.sleep(0.5)


def upstream_conns(port):
    """Established TCP connections to nginx's TLS port (after a proxy run: the proxy's, pooled)."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return len(out.splitlines())


def bench(a, client, hosts, ports, ig_pid):
    proxy_port, admin, _ = ports
    per_host = a.tunnels // len(hosts)
    phases = []
    time.sleep(1)
    phases.append(("idle, before the warm-up", time.monotonic() - 1, time.monotonic()))
    mints = 0.0
    for name in (f"warm-up: {len(hosts)} tunnels to new hosts at once",
                 f"re-warm: {len(hosts)} tunnels to the same hosts at once (cached)"):
        settle(admin)
        cpu0, t0 = thread_cpu(ig_pid), time.monotonic()
        warm = client.run("proxy", hosts, 1, 0, handshake_only=True)
        phases.append((name, t0, time.monotonic()))
        cpu1 = thread_cpu(ig_pid)
        minted = metric(admin, 'intentgate_tls_leaf_certificates_total{result="mint"}') - mints
        mints += minted
        print(f"{name}: {len(warm)} handshakes, {minted:.0f} leaf certificates minted; handshake ms "
              f"p50 {pct([t[0] for t in warm], .5):.2f}, max {pct([t[0] for t in warm], 1):.2f}; "
              "the proxy's threads' CPU ms (those that ran):")
        for tid, (thread, cpu) in sorted(cpu1.items(), key=lambda kv: int(kv[0])):
            spent = cpu - cpu0.get(tid, (thread, 0.0))[1]
            if spent > 0:
                role = " (runtime)" if tid == str(ig_pid) else (" (new)" if tid not in cpu0 else "")
                print(f"  {tid} {thread}{role}: {spent * 1000:.1f}")
    client.run("proxy", hosts, 1, 0)  # its connections to nginx (pooled, TLS sessions to resume)
    client.run("direct", hosts, 1, 0)
    runs = {arrival: {"direct": [], "proxy": []} for arrival in ("steady", "burst")}
    for rep in range(a.reps):
        order = ("direct", "proxy") if rep % 2 == 0 else ("proxy", "direct")
        for arrival, spread in (("steady", a.spread), ("burst", 0)):
            for via in order:
                settle(admin)
                t0, cpu0, pooled = time.monotonic(), proxy_cpu(ig_pid), upstream_conns(client.tls_port)
                runs[arrival][via].append(client.run(via, hosts, per_host, spread))
                if a.dump:
                    with open(os.path.join(a.dump, f"rep{rep + 1}-{arrival}-{via}.json"), "w") as f:
                        json.dump(runs[arrival][via][-1], f)
                phases.append((f"rep {rep + 1} {arrival} {via}", t0, time.monotonic()))
                if via == "proxy":
                    cpu1 = proxy_cpu(ig_pid)
                    used = [(y - x) * 1e6 / a.tunnels for x, y in zip(cpu0[:4], cpu1[:4])]
                    print(f"rep {rep + 1} {arrival}: the proxy's CPU per tunnel, µs: runtime thread "
                          f"{used[0]:.0f} (user {used[2]:.0f}, system {used[3]:.0f}), other threads "
                          f"{used[1]:.0f}; VmRSS {cpu0[4]:.1f} -> {cpu1[4]:.1f} MiB; its connections to nginx "
                          f"{pooled} -> {upstream_conns(client.tls_port)}")
    after = metric(admin, 'intentgate_tls_leaf_certificates_total{result="mint"}')
    print(f"leaf certificates minted after the warm-up: {after - mints:.0f}")
    return runs, phases


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "target", "release", "intentgate"))
    ap.add_argument("--client", default=os.path.join(HERE, "..", "target", "release", "examples", "tunnels-client"),
                    help="the client (default: cargo build --release --example tunnels-client)")
    ap.add_argument("--tunnels", type=int, default=1000, help="tunnels per run (default 1000)")
    ap.add_argument("--hosts", type=int, default=200, help="distinct upstream hosts (default 200)")
    ap.add_argument("--spread", type=float, default=2.0,
                    help="steady arrival: seconds over which the tunnels are opened (default 2)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each run (default 3)")
    ap.add_argument("--dump", help="a directory to write each run's times to (JSON, in the order they completed)")
    ap.add_argument("--workers", type=int, default=None, help="the proxy's limits.workers (default: its own, 1)")
    a = ap.parse_args()
    if not os.path.exists(a.client):
        ap.error(f"{a.client} is missing: cargo build --release --example tunnels-client")
    if a.tunnels % a.hosts or a.hosts > 250:
        ap.error("--tunnels must be a multiple of --hosts, and --hosts at most 250")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 3 * a.tunnels + 1024
    if hard != resource.RLIM_INFINITY and hard < need:
        sys.exit(f"RLIMIT_NOFILE hard limit {hard} is below {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    hosts = hosts_of(a.hosts)
    tls_port, plain, proxy_port, admin = free_port(), free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        make_tls(tmp, a.bin, hosts)
        listens = "\n    ".join(f"listen {h}:{tls_port} ssl backlog=4096;" for h in hosts)
        with open(f"{tmp}/nginx.conf", "w") as f:
            f.write(f"""worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx.err;
worker_rlimit_nofile {need};
events {{ worker_connections {need}; }}
http {{ access_log off; client_body_temp_path {tmp}; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{plain}; location / {{ return 200 '{{"ok":true}}'; }} }}
  server {{
    {listens}
    ssl_certificate {tmp}/up.pem; ssl_certificate_key {tmp}/up-key.pem; ssl_protocols TLSv1.2 TLSv1.3;
    location / {{ return 200 '{{"ok":true}}'; }} }} }}
""")
        workers = "" if a.workers is None else f", workers: {a.workers}"
        with open(f"{tmp}/ig.yaml", "w") as f:
            f.write(f"""audit: {{path: "off"}}
agent: {{id: bench-agent, owner: bench}}
egress: {{allow_cidrs: ["127.0.0.0/8"], connect_ports: [{tls_port}]}}
policy: {{builtin: false, paths: ["{HERE}/variants/allow-all.rego"]}}
limits: {{max_connections: {need}, max_tunnels: {need}{workers}}}
tls: {{ca_cert: "{tmp}/ig/ca.pem", ca_key: "{tmp}/ig/ca-key.pem", upstream_ca: "{tmp}/up-ca.pem", intercept: all}}
""")
        nginx = subprocess.Popen(["nginx", "-c", f"{tmp}/nginx.conf"])
        ready = f"{tmp}/ready"
        ig = subprocess.Popen([a.bin, "serve", "--config", f"{tmp}/ig.yaml", "--listen", f"127.0.0.1:{proxy_port}",
                               "--admin", f"127.0.0.1:{admin}", "--ready-file", ready],
                              env=dict(os.environ, RUST_BACKTRACE="0", RUST_LOG="warn"))
        stop, (got, sent) = multiprocessing.Event(), multiprocessing.Pipe(duplex=False)
        prober = None
        try:
            wait_ready(ready, ig)
            prober = multiprocessing.Process(target=probe, args=(proxy_port, plain, stop, sent), daemon=True)
            prober.start()
            print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
            client = Client(a.client, proxy_port, tls_port, tmp)
            runs, phases = bench(a, client, hosts, (proxy_port, admin, plain), ig.pid)
            stop.set()
            samples = got.recv()
            print(f"load average after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
            times_table(runs, a.reps)
            print("the client's CPU per connection (µs, median of runs): " + ", ".join(
                f"{via} {pct(c, .5):.0f}" for via, c in client.cpu.items()))
            probe_table(samples, phases)
        finally:
            stop.set()
            if prober is not None:
                prober.join(10)
            terminate_all(ig, nginx)


if __name__ == "__main__":
    main()
