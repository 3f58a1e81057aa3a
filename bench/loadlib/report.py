"""The markdown report of a run (from its raw JSON) and the host and version facts it shows."""
import os
import re
import statistics
import subprocess

from .common import BODY
from .runs import SETTLE_S


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec="{:.0f}"):
    return "–" if x is None else spec.format(x)


def machine_facts():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
            model = m.group(1).strip() if m else "?"
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return dict(nproc=os.cpu_count(), cpu=model, mem=mem, kernel=os.uname().release)


def version_of(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def git_rev(binary):
    """The commit of the checkout the binary was built in (its target/ is inside the checkout)."""
    where = os.path.dirname(os.path.realpath(binary))
    try:
        return subprocess.run(["git", "-C", where, "describe", "--always", "--dirty"], capture_output=True,
                              text=True, timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def by_kind(by, kind):
    return any(k == kind for k, _ in by)


def policy_cost_section(raw, by, m, errs, ratio):
    """Each intentgate variant's CPU per request against `intentgate` (policy off) in the same run,
    for the single repeated URL (max) and the request mix, with the decision cache hit rate."""
    a, mix = raw["args"], raw.get("mix") or {}
    L = [f"## Policy cost: CPU per request against policy off, {a['conns']} connections (same run)\n"]
    if mix:
        L.append(f"`mix`: oha `--urls-from-file` with {mix['lines']} URLs drawn with Zipf weights (1/rank) from "
                 f"{mix['distinct']} distinct paths and query strings under `/mix/` ({mix['unique_in_file']} "
                 "distinct in the file), every one allowed by the `bench` intent. `max`: one repeated URL "
                 "(`/small`). Cache hit % is from `intentgate_decision_cache_total` on the admin listener, "
                 "delta over the run (– when the cache is off).\n")
    L.append("| system | kind | req/s | proxy CPU µs/req (per rep) | ×policy off, medians | ×policy off, median of "
             "per-rep ratios | cache hit % | errors |")
    L.append("|---|---|---|---|---|---|---|---|")

    def per_rep_ratio(kind, s):
        off = {r.get("rep"): r.get("proxy_cpu_us_per_req") for r in by.get((kind, "intentgate"), [])}
        xs = [r["proxy_cpu_us_per_req"] / off[r.get("rep")] for r in by.get((kind, s), [])
              if r.get("proxy_cpu_us_per_req") and off.get(r.get("rep"))]
        return med(xs) if xs else None
    for s in [x["name"] for x in raw["systems"] if x.get("intentgate") and not x.get("tls")]:
        for kind in ("max", "mix"):
            if not by.get((kind, s)):
                continue
            cpu = m(kind, s, "proxy_cpu_us_per_req")
            hit = m(kind, s, "cache_hit_pct")
            per = ", ".join(f"{r['proxy_cpu_us_per_req']:.1f}" for r in by[(kind, s)]
                            if r.get("proxy_cpu_us_per_req") is not None)
            L.append("| " + " | ".join([
                s, kind, fmt(m(kind, s, "rps")), fmt(cpu, "{:.1f}") + (f" ({per})" if "," in per else ""),
                "1.00" if s == "intentgate" else ratio(cpu, m(kind, "intentgate", "proxy_cpu_us_per_req")),
                "1.00" if s == "intentgate" else fmt(per_rep_ratio(kind, s), "{:.2f}"),
                fmt(hit, "{:.1f}"), ", ".join(f"{k}: {v}" for k, v in errs(kind, s).items()) or "0"]) + " |")
    L.append("")
    return L


def report(raw):
    a = raw["args"]
    runs = [r for r in raw["runs"] if not r.get("failed")]
    failed = [r for r in raw["runs"] if r.get("failed")]
    names = [s["name"] for s in raw["systems"]]
    igs = [s["name"] for s in raw["systems"] if s.get("intentgate")]
    peers = [s["name"] for s in raw["systems"] if s.get("peer")]
    # what each system's latency and throughput are compared with
    base_of = {x["name"]: x.get("base") or ("direct-tls" if x.get("tls") else "direct") for x in raw["systems"]}
    by = {}
    for r in runs:
        by.setdefault((r["kind"], r["system"]), []).append(r)

    def m(kind, sysname, key):
        return med([r.get(key) for r in by.get((kind, sysname), [])])

    def errs(kind, sysname):
        tot = {}
        for r in by.get((kind, sysname), []):
            for k, v in (r.get("errors") or {}).items():
                tot[k[:60]] = tot.get(k[:60], 0) + v
        n_failed = sum(1 for r in failed if r["kind"] == kind and r["system"] == sysname)
        if n_failed:
            tot["generator run failed"] = n_failed
        return tot

    def added_us(sysname, prefix=""):
        """(p50, p99) in µs over the system's baseline at the fixed rate, or None."""
        v = [m("rate", x, f"{prefix}p{q}_ms") for x in (sysname, base_of[sysname]) for q in (50, 99)]
        return None if None in v else ((v[0] - v[2]) * 1000, (v[1] - v[3]) * 1000)

    def ratio_of(x, y):
        return x / y if (x is not None and y) else None

    def ratio(x, y, spec="{:.2f}"):
        return fmt(ratio_of(x, y), spec)

    h = raw["host"]
    L = [f"# intentgate load benchmark {raw['stamp']}", ""]
    L.append(f"- host: {h['nproc']} cores, {h['cpu']}, {h['mem']} RAM, Linux {h['kernel']}; load generator, "
             f"upstream and proxies all on this host, loopback only")
    L.append(f"- intentgate `{raw['git']}` (`{raw['binary']}`), {raw['versions']['oha']}, {raw['versions']['nginx']}")
    if raw.get("link_order"):
        L.append(f"- function layout (idle RSS): {raw['link_order']}")
    L.append(f"- {a['reps']} interleaved repetitions, medians shown (range in brackets); max: {a['conns']} connections "
             f"for {a['dur']} s; rate: {a['rate']} req/s for {a['rate_dur']} s with latency correction, "
             f"{a['conns']} connections; upstream: nginx `return 200` with a {len(BODY)} B JSON body")
    if a.get("pin"):
        L.append("- pinned (`--pin`): each proxy on the last CPU, nginx and oha on the other(s), so `direct` "
                 "uses fewer cores than the proxied runs; ×direct is the proxy's capacity on its own core "
                 "against the generator and upstream on theirs")
    if any(s.get("tls") for s in raw["systems"]):
        L.append("- HTTPS (`--https`): `*-tls` systems fetch https://127.0.0.1:PORT/small from nginx's TLS listener "
                 "(P-256 leaf from a bench CA); their ×direct / added latency are against `direct-tls`")
    if any(s.get("target") for s in raw["systems"]):
        L.append("- `haproxy` / `haproxy-tls` are a reference, not forward proxies: oha sends its requests straight "
                 "to haproxy's listener (no CONNECT), one thread, kept upstream connections, no policy; "
                 "`haproxy-tls` terminates TLS with nginx's bench leaf and re-originates TLS to nginx's TLS "
                 "listener (the crypto work of interception, without CONNECT, leaf minting or policy)")
    if any(s["name"].startswith("hyper-floor") for s in raw["systems"]):
        L.append("- `hyper-floor` is a reference too (bench/floor): a bare hyper/tokio forward proxy with intentgate's "
                 "stack, versions and server setup (one thread, hyper's header-read timer, a kept upstream "
                 "connection per client connection) and none of its work: the least this stack costs; "
                 "`hyper-floor-tls` intercepts the CONNECT tunnels (one leaf from intentgate's CA, made at start) "
                 "and re-originates TLS to nginx, verified; `hyper-floor-pgo(-tls)` is the same built with its own "
                 "profile (bench/floor_pgo.sh), as intentgate's release build is with its own")
    L.append("- CPU % is of ONE core. proxy CPU µs/req = (utime+stime of the proxy's process tree over the run)"
             " / completed requests. foreign = CPU used meanwhile by other processes on this shared host.")
    L.append("")

    rate_kinds = [k for k in ("max", "rate") if any(kk == k for kk, _ in by)]
    if "max" in rate_kinds:
        L.append(f"## Maximum throughput, {a['conns']} connections\n")
        L.append("| system | n | req/s | ×direct | p50 ms | p99 ms | proxy CPU % | proxy CPU µs/req | proxy RSS peak MiB "
                 "| gen CPU % | nginx CPU % | foreign CPU % | errors |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for s in names:
            d_rps = m("max", base_of[s], "rps")
            rs = by.get(("max", s), [])
            if not rs and not errs("max", s):
                continue
            rps = [r["rps"] for r in rs if r.get("rps") is not None]
            rng = f" [{min(rps):.0f}–{max(rps):.0f}]" if len(rps) > 1 else ""
            pk = m("max", s, "rss_peak_kb")
            e = errs("max", s)
            L.append("| " + " | ".join([
                s, str(len(rs)), fmt(m("max", s, "rps")) + rng, ratio(m("max", s, "rps"), d_rps),
                fmt(m("max", s, "p50_ms"), "{:.2f}"), fmt(m("max", s, "p99_ms"), "{:.2f}"),
                fmt(m("max", s, "proxy_cpu_pct")), fmt(m("max", s, "proxy_cpu_us_per_req"), "{:.1f}"),
                fmt(pk / 1024 if pk else None, "{:.1f}"),
                fmt(m("max", s, "gen_cpu_pct")), fmt(m("max", s, "nginx_cpu_pct")),
                fmt(m("max", s, "foreign_cpu_pct")),
                ", ".join(f"{k}: {v}" for k, v in e.items()) or "0"]) + " |")
        L.append("")
    if "rate" in rate_kinds:
        L.append(f"## Latency at a fixed {a['rate']} req/s\n")
        L.append("| system | n | req/s done | p50 ms | p99 ms | added p50 µs | added p99 µs | p50 ×direct "
                 "| p99 ×direct | proxy CPU % | proxy CPU µs/req | errors |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for s in names:
            base = base_of[s]
            d50, d99 = m("rate", base, "p50_ms"), m("rate", base, "p99_ms")
            rs = by.get(("rate", s), [])
            if not rs and not errs("rate", s):
                continue
            p50, p99 = m("rate", s, "p50_ms"), m("rate", s, "p99_ms")
            e = errs("rate", s)
            L.append("| " + " | ".join([
                s, str(len(rs)), fmt(m("rate", s, "rps")), fmt(p50, "{:.3f}"), fmt(p99, "{:.3f}"),
                "–" if s == base else fmt((p50 - d50) * 1000 if None not in (p50, d50) else None),
                "–" if s == base else fmt((p99 - d99) * 1000 if None not in (p99, d99) else None),
                ratio(p50, d50, "{:.1f}×"), ratio(p99, d99, "{:.1f}×"),
                fmt(m("rate", s, "proxy_cpu_pct")), fmt(m("rate", s, "proxy_cpu_us_per_req"), "{:.1f}"),
                ", ".join(f"{k}: {v}" for k, v in e.items()) or "0"]) + " |")
        L.append("")

    if any(r.get("steady_p99_ms") is not None for r in runs if r["kind"] == "rate"):
        L.append(f"## Latency at a fixed {a['rate']} req/s, after the first {SETTLE_S:g} s (same runs)\n")
        L.append(f"The requests oha scheduled in a run's first {SETTLE_S:g} s are left out (from its per-request "
                 "`--db-url` output): they include setting up the connections, which for a TLS system means 32 "
                 "handshakes at once (and CONNECTs through a proxy), charged by latency correction to the requests "
                 "queued behind them. Keep-alive traffic is what remains.\n")
        L.append("| system | n | requests | p50 ms | p99 ms | added p50 µs | added p99 µs |")
        L.append("|---|---|---|---|---|---|---|")
        for s in names:
            if not by.get(("rate", s)):
                continue
            added = (None, None) if s == base_of[s] else (added_us(s, "steady_") or (None, None))
            L.append("| " + " | ".join([
                s, str(len(by[("rate", s)])), fmt(m("rate", s, "steady_n")),
                fmt(m("rate", s, "steady_p50_ms"), "{:.3f}"), fmt(m("rate", s, "steady_p99_ms"), "{:.3f}")]
                + ["–" if s == base_of[s] else fmt(x) for x in added]) + " |")
        L.append("")

    if by_kind(by, "mix") or any(r.get("cache_hit_pct") is not None for r in runs):
        L.extend(policy_cost_section(raw, by, m, errs, ratio))

    L.append("## Proxy memory (VmRSS of the proxy process tree, MiB)\n")
    L.append("| system | idle, before any load | idle after warm-up | peak in any run | VmHWM at end |")
    L.append("|---|---|---|---|---|")
    for s in raw["systems"]:
        if not s.get("pid"):
            continue
        mem = raw["memory"].get(s["name"], {})
        peaks = [r.get("rss_peak_kb") for r in runs if r["system"] == s["name"] and r.get("rss_peak_kb")]
        L.append("| " + " | ".join([
            s["name"], fmt((mem.get("idle_kb") or 0) / 1024 or None, "{:.1f}"),
            fmt((mem.get("warm_idle_kb") or 0) / 1024 or None, "{:.1f}"),
            fmt(max(peaks) / 1024 if peaks else None, "{:.1f}"),
            fmt((mem.get("hwm_kb") or 0) / 1024 or None, "{:.1f}")]) + " |")
    L.append("")

    tls_names = [s["name"] for s in raw["systems"] if s.get("tls")]
    if tls_names and "max" in rate_kinds:
        L.append(f"## HTTPS interception, {a['conns']} keep-alive connections (same run)\n")
        L.append("`direct-tls`: oha straight to nginx's TLS listener. `intentgate-tls`: oha sends CONNECT, intentgate "
                 "intercepts (`tls.intercept: all`), terminates TLS with a leaf minted by its CA (trusted by oha via "
                 "`--cacert`), decides each inner request and re-originates TLS to nginx, verified against "
                 "`tls.upstream_ca`. Connections are kept alive: handshakes happen once per connection.\n")
        if any(x.get("base") == "direct-tls-new" for x in raw["systems"]):
            L.append("`*-tls-new` (`--https-new`): a new connection for every request (oha --disable-keepalive). "
                     "`direct-tls-new` does a TLS handshake with nginx per request; `intentgate-tls-new` a CONNECT, "
                     "a TLS handshake with oha (leaf from intentgate's cache) and the upstream connection (a kept "
                     "one when idle, else a new handshake with nginx). ×direct-tls is against `direct-tls-new`.\n")
        L.append("| system | n | req/s | ×direct-tls | ×plain same system | proxy CPU µs/req | CPU ×plain intentgate "
                 "| proxy RSS peak MiB | errors |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        dt = m("max", "direct-tls", "rps")
        for s in tls_names:
            plain = {"direct-tls": "direct", "direct-tls-new": "direct", "mitmproxy-tls": "mitmproxy",
                     "haproxy-tls": "haproxy", "hyper-floor-tls": "hyper-floor", "hyper-floor-pgo-tls": "hyper-floor-pgo"}.get(s, "intentgate")
            e = errs("max", s)
            pk = m("max", s, "rss_peak_kb")
            L.append("| " + " | ".join([
                s, str(len(by.get(("max", s), []))), fmt(m("max", s, "rps")),
                ratio(m("max", s, "rps"), m("max", base_of[s], "rps")),
                ratio(m("max", s, "rps"), m("max", plain, "rps")),
                fmt(m("max", s, "proxy_cpu_us_per_req"), "{:.1f}"),
                ratio(m("max", s, "proxy_cpu_us_per_req"), m("max", "intentgate", "proxy_cpu_us_per_req")),
                fmt(pk / 1024 if pk else None, "{:.1f}"),
                ", ".join(f"{k}: {v}" for k, v in e.items()) or "0"]) + " |")
        L.append("")
        g = "intentgate-tls"
        if by.get(("max", g)):
            cr = m("max", g, "proxy_cpu_us_per_req"), m("max", "intentgate", "proxy_cpu_us_per_req")
            tr = m("max", g, "rps"), dt
            L.append("| target | measured | verdict |")
            L.append("|---|---|---|")
            if None not in cr and cr[1]:
                L.append(f"| issue 4: intercepted-TLS proxy CPU per request ≤ 2× plain HTTP (warm cache) | "
                         f"{cr[0]:.1f} / {cr[1]:.1f} µs = {cr[0] / cr[1]:.2f}× | {'met' if cr[0] <= 2 * cr[1] else 'MISSED'} |")
            if None not in tr and tr[1]:
                L.append(f"| issue 8: intercepted keep-alive ≥ 60% of direct-TLS throughput | "
                         f"{tr[0]:.0f} / {tr[1]:.0f} req/s = {100 * tr[0] / tr[1]:.0f}% | "
                         f"{'met' if tr[0] >= 0.6 * tr[1] else 'MISSED'} |")
            hr = m("max", "haproxy-tls", "rps")
            if hr is not None and tr[1]:
                L.append(f"| reference: haproxy-tls (TLS terminated and re-originated, no CONNECT, no policy) | "
                         f"{hr:.0f} / {tr[1]:.0f} req/s = {100 * hr / tr[1]:.0f}% | – |")
            L.append("")

    if igs and peers and "max" in rate_kinds:
        L.append("## intentgate against each peer (same run, medians)\n")
        L.append("| intentgate variant | peer | throughput ×peer | CPU µs/req ×peer | peak RSS ×peer |")
        L.append("|---|---|---|---|---|")
        tls_systems = {x["name"] for x in raw["systems"] if x.get("tls")}
        for g in igs:
            for p in peers:
                if (g in tls_systems) != (p in tls_systems):
                    continue  # plain HTTP against plain HTTP, interception against interception
                L.append(f"| {g} | {p} | {ratio(m('max', g, 'rps'), m('max', p, 'rps'))} | "
                         f"{ratio(m('max', g, 'proxy_cpu_us_per_req'), m('max', p, 'proxy_cpu_us_per_req'))} | "
                         f"{ratio(m('max', g, 'rss_peak_kb'), m('max', p, 'rss_peak_kb'))} |")
        L.append("")

    if igs:
        L.append("## Targets\n")
        L.append("| target | variant | measured | verdict |")
        L.append("|---|---|---|---|")
        for g in igs:
            idle = raw["memory"].get(g, {}).get("idle_kb")
            cpu = m("max", g, "proxy_cpu_us_per_req")
            e = sum(errs("max", g).values())
            if g == "intentgate":  # issue 1 judges the plain proxy
                L.append(f"| issue 1: idle RSS ≤ 10 MiB | {g} | {fmt(idle / 1024 if idle else None, '{:.1f}')} MiB | "
                         f"{'met' if idle and idle <= 10 * 1024 else 'MISSED'} |")
                L.append(f"| issue 1: proxy CPU ≤ 25 µs per small request ({a['conns']} connections) | {g} | "
                         f"{fmt(cpu, '{:.1f}')} µs | {'met' if cpu is not None and cpu <= 25 else 'MISSED'} |")
                L.append(f"| issue 1: no request errors at {a['conns']} connections | {g} | {e} errors | "
                         f"{'met' if e == 0 and by.get(('max', g)) else 'MISSED'} |")
            else:
                # The ≤ 10 MiB idle target is the plain proxy's; a variant's (a catalog, a CA) is shown as is.
                L.append(f"| idle RSS (the ≤ 10 MiB target is the plain proxy's) | {g} | "
                         f"{fmt(idle / 1024 if idle else None, '{:.1f}')} MiB | for reference |")
                L.append(f"| request errors at {a['conns']} connections | {g} | {e} errors | "
                         f"{'none' if e == 0 and by.get(('max', g)) else 'SOME'} |")
                if base_of[g] == "direct":
                    L.append(f"| issue 8: proxy CPU ≤ 35 µs per request (the target with a policy; {a['conns']} connections) | {g} | "
                             f"{fmt(cpu, '{:.1f}')} µs | {'met' if cpu is not None and cpu <= 35 else 'MISSED'} |")
            if base_of[g] == "direct":
                for peer, times in (("squid", 2), ("tinyproxy", 3)):
                    x = ratio_of(m("max", g, "rps"), m("max", peer, "rps"))
                    if x is not None:
                        L.append(f"| issue 8: throughput ≥ {times}× {peer}'s ({a['conns']} connections) | {g} | "
                                 f"{x:.2f}× | {'met' if x >= times else 'MISSED'} |")
            if "rate" in rate_kinds:
                added = added_us(g)
                if added:
                    add50, add99 = added
                    L.append(f"| issue 8: added p50 ≤ 150 µs at {a['rate']} req/s | {g} | {add50:.0f} µs | "
                             f"{'met' if add50 <= 150 else 'MISSED'} |")
                    L.append(f"| issue 8: added p99 ≤ 500 µs at {a['rate']} req/s | {g} | {add99:.0f} µs | "
                             f"{'met' if add99 <= 500 else 'MISSED'} |")
                added = added_us(g, "steady_")
                if added:
                    add50, add99 = added
                    L.append(f"| issue 8: added p50 / p99 ≤ 150 / 500 µs, after the first {SETTLE_S:g} s | {g} | "
                             f"{add50:.0f} / {add99:.0f} µs | {'met' if add50 <= 150 and add99 <= 500 else 'MISSED'} |")
            pk = max([r.get("rss_peak_kb") or 0 for r in runs if r["system"] == g] or [0])
            L.append(f"| issue 8: peak RSS ≤ 30 MiB at {a['conns']} connections | {g} | "
                     f"{fmt(pk / 1024 if pk else None, '{:.1f}')} MiB | {'met' if pk and pk <= 30 * 1024 else 'MISSED'} |")
        L.append("")

    L.append("## Exact commands\n")
    L.append("```")
    for s in raw["systems"]:
        if s.get("cmd"):
            L.append(f"# {s['name']}: " + (s.get("env", "") + " " if s.get("env") else "") + s["cmd"])
    seen = set()
    for r in raw["runs"]:
        key = (r["kind"], r["system"])
        if key not in seen:
            seen.add(key)
            L.append(f"# {r['kind']} / {r['system']}\n{r['cmd']}")
    L.append("```")
    for s in raw["systems"]:
        if s.get("config_text"):
            lines = s["config_text"].rstrip().splitlines()
            more = f"\n# ... {len(lines) - 41} more lines" if len(lines) > 41 else ""
            L.append(f"\nconfig of `{s['name']}`:\n\n```yaml\n" + "\n".join(lines[:41]) + more + "\n```")
    notes = []
    if raw.get("retried"):
        notes.append(f"{raw['retried']} run(s) were discarded and repeated because other processes on the host "
                     f"used more than {a['max_foreign']}% of a core meanwhile.")
    if failed:
        notes.append(f"{len(failed)} generator run(s) failed: " + "; ".join(
            f"{r['kind']}/{r['system']}: {r.get('stderr', '')[:200]!r}" for r in failed[:5]))
    for s in raw["systems"]:
        if s.get("check") and not s["check"][0]:
            notes.append(f"functional check of {s['name']} FAILED before load: {s['check'][1]}")
        if s.get("log_lines"):
            notes.append(f"{s['name']} wrote {s['log_lines']} log line(s) (at INTENTGATE_LOG={a['log_level']}); "
                         f"first: {s['log_first']!r}")
    for name, path in (raw.get("perf") or {}).items():
        notes.append(f"perf profile of {name} (one extra max run, not in the tables): {os.path.basename(path)}")
    if notes:
        L.append("\n## Notes\n")
        L.extend("- " + n for n in notes)
    return "\n".join(L) + "\n"
