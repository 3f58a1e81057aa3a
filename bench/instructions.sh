#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: deterministic, so it shows
# small changes that the CPU-time benchmark (bench/load.sh) cannot see on a busy host. Kernel
# time (the socket syscalls, about half of the real cost) is not included.
#
#   bench/instructions.sh [-n REQUESTS] [--https | --splice] [--audit] [--dns-miss] BIN [BIN...]
#
# Each BIN (an `intentgate` binary) serves the "policy off" bench config under valgrind; after 200
# warm-up requests the counters are zeroed, oha sends REQUESTS (default 2000) keep-alive GETs over
# 4 connections to a local nginx, and the instructions are divided by REQUESTS. Needs valgrind,
# nginx and oha (bench/load.sh installs the last two). Everything runs on 127.0.0.1.
# KEEP_CALLGRIND=PREFIX keeps each profile as PREFIX.<basename of BIN> (for callgrind_annotate).
# VALGRIND_EXTRA (optional) adds callgrind options, e.g. "--dump-instr=yes" for call sites.
# The proxy logs at INTENTGATE_LOG (default info, as a deployment does).
# EXTRA_YAML (optional) is appended to the proxy's config, e.g. a feature to measure on and off:
#   EXTRA_YAML='telemetry: {otlp: {endpoint: "http://127.0.0.1:4318"}}' bench/instructions.sh BIN
# POLICY_YAML (optional) replaces the `policy:` line (policy off: allow-all.rego, no builtin).
# POLICY_FILE (optional) does the same with a file's text, for one too large for the environment:
#   python3 bench/catalog.py 1000 | sed 's/@UPSTREAM_PORT@/@UP@/' >/tmp/t1.yaml
#   POLICY_FILE=/tmp/t1.yaml bench/instructions.sh --audit BIN   # issue 26's target 1 config
# SETTLE=SECONDS (optional) waits that long after the last request before counting stops, so work
# done later counts too (with OTLP export on, SETTLE=2: a batch gathers for 1 s before its post),
# and as long after the warm-up before counting starts, so the warm-up's work done later does not.
# In both, @UP@ stands for the nginx upstream's port (for intents that name it).
# METHOD, BODY_FILE, CT, URL_PATH (optional; with --https URL_PATH too): the requests' method, body (a
# file), Content-Type and path instead of GETs of /small (see bench/attest_cpu.sh, FILES_DIR).
# HEADER (optional): a request header every request carries ("name: value").
# --https: intercepted HTTPS instead (as bench/load.py's `intentgate-tls`): nginx also listens with
# TLS (P-256 leaf from a throwaway openssl CA, trusted through tls.upstream_ca), the interception CA
# comes from the first BIN's `ca init`, oha sends CONNECT and keeps its 4 tunnels alive.
# --splice: CONNECT tunnels spliced instead (`tls.intercept: none`): oha's TLS goes through to
# nginx, whose throwaway CA it trusts (4 kept tunnels carry the requests: the relay's cost).
# NEW_CONNS=1 (optional): a new client connection for every request (oha --disable-keepalive), so
# a connection's set-up counts too; with --https or --splice that is a tunnel per request (its
# CONNECT, decision and TLS handshake, or the splice's set-up with the handshake passing through).
# --audit: audit records written to a file (as a deployment keeps them) instead of `audit: off`;
# the writer thread's instructions are counted too.
# --dns-miss: the DNS-miss mix instead (bench/dns_mix.py drives it, Python over 4 keep-alive
# connections): names under bench.test, resolved through `dns.servers` by the test DNS server
# (tests/clients/dns_server.py, TTL 300 s, cache 10 min); 1 request in MISS_EVERY (default 10)
# names a host never seen before (a lookup and a new upstream connection), the rest three warm hosts.
set -euo pipefail

n=2000
https=
splice=
audit=off
dns_miss=
while [[ $# -gt 0 ]]; do
    case "$1" in
        -n) n=$2; shift 2 ;;
        --https) https=1; shift ;;
        --splice) https=1 splice=1; shift ;;
        --audit) audit=1; shift ;;
        --dns-miss) dns_miss=1; shift ;;
        *) break ;;
    esac
done
if [[ $# -eq 0 || "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
need=(valgrind callgrind_control nginx curl openssl)
[[ -n "$dns_miss" ]] || need+=(oha)
for tool in "${need[@]}"; do
    command -v "$tool" >/dev/null || { echo "instructions.sh: $tool is missing" >&2; exit 2; }
done

here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
source "$here/upstream.sh"
up=$(free_port)
tls_up=$(free_port)
if [[ -n "$https" ]]; then
    t=$tmp/tls
    upstream_tls "$t" "$1" || exit 1
    start_nginx "$tmp" "$up" "$tls_up" "$t"
else
    start_nginx "$tmp" "$up"
fi
dns_pid=
if [[ -n "$dns_miss" ]]; then
    python3 "$here/../tests/clients/dns_server.py" "$tmp/dns.port" \
        '{"*.bench.test": [{"ips": ["127.0.0.1"], "ttl": 300}]}' &
    dns_pid=$!
    for _ in $(seq 100); do [[ -s "$tmp/dns.port" ]] && break; sleep 0.1; done
fi
trap 'kill $nginx_pid $dns_pid 2>/dev/null || true; pkill -f "$tmp/proxy.yaml" 2>/dev/null || true; rm -rf "$tmp"' EXIT

if [[ -n "${POLICY_FILE:-}" ]]; then POLICY_YAML=$(sed "s/@UP@/$up/g" "$POLICY_FILE"); fi
policy_yaml=${POLICY_YAML:-"policy: {builtin: false, paths: [\"$here/variants/allow-all.rego\"]}"}
for bin in "$@"; do
    port=$(free_port)
    cat >"$tmp/proxy.yaml" <<EOF
listen: {proxy: "127.0.0.1:$port", admin: null}
audit: {path: "$([[ $audit == off ]] && echo off || echo "$tmp/audit.log")"}
agent: {id: bench-agent, owner: bench}
egress: {allow_cidrs: ["127.0.0.0/8"]}
${policy_yaml//@UP@/$up}
EOF
    if [[ -n "$dns_miss" ]]; then
        echo "dns: {servers: [\"127.0.0.1:$(cat "$tmp/dns.port")\"], cache_ttl_ms: 600000}" >>"$tmp/proxy.yaml"
    fi
    if [[ -n "${EXTRA_YAML:-}" ]]; then echo "${EXTRA_YAML//@UP@/$up}" >>"$tmp/proxy.yaml"; fi
    url=http://127.0.0.1:$up${URL_PATH:-/small}
    trust=()
    req=(-m "${METHOD:-GET}") creq=(-X "${METHOD:-GET}")
    if [[ -n "${BODY_FILE:-}" ]]; then req+=(-D "$BODY_FILE") creq+=(--data-binary "@$BODY_FILE"); fi
    if [[ -n "${CT:-}" ]]; then req+=(-T "$CT") creq+=(-H "content-type: $CT"); fi
    if [[ -n "${HEADER:-}" ]]; then req+=(-H "$HEADER") creq+=(-H "$HEADER"); fi
    if [[ -n "${NEW_CONNS:-}" ]]; then req+=(--disable-keepalive); fi
    if [[ -n "$https" ]]; then
        cat >>"$tmp/proxy.yaml" <<EOF
tls: {ca_cert: "$t/ig/ca.pem", ca_key: "$t/ig/ca-key.pem", upstream_ca: "$t/up-ca.pem", intercept: $([[ -n $splice ]] && echo none || echo all)}
EOF
        sed -i "s|^egress: .*|egress: {allow_cidrs: [\"127.0.0.0/8\"], connect_ports: [$tls_up]}|" "$tmp/proxy.yaml"
        url=https://127.0.0.1:$tls_up${URL_PATH:-/small}
        trust=(--cacert "$t/ig/ca.pem")
        if [[ -n "$splice" ]]; then trust=(--cacert "$t/up-ca.pem"); fi
    fi
    start_vg() {
        INTENTGATE_LOG="${INTENTGATE_LOG:-info}" valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$tmp/cg.%p" \
            ${VALGRIND_EXTRA:-} "$bin" serve --config "$tmp/proxy.yaml" 2>"$tmp/valgrind.err" &
        vg=$!
    }
    start_vg
    for _ in $(seq 1000); do
        curl -sf -o /dev/null "${creq[@]}" "${trust[@]}" -x "http://127.0.0.1:$port" "$url" && break
        # On a loaded host the policy's start-up check can run past its time limit under
        # valgrind (the proxy exits): start it again.
        if ! kill -0 "$vg" 2>/dev/null; then rm -f "$tmp"/cg.*; start_vg; fi
        sleep 0.2
    done
    if [[ -n "$dns_miss" ]]; then
        tag=$RANDOM$RANDOM
        python3 "$here/dns_mix.py" "$port" "$up" 200 "w$tag"
        sleep "${SETTLE:-0}"
        callgrind_control -z "$vg" >/dev/null
        python3 "$here/dns_mix.py" "$port" "$up" "$n" "r$tag" "${MISS_EVERY:-10}" || echo "$bin: not all $n answered 200" >&2
    else
        oha --no-tui -c 4 -n 200 "${req[@]}" "${trust[@]}" -x "http://127.0.0.1:$port" "$url" >/dev/null
        sleep "${SETTLE:-0}"
        callgrind_control -z "$vg" >/dev/null
        oha --no-tui -c 4 -n "$n" "${req[@]}" "${trust[@]}" -x "http://127.0.0.1:$port" "$url" >"$tmp/oha.out"
        grep -q "\\[200\\] $n responses" "$tmp/oha.out" || { echo "$bin: not all $n answered 200" >&2; cat "$tmp/oha.out" >&2; }
    fi
    sleep "${SETTLE:-0}"
    callgrind_control -d "$vg" >/dev/null
    dump=$(ls -S "$tmp"/cg.* | head -1)
    ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
    kill "$vg"; wait "$vg" 2>/dev/null || true
    if [[ -n "${KEEP_CALLGRIND:-}" ]]; then cp "$dump" "$KEEP_CALLGRIND.$(basename "$bin")"; fi
    rm -f "$tmp"/cg.*
    echo "$bin: $((ir / n)) user-space instructions per ${https:+$([[ -n $splice ]] && echo spliced || echo intercepted) HTTPS }request${NEW_CONNS:+ on a new connection}$([[ $audit == off ]] || echo ", audited to a file")${dns_miss:+, DNS-miss mix (1 in ${MISS_EVERY:-10} a new name)} ($n requests)"
done
