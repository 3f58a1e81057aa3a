"""One measured run: the request mix, the oha command and its output, /proc deltas, perf profiles."""
import json
import os
import random
import re
import resource
import signal
import socket
import subprocess
import tempfile
import time

from .common import cmdline, log
from .procs import TICK, RssSampler, busy_pct, cpu_ticks, host_cpu, pinned, proc_table, status_kb, tree


def write_mix(run, upstream, distinct, lines, seed=1):
    """The request mix: `lines` URLs drawn with Zipf weights (1/rank) from `distinct` paths and
    query strings under /mix/ (nginx answers 200, bench/catalog.py's `bench` intent allows
    /mix/**). oha --urls-from-file picks a random line per request, so a URL's share of the
    load is its share of the lines: a few hot URLs and a long tail, like an agent's API calls."""
    rng = random.Random(seed)
    ranks = list(range(distinct))
    rng.shuffle(ranks)  # rank -> id, so hot URLs are spread over the id space

    def url(k):
        q = f"?page={k % 7}&sort=name" if k % 2 else ""
        return f"http://{upstream}/mix/v{k % 3 + 1}/items/{k}{q}"
    picks = rng.choices(ranks, weights=[1 / (r + 1) for r in range(distinct)], k=lines)
    path = os.path.join(run, "mix-urls.txt")
    with open(path, "w") as f:
        f.write("\n".join(url(k) for k in picks) + "\n")
    return dict(file=path, distinct=distinct, lines=lines, unique_in_file=len(set(picks)))


def cache_counts(admin):
    """intentgate_decision_cache_total by result from the admin /metrics, or None."""
    if not admin:
        return None
    host, port = admin.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), 3) as s:
            s.settimeout(3)
            s.sendall(f"GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n".encode())
            buf = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except OSError:
        return None
    out = {"hit": 0, "miss": 0}
    for m in re.finditer(rb'^intentgate_decision_cache_total\{result="(hit|miss)"\} (\d+)', buf, re.M):
        out[m.group(1).decode()] = int(m.group(2))
    return out


def oha_cmd(a, url, proxy, rate, dur, no_keepalive=False, cacert=None, db=None):
    cmd = [a.oha, "--no-tui", "--output-format", "json", "-c", str(a.conns), "-z", f"{dur}s",
           "-w", "-t", "10s", "--disable-compression"]
    if proxy:
        cmd += ["-x", f"http://{proxy}"]
    if rate:
        cmd += ["-q", str(rate), "--latency-correction"]
    if no_keepalive:
        cmd += ["--disable-keepalive"]
    if cacert:
        cmd += ["--cacert", cacert]
    if db:
        cmd += ["--db-url", db]
    return pinned(cmd + (url if isinstance(url, list) else [url]), "load")


def parse_oha(j):
    summ = j.get("summary", {})
    total_s = summ.get("total")
    status = {str(k): v for k, v in (j.get("statusCodeDistribution") or {}).items()}
    errors = dict(j.get("errorDistribution") or {})
    if "latencyPercentiles" in j:  # oha 1.4 .. 1.8: seconds
        lp = j["latencyPercentiles"]
        p50, p99 = lp.get("p50"), lp.get("p99")
        p50 = p50 * 1000 if p50 is not None else None
        p99 = p99 * 1000 if p99 is not None else None
    else:  # newer layout: metrics.latency_ms
        lm = j.get("metrics", {}).get("latency_ms", {})
        p50, p99 = lm.get("p50"), lm.get("p99")
    return total_s, status, errors, p50, p99


# Fixed-rate runs are also summarised without the requests scheduled in their first SETTLE_S
# seconds: those include setting up the connections (for a TLS system, 32 CONNECTs and handshakes
# at once), which latency correction charges to the requests queued behind them.
SETTLE_S = 1.0


def steady_latency(db):
    """p50 and p99 (ms) and the count of the requests oha scheduled after SETTLE_S, from its
    per-request sqlite output (latency from the scheduled start, as --latency-correction counts)."""
    import sqlite3
    from contextlib import closing
    with closing(sqlite3.connect(db)) as c:
        lat = sorted(end - start for start, end in c.execute(
            "SELECT COALESCE(start_latency_correction, start), end FROM oha "
            "WHERE COALESCE(start_latency_correction, start) >= ?", (SETTLE_S,)))
    if not lat:
        return None, None, 0
    return (1000 * lat[len(lat) // 2], 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], len(lat))


def measure(a, kind, system, upstream, nginx_pid, dur, rate=None, record=True, mix=None):
    url = (f"https://{system['tls_upstream']}/small" if system.get("tls_upstream")
           else f"http://{system.get('target', upstream)}/small")
    if mix:  # the varied request mix instead of one URL
        url = ["--urls-from-file", mix["file"]]
    proxy, pid = system.get("proxy"), system.get("pid")
    db = None
    if rate and record:
        fd, db = tempfile.mkstemp(prefix="oha-", suffix=".db")
        os.close(fd)
        os.unlink(db)  # oha creates it
    cmd = oha_cmd(a, url, proxy, rate, dur, system.get("no_keepalive", False), system.get("cacert"), db)
    table0 = proc_table()
    px = tree(pid, table0)
    ngx = tree(nginx_pid, table0)
    c0, n0 = cpu_ticks(px), cpu_ticks(ngx)
    rss0 = status_kb(px, "VmRSS") if pid else None
    ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cc0 = cache_counts(system.get("admin"))
    h0 = host_cpu()
    smp = RssSampler(pid) if pid else None
    if smp:
        smp.start()
    t0 = time.time()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=dur + 60)
    finally:
        peak = smp.finish() if smp else None
    wall = time.time() - t0
    h1 = host_cpu()
    ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cc1 = cache_counts(system.get("admin"))
    table1 = proc_table()
    px = tree(pid, table1)
    used_s = (cpu_ticks(px) - c0) / TICK if pid else None
    ngx_s = (cpu_ticks(ngx) - n0) / TICK
    gen_s = (ch1.ru_utime + ch1.ru_stime) - (ch0.ru_utime + ch0.ru_stime)
    # CPU of processes that are neither ours nor kernel threads (the host is shared)
    ours = set(tree(os.getpid(), table1))
    foreign = 0
    for p, (pp, t) in table1.items():
        if p in ours or p == 2 or pp == 2:
            continue
        foreign += max(0, t - table0.get(p, (0, 0))[1])
    res = dict(kind=kind, system=system["name"], rate=rate, dur=dur, cmd=cmdline(cmd), wall_s=wall)
    if db and os.path.exists(db):
        try:
            sp50, sp99, sn = steady_latency(db)
            res.update(steady_p50_ms=sp50, steady_p99_ms=sp99, steady_n=sn)
        finally:
            os.unlink(db)
    if r.returncode != 0:
        res.update(failed=True, stderr=(r.stderr or r.stdout)[-2000:])
        return res
    try:
        j = json.loads(r.stdout)
    except ValueError:
        res.update(failed=True, stderr="unparsable oha output: " + r.stdout[-500:] + r.stderr[-500:])
        return res
    total_s, status, errors, p50, p99 = parse_oha(j)
    secs = total_s or wall
    done = sum(status.values())
    ok = status.get("200", 0)
    bad = {f"HTTP {k}": v for k, v in status.items() if k != "200"}
    bad.update(errors)
    res.update(secs=secs, ok=ok, done=done, rps=ok / secs if secs else None, p50_ms=p50, p99_ms=p99,
               errors=bad, error_count=sum(bad.values()),
               gen_cpu_pct=100 * gen_s / secs, nginx_cpu_pct=100 * ngx_s / secs,
               host_busy_pct=busy_pct(h0, h1), foreign_cpu_pct=100 * foreign / TICK / secs)
    if cc0 and cc1:
        hits, misses = cc1["hit"] - cc0["hit"], cc1["miss"] - cc0["miss"]
        res.update(cache_hits=hits, cache_misses=misses,
                   cache_hit_pct=100 * hits / (hits + misses) if hits + misses else None)
    if pid:
        res.update(proxy_cpu_pct=100 * used_s / secs,
                   proxy_cpu_us_per_req=1e6 * used_s / done if done else None,
                   rss_before_kb=rss0, rss_peak_kb=peak)
    return res


def perf_profile(a, system, upstream, nginx_pid, out_prefix, run):
    """One extra max-throughput run with `perf record` attached to the proxy (not in the tables)."""
    data = os.path.join(run, f"{system['name']}.perf.data")
    rec = ["perf", "record", "-q", "-e", "cpu-clock", "-F", str(a.perf_freq), "--call-graph", "dwarf,16384",
           "-p", str(system["pid"]), "-o", data]
    p = subprocess.Popen(rec, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        r = measure(a, "perf", system, upstream, nginx_pid, a.perf_dur)
    finally:
        p.send_signal(signal.SIGINT)
        try:
            _, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
    txt = out_prefix + f"-{system['name']}.perf.txt"
    base = ["perf", "report", "-i", data, "--stdio", "--percent-limit", "0.7"]
    with open(txt, "w") as f:
        f.write(f"# {cmdline(rec)}\n# during: {r.get('cmd')}\n# {describe(r) if not r.get('failed') else 'FAILED'}\n")
        for title, extra in (("self time by symbol", ["--no-children", "--sort", "dso,symbol", "-g", "none"]),
                             ("inclusive time (children), by symbol", ["--children", "--sort", "symbol", "-g", "none"]),
                             ("self time with callers", ["--no-children", "--sort", "symbol",
                                                         "-g", "caller,0.5,callee,function,percent", "--percent-limit", "2"])):
            rr = subprocess.run(base + extra, capture_output=True, text=True, timeout=600)
            f.write(f"\n######## {title}\n" + "\n".join(
                re.sub(r"(\s+-)*\s*$", "", x)[:300]
                for x in rr.stdout.splitlines() if x.strip() and not x.startswith("#")) + "\n")
    log(f"perf profile of {system['name']}: {txt} ({err.strip()[-200:] if err else ''})")
    return txt


def describe(r):
    s = (f"{r['kind']:4s} {r['system']:12s} rps={r.get('rps') or 0:8.0f} "
         f"p50={r.get('p50_ms') or 0:6.3f}ms p99={r.get('p99_ms') or 0:6.3f}ms")
    if r.get("proxy_cpu_us_per_req") is not None:
        s += f" proxy={r['proxy_cpu_pct']:4.0f}% {r['proxy_cpu_us_per_req']:5.1f}us/req rssPeak={r['rss_peak_kb'] / 1024:.1f}MiB"
    if r.get("cache_hit_pct") is not None:
        s += f" cacheHit={r['cache_hit_pct']:.0f}%"
    s += (f" gen={r.get('gen_cpu_pct', 0):4.0f}% nginx={r.get('nginx_cpu_pct', 0):3.0f}%"
          f" foreign={r.get('foreign_cpu_pct', 0):3.0f}% err={r.get('error_count', 'FAILED')}")
    return s
