#!/usr/bin/env python3
"""Many idle keep-alive client connections: proxy memory per connection, then added latency at a
steady rate spread over them (docs/performance-log.md, "Scale and memory").

    python3 bench/connections.py [--bin BIN] [--conns 10000] [--rate 1000] [--seconds 10]

Starts nginx (the upstream, on 127.0.0.1) and BIN (target/release/intentgate by default) with
the allow-all policy, audit off and `limits.max_connections` above CONNS; RLIMIT_NOFILE is raised
to its hard limit for this process and both children. Then:
1. one warm-up connection sends 200 requests; the proxy's VmRSS is read;
2. CONNS connections are opened to the proxy, each sends one request (so each is a real
   keep-alive connection, served once) and stays open; 3 s later VmRSS is read again:
   (after - before) / CONNS is the proxy's memory per idle connection; the upstream
   connections the proxy then keeps open to nginx are counted (`ss`); `--hold S` waits S
   seconds here, e.g. to read the allocator's statistics (bench/jemalloc_stats.sh);
3. the latency phase, with bench/connections_client.rs (`cargo build --release --example
   connections-client`; `--client PATH`): the Python connections are closed, and three clients
   each open their own connections (each served once, so a real keep-alive connection): CONNS
   through the proxy, CONNS straight to nginx (the reference over as many sockets), and
   `--ref-conns` (100) straight to nginx. Per repetition (`--reps`, 3), alternating: RATE requests
   per second for SECONDS, open loop, round-robin, on the direct CONNS, then the proxied CONNS,
   then the direct 100. The proxied connections idle between their runs, so every request
   arrives on a parked connection, as it does at 1,000 req/s over 10,000 in any case. Printed:
   each run's p50 / p90 / p99 / p99.9 from the scheduled send time (coordinated-omission correct),
   the added latency per repetition (proxied minus each reference) and its median over the
   repetitions, the client's own lateness and CPU per request, and the proxy's CPU and sleeps
   (voluntary context switches) per request. `--rt PRIO` runs nginx, the proxy and the clients at
   SCHED_FIFO (`chrt`), so that on a host busy with other work they preempt it. `--haproxy` adds
   a fourth client, CONNS connections through haproxy (at most half the descriptor limit: haproxy
   counts two per connection; 9,900 in a container limited to 20,000; one thread, kept upstream connections,
   addressed as the origin, as bench/load.py's reference): what any proxy adds on this machine,
   printed the same way. The Rust client replaced a Python asyncio one, whose own scheduling put
   ms of noise into the reference (its p99 over 100 connections to nginx was above the proxied p99).
Needs nginx (and haproxy for `--haproxy`); everything stays on 127.0.0.1.
"""
import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from loadlib.procs import terminate_all, wait_ready
from loadlib.systems import free_port

HERE = os.path.dirname(os.path.abspath(__file__))


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise KeyError("VmRSS")


class Conn:
    """One HTTP/1.1 keep-alive connection; `get` sends a request and reads the whole answer."""

    def __init__(self, reader, writer, request):
        self.r, self.w, self.req = reader, writer, request

    @classmethod
    async def open(cls, port, request):
        r, w = await asyncio.open_connection("127.0.0.1", port, limit=64 * 1024)
        return cls(r, w, request)

    async def get(self):
        self.w.write(self.req)
        head = await self.r.readuntil(b"\r\n\r\n")
        length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:"))
        body = await self.r.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError((head + body).decode(errors="replace"))


def upstream_conns(port):
    """Established TCP connections to the upstream's port (the proxy's side of them)."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return len(out.splitlines())


async def run(a, proxy_port, up_port, pid):
    target = f"http://127.0.0.1:{up_port}/small"
    via = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{up_port}\r\n\r\n".encode()
    warm = await Conn.open(proxy_port, via)
    for _ in range(200):
        await warm.get()
    await asyncio.sleep(3)
    before = rss_mib(pid)
    conns, sem = [], asyncio.Semaphore(200)

    async def open_one():
        async with sem:
            c = await Conn.open(proxy_port, via)
            await c.get()
            conns.append(c)

    t = time.monotonic()
    await asyncio.gather(*(open_one() for _ in range(a.conns)))
    opened = time.monotonic() - t
    await asyncio.sleep(3)
    after = rss_mib(pid)
    print(f"{a.conns} idle keep-alive connections (opened in {opened:.1f} s): proxy VmRSS "
          f"{before:.1f} -> {after:.1f} MiB, {(after - before) * 1024 * 1024 / a.conns / 1024:.2f} KiB per connection")
    print(f"upstream connections the proxy holds open to nginx: {upstream_conns(up_port)}")
    if a.hold:
        print(f"holding for {a.hold} s: proxy pid {pid}, port {proxy_port}, nginx port {up_port}", flush=True)
        await asyncio.sleep(a.hold)
    for c in conns + [warm]:  # the clients open their own (this process keeps fewer descriptors)
        c.w.close()


def proxy_cpu(pid):
    """Seconds on a CPU of all the proxy's threads (schedstat, ns), and their voluntary context
    switches (each a sleep in epoll_wait or on a lock: the wake-ups)."""
    cpu = switches = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                cpu += int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                switches += next(int(l.split()[1]) for l in f if l.startswith("voluntary_ctxt_switches"))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return cpu / 1e9, switches


class Client:
    """One bench/connections_client.rs process: its connections open, a run per `run` line."""

    def __init__(self, binary, name, conns, up_port, proxy_port=None, rt=(), cpu_pid=None):
        cmd = [*rt, binary, "--port", str(up_port), "--conns", str(conns)]
        if proxy_port:
            cmd += ["--proxy", str(proxy_port)]
        self.name, self.cpu_pid = name, cpu_pid  # whose CPU its rows show (default: intentgate's)
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.read()
        print(f"{name}: {ready['conns']} connections open in {ready['open_s']:.1f} s", flush=True)

    def read(self):
        line = self.p.stdout.readline()
        if not line:
            sys.exit(f"{self.name}: the client exited ({self.p.wait()})")
        return json.loads(line)

    def run(self, rate, seconds):
        self.p.stdin.write(f"run {rate} {seconds}\n")
        self.p.stdin.flush()
        r = self.read()
        if r["errors"] or r["answered"] != r["sent"]:
            print(f"  {self.name}: {r['errors']} errors, {r['answered']} of {r['sent']} answered; "
                  f"the first error: {r['first_error']}")
        return r

    def close(self):
        self.p.stdin.close()
        self.p.wait()


QS = ["p50", "p90", "p99", "p99_9"]


def rt(a):
    """The command prefix that runs a process at real-time priority `--rt`, if given."""
    return ["chrt", "-f", str(a.rt)] if a.rt else []


def latency(a, proxy_port, up_port, pid, haproxy=None):
    """Phase 3: interleaved repetitions, direct CONNS / proxied CONNS / direct REF_CONNS (and
    haproxy's: `haproxy` is (its port, its pid, its connections))."""
    clients = [Client(a.client, f"direct ({a.conns})", a.conns, up_port, rt=rt(a)),
               Client(a.client, f"intentgate ({a.conns})", a.conns, up_port, proxy_port, rt(a)),
               Client(a.client, f"direct ({a.ref_conns})", a.ref_conns, up_port, rt=rt(a))]
    if haproxy:  # addressed as the origin (a reverse proxy), as bench/load.py's reference
        port, hpid, n = haproxy
        clients.append(Client(a.client, f"haproxy ({n})", n, port, rt=rt(a), cpu_pid=hpid))
    time.sleep(3)  # the proxied connections parked (after 1 s idle)
    direct, proxied, ref = clients[:3]
    throughs = [proxied] + clients[3:]
    added = {}  # (measure, reference client) -> per rep {q: µs}
    try:
        for rep in range(1, a.reps + 1):
            runs = {}
            for c in clients:
                cpu, switches = proxy_cpu(c.cpu_pid or pid)
                runs[c] = c.run(a.rate, a.seconds)
                cpu2, switches2 = proxy_cpu(c.cpu_pid or pid)
                n = max(1, runs[c]["answered"])
                runs[c]["proxy_cpu"], runs[c]["proxy_wakes"] = (cpu2 - cpu) * 1e6 / n, (switches2 - switches) / n
            print(f"rep {rep}: {a.rate} req/s for {a.seconds} s, latency µs from the scheduled send"
                  f" (load average {os.getloadavg()[0]:.1f})")
            print("| path | p50 | p90 | p99 | p99.9 | max | client late p50 / p99 | client CPU µs/req"
                  " | proxy CPU µs/req | proxy sleeps/req | busy skips |")
            print("|---|---|---|---|---|---|---|---|---|---|---|")
            for c in clients:
                r, s = runs[c], runs[c]["from_scheduled"]
                print(f"| {c.name} | " + " | ".join(f"{s[q]:.0f}" for q in QS) + f" | {s['max']:.0f} | "
                      f"{r['late']['p50']:.1f} / {r['late']['p99']:.1f} | {r['client_cpu_us_per_request']:.1f} | "
                      f"{r['proxy_cpu']:.0f} | {r['proxy_wakes']:.2f} | {r['skipped_busy']} |")
            for through in throughs:
                for measure in ["from_scheduled", "from_sent"]:
                    for base in [direct, ref]:
                        d = {q: runs[through][measure][q] - runs[base][measure][q] for q in QS}
                        added.setdefault((through, measure, base), []).append(d)
                        print(f"| {through.name.split()[0]} added vs {base.name}, {measure.replace('_', ' ')} | "
                              + " | ".join(f"{d[q]:+.0f}" for q in QS) + " | | | | | | |")
            print(flush=True)
    finally:
        for c in clients:
            c.close()
    print(f"added latency µs, median of {a.reps} reps (per rep p99 in brackets):")
    for (through, measure, base), reps in added.items():
        med = {q: statistics.median(d[q] for d in reps) for q in QS}
        print(f"  {through.name.split()[0]} vs {base.name}, {measure.replace('_', ' ')}: " + ", ".join(f"{q} {med[q]:+.0f}" for q in QS)
              + " (" + " / ".join(f"{d['p99']:+.0f}" for d in reps) + ")")
    print(f"proxy VmRSS after the load: {rss_mib(pid):.1f} MiB")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "target", "release", "intentgate"))
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--ref-conns", type=int, default=100,
                    help="connections of the second direct reference (the first has CONNS)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of direct / proxied / direct REF_CONNS")
    ap.add_argument("--client", default=os.path.join(HERE, "..", "target", "release", "examples", "connections-client"),
                    help="the latency phase's client (default: cargo build --release --example connections-client)")
    ap.add_argument("--hold", type=int, default=0,
                    help="seconds to wait with the idle connections open (to attach gdb, ss), before the load")
    ap.add_argument("--haproxy", action="store_true",
                    help="also CONNS connections through haproxy (one thread, kept upstream connections, "
                         "addressed as the origin): the reference for what any proxy adds on this machine")
    ap.add_argument("--rt", type=int, default=0,
                    help="run nginx, the proxy and the clients at this SCHED_FIFO priority (chrt): on a host "
                         "busy with other work, they then preempt it; the machine's RT throttling stays on")
    a = ap.parse_args()
    if not os.path.exists(a.client):
        ap.error(f"{a.client} is missing: cargo build --release --example connections-client")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = a.conns + a.ref_conns + 512  # nginx: the two direct clients' and the proxy's
    if hard != resource.RLIM_INFINITY and hard < need:
        try:  # root may raise it (not in every container)
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            hard = need
        except (ValueError, OSError):
            sys.exit(f"RLIMIT_NOFILE hard limit {hard} is below {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    up, port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        with open(f"{tmp}/nginx.conf", "w") as f:
            f.write(f"""worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx.err;
events {{ worker_connections 16384; }}
http {{ access_log off; keepalive_timeout 3600s; client_body_temp_path {tmp}; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{up}; location / {{ return 200 '{{"ok":true}}'; }} }} }}
""")
        with open(f"{tmp}/ig.yaml", "w") as f:
            f.write(f"""audit: {{path: "off"}}
agent: {{id: bench-agent, owner: bench}}
egress: {{allow_cidrs: ["127.0.0.0/8"]}}
policy: {{builtin: false, paths: ["{HERE}/variants/allow-all.rego"]}}
limits: {{max_connections: {a.conns + 1000}, header_read_timeout_ms: 600000}}
""")
        nginx = subprocess.Popen([*rt(a), "nginx", "-c", f"{tmp}/nginx.conf"])
        hap = None
        if a.haproxy:
            hport = free_port()
            # haproxy wants two descriptors per connection it may hold (client and server side,
            # though it keeps a few to nginx): at most half the descriptor limit.
            hconns = min(a.conns, hard // 2 - 100)
            with open(f"{tmp}/haproxy.cfg", "w") as f:
                f.write(f"""global
    nbthread 1
    maxconn {hconns + 50}
defaults
    mode http
    timeout connect 5s
    timeout client 3600s
    timeout server 3600s
    timeout http-keep-alive 3600s
    http-reuse always
frontend bench
    bind 127.0.0.1:{hport}
    default_backend nginx
backend nginx
    server nginx 127.0.0.1:{up}
""")
            hap = subprocess.Popen([*rt(a), "haproxy", "-db", "-f", f"{tmp}/haproxy.cfg"])
        ready = f"{tmp}/ready"
        ig = subprocess.Popen([*rt(a), a.bin, "serve", "--config", f"{tmp}/ig.yaml", "--listen", f"127.0.0.1:{port}",
                               "--admin", "127.0.0.1:0", "--ready-file", ready],
                              env=dict(os.environ, RUST_BACKTRACE="0", RUST_LOG="warn"))
        try:
            wait_ready(ready, ig)
            asyncio.run(run(a, port, up, ig.pid))
            latency(a, port, up, ig.pid, (hport, hap.pid, hconns) if hap else None)
        finally:
            terminate_all(hap, ig, nginx)


if __name__ == "__main__":
    main()
