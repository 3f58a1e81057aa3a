#!/usr/bin/env python3
"""End-to-end load benchmark for intentgate (normally started through bench/load.sh).

In one run it starts a fast local upstream (nginx, `return 200` with a ~100 B JSON body), one
intentgate per variant (and optionally peer proxies from apt), then drives load with oha:

  max   - maximum throughput at --conns connections for --dur seconds
  rate  - latency at a fixed --rate req/s (oha -q RATE --latency-correction)
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
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from loadlib.common import BODY, HERE, ROOT, log
from loadlib.procs import STARTED, on_signal, status_kb, tree, wait_quiet
from loadlib.systems import (PEERS, PEER_BIN, http_check, https_check, make_tls_material, start_intentgate,
                             start_nginx, start_peer)
from loadlib.runs import describe, measure, perf_profile, write_mix


# ------------------------------------------------------------------ helpers
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec="{:.0f}"):
    return "–" if x is None else spec.format(x)


# ------------------------------------------------------------------ report
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

    def ratio(x, y, spec="{:.2f}"):
        return fmt(x / y if (x is not None and y) else None, spec)

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
    if any(s.get("tls") for s in raw["systems"]):
        L.append("- HTTPS (`--https`): `*-tls` systems fetch https://127.0.0.1:PORT/small from nginx's TLS listener "
                 "(P-256 leaf from a bench CA); their ×direct / added latency are against `direct-tls`")
    L.append("- CPU % is of ONE core. proxy CPU µs/req = (utime+stime of the proxy's process tree over the run)"
             " / completed requests. foreign = CPU used meanwhile by other processes on this shared host.")
    L.append("")

    rate_kinds = [k for k in ("max", "rate") if any(kk == k for kk, _ in by)]
    if "max" in rate_kinds:
        L.append(f"## Maximum throughput, {a['conns']} connections\n")
        L.append("| system | n | req/s | ×direct | p50 ms | p99 ms | proxy CPU % | proxy CPU µs/req | proxy RSS peak MiB "
                 "| gen CPU % | nginx CPU % | foreign CPU % | errors |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        tls_set = {x["name"] for x in raw["systems"] if x.get("tls")}
        for s in names:
            d_rps = m("max", "direct-tls" if s in tls_set else "direct", "rps")
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
        tls_set = {x["name"] for x in raw["systems"] if x.get("tls")}
        for s in names:
            base = "direct-tls" if s in tls_set else "direct"
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
        L.append("| system | n | req/s | ×direct-tls | ×plain same system | proxy CPU µs/req | CPU ×plain intentgate "
                 "| proxy RSS peak MiB | errors |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        dt = m("max", "direct-tls", "rps")
        for s in tls_names:
            plain = {"direct-tls": "direct", "mitmproxy-tls": "mitmproxy"}.get(s, "intentgate")
            e = errs("max", s)
            pk = m("max", s, "rss_peak_kb")
            L.append("| " + " | ".join([
                s, str(len(by.get(("max", s), []))), fmt(m("max", s, "rps")), ratio(m("max", s, "rps"), dt),
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
                L.append(f"| issue 8: idle RSS ≤ 10 MiB | {g} | {fmt(idle / 1024 if idle else None, '{:.1f}')} MiB | "
                         f"{'met' if idle and idle <= 10 * 1024 else 'MISSED'} |")
                L.append(f"| request errors at {a['conns']} connections | {g} | {e} errors | "
                         f"{'none' if e == 0 and by.get(('max', g)) else 'SOME'} |")
            if "rate" in rate_kinds:
                base = "direct-tls" if g in tls_names else "direct"
                d50, d99 = m("rate", base, "p50_ms"), m("rate", base, "p99_ms")
                p50, p99 = m("rate", g, "p50_ms"), m("rate", g, "p99_ms")
                if None not in (d50, d99, p50, p99):
                    add50, add99 = (p50 - d50) * 1000, (p99 - d99) * 1000
                    L.append(f"| issue 8: added p50 ≤ 150 µs at {a['rate']} req/s | {g} | {add50:.0f} µs | "
                             f"{'met' if add50 <= 150 else 'MISSED'} |")
                    L.append(f"| issue 8: added p99 ≤ 500 µs at {a['rate']} req/s | {g} | {add99:.0f} µs | "
                             f"{'met' if add99 <= 500 else 'MISSED'} |")
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


# ------------------------------------------------------------------ main
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
                                                "mitmproxy (PyPI; with --https also mitmproxy-tls, intercepting)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=FILE",
                    help="an extra intentgate run: base config + FILE's top-level YAML sections (repeatable)")
    ap.add_argument("--variant-bin", action="append", default=[], metavar="NAME=BIN",
                    help="an extra intentgate run with the base config (policy off) but another binary, "
                         "for a same-run A/B of two builds (repeatable)")
    ap.add_argument("--no-default-variant", action="store_true",
                    help="do not run the plain `intentgate` variant (only --variant ones)")
    ap.add_argument("--no-direct", action="store_true", help="skip the direct (no proxy) baseline")
    ap.add_argument("--https", action="store_true",
                    help="also measure HTTPS: `direct-tls` (oha straight to nginx's TLS listener) and "
                         "`intentgate-tls` (CONNECT tunnels intercepted: tls.intercept all, leaf minted by a CA "
                         "from `intentgate ca init`, upstream re-originated and verified against tls.upstream_ca)")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of unrecorded load per system first (default 2)")
    ap.add_argument("--log-level", default="warn", help="INTENTGATE_LOG for the proxy (default warn)")
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

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    kinds = [k for k in a.kinds.split(",") if k]
    if not a.rate:
        kinds = [k for k in kinds if k != "rate"]
    peers = [p for p in a.peers.split(",") if p]
    for p in peers:
        if p not in PEERS:
            ap.error(f"unknown peer {p!r} (known: {', '.join(PEERS)})")
        if not shutil.which(PEER_BIN.get(p, p)):
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
            variants = variants + [("intentgate-tls", (
                f"tls:\n  ca_cert: \"{tls['ig_ca']}\"\n  ca_key: \"{tls['ig_ca_key']}\"\n"
                f"  upstream_ca: \"{tls['upstream_ca']}\"\n  intercept: all\n"
                # intercepted CONNECTs go only to ports an intent or egress.connect_ports names
                f"egress:\n  allow_cidrs: [\"127.0.0.0/8\"]\n"
                f"  connect_ports: [{str(tls_upstream).rsplit(':', 1)[1]}]\n"))]
        for name, extra in variants:
            s = start_intentgate(name, bins.get(name, a.bin), extra, run, a.log_level, upstream)
            with open(s["config"]) as f:
                lines = f.read().splitlines()
            more = [f"# ... {len(lines) - 40} more lines"] if len(lines) > 40 else []
            s.update(intentgate=True, config_text="\n".join(lines[:40] + more) + "\n")
            if name == "intentgate-tls":
                # the client (oha) trusts intentgate's CA; intentgate verifies nginx against upstream_ca
                s.update(tls=True, tls_upstream=tls_upstream, cacert=tls["ig_ca"])
            systems.append(s)
        for p in peers:
            s = start_peer(p, run)
            s["peer"] = True
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
                          else http_check(s.get("proxy"), upstream, "/small"))
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
