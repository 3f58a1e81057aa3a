#!/usr/bin/env bash
# System calls per proxied request, counted by `strace -c -f` on the running proxy (all its
# threads): the kernel side that bench/instructions.sh does not see.
#   bench/syscalls.sh [--https] BIN [N]
# The proxy (audit off, policy off as in bench/instructions.sh) forwards N (default 20000)
# keep-alive GETs from oha (4 connections) to a local nginx after 2,000 warm-up requests; strace
# attaches after the warm-up and stays SETTLE seconds (default 3) after the last request, so work
# done later (an OTLP batch) counts too. EXTRA_YAML is appended to the config, e.g. with
# bench/otlp_sink.py listening on PORT:
#   EXTRA_YAML='telemetry: {otlp: {endpoint: "http://127.0.0.1:PORT"}}' bench/syscalls.sh BIN
# POLICY_FILE replaces the `policy:` line with a file's text (@UP@ stands for nginx's port), and
# AUDIT=1 writes audit records to a file: issue 26's target 1 config (bench/instructions.sh).
# Prints strace's table and each call's count per request. (strace slows the proxy; the counts,
# not the times, are the result.)
# --https: intercepted HTTPS as bench/instructions.sh --https sets it up (oha sends CONNECT and
# keeps 4 tunnels; intentgate terminates TLS and re-originates it to nginx's TLS listener).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/upstream.sh
https=
if [[ "${1:-}" == "--https" ]]; then https=1; shift; fi
bin=$1 n=${2:-20000}
tmp=$(mktemp -d)
trap 'kill $nginx_pid ${ig:-} 2>/dev/null || true; rm -rf "$tmp"' EXIT
up=$(free_port) p=$(free_port)
url=http://127.0.0.1:$up/small trust=()
if [[ -n "$https" ]]; then
    t=$tmp/tls tls_up=$(free_port)
    upstream_tls "$t" "$bin" || exit 1
    start_nginx "$tmp" "$up" "$tls_up" "$t"
    url=https://127.0.0.1:$tls_up/small trust=(--cacert "$t/ig/ca.pem")
else
    start_nginx "$tmp" "$up"
fi
policy="policy: {builtin: false, paths: [\"$PWD/bench/variants/allow-all.rego\"]}"
if [[ -n "${POLICY_FILE:-}" ]]; then policy=$(sed "s/@UP@/$up/g" "$POLICY_FILE"); fi
cat >"$tmp/c.yaml" <<YAML
listen: {proxy: "127.0.0.1:$p", admin: null}
audit: {path: "$([[ -n "${AUDIT:-}" ]] && echo "$tmp/audit.log" || echo off)"}
agent: {id: bench-agent, owner: bench}
egress: {allow_cidrs: ["127.0.0.0/8"]}
$policy
${EXTRA_YAML:-}
YAML
if [[ -n "$https" ]]; then
    sed -i "s|^egress: .*|egress: {allow_cidrs: [\"127.0.0.0/8\"], connect_ports: [$tls_up]}|" "$tmp/c.yaml"
    echo "tls: {ca_cert: \"$t/ig/ca.pem\", ca_key: \"$t/ig/ca-key.pem\", upstream_ca: \"$t/up-ca.pem\", intercept: all}" >>"$tmp/c.yaml"
fi
"$bin" serve --config "$tmp/c.yaml" >"$tmp/ig.log" 2>&1 &
ig=$!
until curl -sf -o /dev/null "${trust[@]}" -x "http://127.0.0.1:$p" "$url"; do sleep 0.1; done
oha --no-tui -c 4 -n 2000 "${trust[@]}" -x "http://127.0.0.1:$p" "$url" >/dev/null
sleep "${SETTLE:-3}"
strace -c -f -p "$ig" -o "$tmp/strace.out" &
st=$!
sleep 1
oha --no-tui -c 4 -n "$n" "${trust[@]}" -x "http://127.0.0.1:$p" "$url" >"$tmp/oha.out"
grep -q "\\[200\\] $n responses" "$tmp/oha.out" || { echo "not all $n answered 200" >&2; cat "$tmp/oha.out" >&2; }
sleep "${SETTLE:-3}"
kill -INT $st; wait $st 2>/dev/null || true
cat "$tmp/strace.out"
awk -v n="$n" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ {printf "%s %.3f per request\n", $NF, $4 / n}' "$tmp/strace.out"
