#!/usr/bin/env python3
"""The proxy CPU that LLM usage counting adds to a streamed response (issue 24: <= 2 %), as a
paired A/B of two builds with a confidence interval:

    python3 bench/llm_usage_ab.py ON_BIN OFF_BIN [--reps 40] [-n 1500] [-c 8] [--frames one|event]
        [--restarts R] [--pin]

ON_BIN counts usage; OFF_BIN is the same code built with bench/variants/no-usage.patch. Both
serve the same config (a `protocol: llm` rule, audit off) side by side for the whole run; a
small Python upstream answers a POST of a streamed chat request with a 200-event OpenAI chat
completion (`--events`, ~50 KB, the usage chunk and `[DONE]` last, as bench/llm_usage_cpu.sh):
  --frames one    the whole response in one write (the proxy reads it as one or a few frames);
  --frames event  each SSE event its own write (TCP_NODELAY, the upstream yields between events,
                  `--gap-us` sleeps): the proxy reads it in ~one frame per event, so per-frame
                  costs count (`--strace` counts the proxy's reads per response to show it).
Each rep sends N responses through one proxy, then N through the other (oha, C connections,
which of the two goes first alternating), and reads each proxy's CPU before and after:
utime + stime of the whole process, to the ns (clock_gettime on its CPU clock, the kernel's own
sum; /proc's ticks are 10 ms), kernel share included. Printed: each rep's µs per response, then
the paired differences (on - off): mean with its 95 % t-interval and a bootstrap interval, the
median, all also as % of off's mean. The target is met when the interval's top is under 2 %.
Interleaving cancels slow drifts of the host, not its noise: on a busy host the interval is
wide; run on quiet cores (PIN=1-style pinning: `--pin`, proxies on CPU 1, the rest on CPU 0).
A process also has an offset of its own (where its code and memory landed: ±1-2 % here), which
reps of one pair of processes cannot average out: `--restarts R` spreads the reps over R pairs,
each started anew, and judges by the interval over the pairs' means. Build OFF_BIN with its own
function layout (bench/order.sh on it, then build again): with ON's layout file ~11 % of its
names are missing and its code is laid out worse. Needs oha. Everything runs on 127.0.0.1.
"""
import argparse
import asyncio
import ctypes
import ctypes.util
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from loadlib.systems import free_port


def events(n):
    """The response's SSE events (bench/llm_usage_cpu.sh's stream)."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1760000000,
            "model": "gpt-4o-mini", "system_fingerprint": "fp_bench"}

    def event(choices, **extra):
        return ("data: " + json.dumps(dict(base, choices=choices, **extra)) + "\n\n").encode()

    out = [event([{"index": 0, "delta": {"role": "assistant", "content": ""},
                   "finish_reason": None}])]
    for i in range(n):
        out.append(event([{"index": 0, "delta": {"content": f" word{i}"}, "logprobs": None,
                           "finish_reason": None}]))
    out.append(event([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    out.append(event([], usage={"prompt_tokens": 42, "completion_tokens": n,
                                "total_tokens": 42 + n}))
    out.append(b"data: [DONE]\n\n")
    return out


def upstream(port, frames, n, gap_us):
    """The upstream (run in its own process): HTTP/1.1 keep-alive, any request answered with
    the stream, in one write or one write per event."""
    evs = events(n)
    body = b"".join(evs)
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n")

    async def handle(reader, writer):
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                req = await reader.readuntil(b"\r\n\r\n")
                m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", req)
                if m:
                    await reader.readexactly(int(m.group(1)))
                if frames == "one":
                    writer.write(head + body)
                    await writer.drain()
                    continue
                writer.write(head)
                for ev in evs:
                    writer.write(ev)  # sent at once: the transport's buffer is empty
                    await writer.drain()
                    await asyncio.sleep(gap_us / 1e6)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


class Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


def cpu_ns(pid):
    """utime + stime of process `pid` (all its threads, ended ones too), in ns."""
    clock = ctypes.c_int()
    if libc.clock_getcpuclockid(pid, ctypes.byref(clock)) != 0:
        raise OSError(f"no CPU clock for {pid}")
    ts = Timespec()
    if libc.clock_gettime(clock.value, ctypes.byref(ts)) != 0:
        raise OSError(ctypes.get_errno(), "clock_gettime")
    return ts.sec * 1_000_000_000 + ts.nsec


def t95(df):
    """The two-sided 95 % quantile of Student's t with `df` degrees of freedom."""
    table = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26,
             10: 2.23, 12: 2.18, 15: 2.13, 20: 2.09, 25: 2.06, 30: 2.04, 40: 2.02, 60: 2.00,
             120: 1.98}
    return table[max(k for k in table if k <= df)] if df < 1000 else 1.96


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("on_bin", nargs="?")
    ap.add_argument("off_bin", nargs="?")
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("-n", type=int, default=1500, help="responses per proxy per rep")
    ap.add_argument("-c", type=int, default=8, help="connections")
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--frames", choices=["one", "event"], default="one")
    ap.add_argument("--gap-us", type=float, default=0, help="--frames event: sleep between events")
    ap.add_argument("--pin", action="store_true", help="proxies on CPU 1, the rest on CPU 0")
    ap.add_argument("--restarts", type=int, default=1,
                    help="pairs of proxy processes the reps are spread over, each started anew "
                         "(the verdict then by the interval over the pairs' means)")
    ap.add_argument("--strace", action="store_true",
                    help="after the A/B, count each proxy's reads per response (strace -c)")
    ap.add_argument("--upstream", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.upstream:
        port, frames, n, gap = a.upstream
        return upstream(int(port), frames, int(n), float(gap))
    if not (a.on_bin and a.off_bin):
        ap.error("ON_BIN and OFF_BIN are required")

    tmp = tempfile.mkdtemp()
    procs = []
    pin_load = ["taskset", "-c", "0"] if a.pin else []
    pin_proxy = ["taskset", "-c", "1"] if a.pin else []
    try:
        up = free_port()
        procs.append(subprocess.Popen(pin_load + [sys.executable, __file__, "--upstream", str(up),
                                                  a.frames, str(a.events), str(a.gap_us)]))
        for _ in range(400):
            try:
                socket.create_connection(("127.0.0.1", up), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        proxies = {}

        def start(side, b):
            p, adm = free_port(), free_port()
            cfg = os.path.join(tmp, f"{side}.yaml")
            with open(cfg, "w") as f:
                f.write(f"""listen: {{proxy: 127.0.0.1:{p}, admin: 127.0.0.1:{adm}}}
agent: {{id: bench, owner: bench}}
audit: {{path: off}}
egress: {{allow_cidrs: [127.0.0.0/8]}}
mcp: {{detect: rules}}
intents: {{bench: {{allow: [{{hosts: [127.0.0.1], ports: [{up}], protocol: llm, llm: {{models: ["gpt-4o-*"]}}}}]}}}}
intent: bench
""")
            log = open(os.path.join(tmp, f"{side}.log"), "w")
            proc = subprocess.Popen(pin_proxy + [b, "serve", "--config", cfg], stdout=log,
                                    stderr=subprocess.STDOUT,
                                    env=dict(os.environ, RUST_BACKTRACE="0"))
            procs.append(proc)
            proxies[side] = (proc, p)
            for _ in range(200):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{adm}/readyz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.05)
            else:
                sys.exit(f"{side} proxy not ready; see {tmp}/{side}.log")
        req = os.path.join(tmp, "req.json")
        with open(req, "w") as f:
            f.write('{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},'
                    '"max_tokens":400,"messages":[{"role":"user","content":"Summarise the ticket."}]}')
        url = f"http://127.0.0.1:{up}/v1/chat/completions"

        def load(side, n):
            _, port = proxies[side]
            out = subprocess.run(pin_load + ["oha", "-n", str(n), "-c", str(a.c), "--no-tui",
                                             "-m", "POST", "-D", req, "-T", "application/json",
                                             "-x", f"http://127.0.0.1:{port}", url],
                                 capture_output=True, text=True, check=True).stdout
            if f"[200] {n} responses" not in out:
                sys.exit(f"not all {n} answered 200 through {side}:\n{out}")

        def rep(side):
            pid = proxies[side][0].pid
            before = cpu_ns(pid)
            load(side, a.n)
            return (cpu_ns(pid) - before) / 1000 / a.n

        def stop():
            for side in ("on", "off"):
                proc = proxies.pop(side)[0]
                proc.terminate()
                proc.wait()
                procs.remove(proc)

        size = sum(len(e) for e in events(a.events))
        rounds = max(1, a.restarts)
        print(f"{a.reps} reps x {a.n} responses per proxy ({a.events} events, {size} bytes, "
              f"frames: {a.frames}), {a.c} connections, {rounds} pair(s) of proxy processes; "
              f"on = {a.on_bin}, off = {a.off_bin}")
        ons, offs, by_round = [], [], []
        for r in range(rounds):
            if r:
                stop()
            for side, b in (("on", a.on_bin), ("off", a.off_bin))[::1 if r % 2 == 0 else -1]:
                start(side, b)
            for side in ("on", "off"):
                load(side, max(500, a.n // 2))  # warm-up: connections, the series, allocator
            first = len(ons)
            for i in range(a.reps // rounds + (r < a.reps % rounds)):
                order = ("on", "off") if i % 2 == 0 else ("off", "on")
                got = {s: rep(s) for s in order}
                ons.append(got["on"])
                offs.append(got["off"])
                print(f"rep {len(ons)}: off {got['off']:.2f} µs, on {got['on']:.2f} µs per "
                      f"response, on - off {got['on'] - got['off']:+.2f}", flush=True)
            by_round.append(statistics.fmean(x - y for x, y in zip(ons[first:], offs[first:])))
        d = [x - y for x, y in zip(ons, offs)]
        base = statistics.fmean(offs)
        mean = statistics.fmean(d)
        half = t95(len(d) - 1) * statistics.stdev(d) / len(d) ** 0.5
        rng = random.Random(24)
        boots = sorted(statistics.fmean(rng.choices(d, k=len(d))) for _ in range(10000))
        lo, hi = boots[250], boots[9749]
        pct = lambda x: 100 * x / base  # noqa: E731
        print(f"off: mean {base:.2f} µs per response (median {statistics.median(offs):.2f}); "
              f"on: mean {statistics.fmean(ons):.2f} (median {statistics.median(ons):.2f})")
        print(f"on - off, paired over {len(d)} reps: mean {mean:+.2f} µs ({pct(mean):+.2f} %), "
              f"95 % t-interval {mean - half:+.2f} to {mean + half:+.2f} µs "
              f"({pct(mean - half):+.2f} to {pct(mean + half):+.2f} %), bootstrap {lo:+.2f} to "
              f"{hi:+.2f} µs ({pct(lo):+.2f} to {pct(hi):+.2f} %), median "
              f"{statistics.median(d):+.2f} µs")
        how = "the t-interval"
        if rounds > 1:
            # Each process pair has an offset of its own (where its code and memory landed):
            # the interval over the pairs' means counts it, the pooled one does not.
            mean = statistics.fmean(by_round)
            half = t95(rounds - 1) * statistics.stdev(by_round) / rounds ** 0.5
            how = f"the t-interval over the {rounds} process pairs"
            print("per process pair, on - off: "
                  + ", ".join(f"{pct(x):+.2f} %" for x in by_round)
                  + f"; mean {mean:+.2f} µs ({pct(mean):+.2f} %), 95 % t-interval "
                  f"{pct(mean - half):+.2f} to {pct(mean + half):+.2f} %")
        verdict = "met" if pct(mean + half) < 2 else ("not met" if pct(mean - half) > 2
                                                       else "not resolved")
        print(f"target (<= 2 % of the response's proxy CPU): {verdict} by {how}")
        if a.strace:
            for side in ("on", "off"):
                pid = proxies[side][0].pid
                out = os.path.join(tmp, f"strace.{side}")
                st = subprocess.Popen(["strace", "-c", "-f", "-e", "trace=recvfrom,read,readv",
                                       "-o", out, "-p", str(pid)],
                                      stderr=subprocess.DEVNULL)
                time.sleep(1)
                load(side, 200)
                st.terminate()
                st.wait()
                rows = [line.split() for line in open(out)
                        if re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+\d+", line)
                        and "total" not in line]
                calls = sum(int(r[3]) for r in rows)
                empty = sum(int(r[4]) for r in rows if len(r) == 6)
                print(f"{side}: {(calls - empty) / 200:.1f} reads with data and "
                      f"{empty / 200:.1f} without (EAGAIN) per response, client and upstream "
                      f"side (strace -c over 200 responses)")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
