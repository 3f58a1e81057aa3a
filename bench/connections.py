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
3. RATE requests per second for SECONDS, open loop, round-robin over the CONNS connections
   (through the proxy), and the same rate over 100 connections straight to nginx (the reference,
   same run, same client; `--ref-conns N` for N of them: 9,000 gave the same p50 as 100, the
   client is not slower with many sockets): p50 / p90 / p99 of each and the differences (the
   added latency).
The client is Python asyncio, whose own scheduling adds tens of µs of noise to both sides.
Needs nginx; everything stays on 127.0.0.1.
"""
import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time

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


async def steady(conns, rate, seconds):
    """Open-loop load: a request every 1/rate s on the next connection; latencies in µs."""
    lat, tasks, busy, errors = [], [], set(), []
    loop = asyncio.get_running_loop()
    t0, n, i = loop.time(), int(rate * seconds), 0

    async def one(c):
        s = time.perf_counter_ns()
        try:
            await c.get()
            lat.append((time.perf_counter_ns() - s) / 1000)
            busy.discard(c)
        except (RuntimeError, OSError, asyncio.IncompleteReadError) as e:
            errors.append(str(e))  # the connection is left out (busy) from then on

    for k in range(n):
        delay = t0 + k / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        while conns[i % len(conns)] in busy:  # never two requests in flight on one connection
            i += 1
            if i % len(conns) == 0:
                await asyncio.sleep(0)  # all of them busy: let one finish (spinning would hang)
        busy.add(conns[i % len(conns)])  # here, not in the task: it may start only later
        tasks.append(asyncio.create_task(one(conns[i % len(conns)])))
        i += 1
    await asyncio.gather(*tasks)
    if errors:
        print(f"{len(errors)} of {n} requests failed; the first: {errors[0]!r}")
    lat.sort()
    return lat


def upstream_conns(port):
    """Established TCP connections to the upstream's port (the proxy's side of them)."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return len(out.splitlines())


def pct(lat, q):
    return lat[min(len(lat) - 1, int(len(lat) * q))]


async def run(a, proxy_port, up_port, pid):
    target = f"http://127.0.0.1:{up_port}/small"
    via = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{up_port}\r\n\r\n".encode()
    direct = f"GET /small HTTP/1.1\r\nHost: 127.0.0.1:{up_port}\r\n\r\n".encode()
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
    refs = [await Conn.open(up_port, direct) for _ in range(a.ref_conns)]
    for c in refs:
        await c.get()
    ref = await steady(refs, a.rate, a.seconds)
    got = await steady(conns, a.rate, a.seconds)
    after_load = rss_mib(pid)
    print(f"{a.rate} req/s for {a.seconds} s ({len(got)} requests each), latency µs:")
    print("| path | p50 | p90 | p99 |")
    print("|---|---|---|---|")
    for name, lat in [(f"direct to nginx ({a.ref_conns} conns)", ref), (f"through intentgate ({a.conns} conns)", got)]:
        print(f"| {name} | {pct(lat, .5):.0f} | {pct(lat, .9):.0f} | {pct(lat, .99):.0f} |")
    print(f"| added | {pct(got, .5) - pct(ref, .5):.0f} | {pct(got, .9) - pct(ref, .9):.0f} | "
          f"{pct(got, .99) - pct(ref, .99):.0f} |")
    print(f"proxy VmRSS after the load: {after_load:.1f} MiB")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "target", "release", "intentgate"))
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--ref-conns", type=int, default=100,
                    help="connections of the direct reference (CONNS: the client rotates over as many sockets on both sides)")
    ap.add_argument("--hold", type=int, default=0,
                    help="seconds to wait with the idle connections open (to attach gdb, ss), before the load")
    a = ap.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = a.conns + a.ref_conns + 512
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
http {{ access_log off; client_body_temp_path {tmp}; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{up}; location / {{ return 200 '{{"ok":true}}'; }} }} }}
""")
        with open(f"{tmp}/ig.yaml", "w") as f:
            f.write(f"""audit: {{path: "off"}}
agent: {{id: bench-agent, owner: bench}}
egress: {{allow_cidrs: ["127.0.0.0/8"]}}
policy: {{builtin: false, paths: ["{HERE}/variants/allow-all.rego"]}}
limits: {{max_connections: {a.conns + 1000}, header_read_timeout_ms: 600000}}
""")
        nginx = subprocess.Popen(["nginx", "-c", f"{tmp}/nginx.conf"])
        ready = f"{tmp}/ready"
        ig = subprocess.Popen([a.bin, "serve", "--config", f"{tmp}/ig.yaml", "--listen", f"127.0.0.1:{port}",
                               "--admin", "127.0.0.1:0", "--ready-file", ready],
                              env=dict(os.environ, RUST_BACKTRACE="0", RUST_LOG="warn"))
        try:
            for _ in range(600):
                if os.path.exists(ready) and os.path.getsize(ready) > 0:
                    break
                time.sleep(0.05)
            else:
                sys.exit("intentgate never became ready")
            asyncio.run(run(a, port, up, ig.pid))
        finally:
            ig.terminate()
            nginx.terminate()
            ig.wait()
            nginx.wait()


if __name__ == "__main__":
    main()
