#!/usr/bin/env bash
# haproxy's cost per keep-alive request, counted the way bench/instructions.sh and
# bench/syscalls.sh count intentgate's: the reference of issue 26's targets 1 (plain) and 2
# (--https) in instructions and system calls, not only in CPU time (bench/load.py --peers haproxy).
#
#   bench/haproxy_cost.sh [-n REQUESTS] [--strace N] [--https]
#
# haproxy 2.6 as bench/load.py runs it (a reverse proxy, one thread, kept upstream connections,
# `http-reuse always`) in front of the same local nginx. Under callgrind: 200 warm-up GETs of
# /small over 4 connections (oha), the counters zeroed, REQUESTS more (default 2000): user-space
# instructions per request. Then, without valgrind, `strace -c -f` over N (default 20000)
# requests after 2,000 warm-up ones: each system call per request. Needs haproxy, valgrind,
# strace, nginx and oha.
# --https: `haproxy-tls` as bench/load.py configures it: TLS terminated with nginx's bench leaf
# (P-256, from a throwaway openssl CA, as bench/instructions.sh --https makes it), TLS
# re-originated to nginx's TLS listener, verified against that CA (SNI 127.0.0.1); oha trusts the
# CA with --cacert. KEEP_CALLGRIND=PREFIX keeps the profile as PREFIX.haproxy[-tls].
set -euo pipefail
n=2000 sn=20000 https=
while [[ $# -gt 0 ]]; do
    case "$1" in
        -n) n=$2; shift 2 ;;
        --strace) sn=$2; shift 2 ;;
        --https) https=1; shift ;;
        *) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
done
for tool in haproxy valgrind callgrind_control strace nginx oha curl openssl; do
    command -v "$tool" >/dev/null || { echo "haproxy_cost.sh: $tool is missing" >&2; exit 2; }
done
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
source "$here/upstream.sh"
up=$(free_port) port=$(free_port)
bind="bind 127.0.0.1:$port" server="server nginx 127.0.0.1:$up" scheme=http trust=() name=haproxy
if [[ -n "$https" ]]; then
    t=$tmp/tls tls_up=$(free_port)
    upstream_tls "$t" || exit 1
    start_nginx "$tmp" "$up" "$tls_up" "$t"
    bind+=" ssl crt $t/up-with-key.pem"
    server="server nginx 127.0.0.1:$tls_up ssl verify required ca-file $t/up-ca.pem sni str(127.0.0.1)"
    scheme=https trust=(--cacert "$t/up-ca.pem") name=haproxy-tls
else
    start_nginx "$tmp" "$up"
fi
pid=
trap 'kill $nginx_pid $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
cat >"$tmp/haproxy.cfg" <<CFG
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    http-reuse always
frontend bench
    $bind
    default_backend nginx
backend nginx
    $server
CFG
url=$scheme://127.0.0.1:$port/small
ready() {
    for _ in $(seq 300); do curl -sf -o /dev/null "${trust[@]}" "$url" && return 0; sleep 0.2; done
    echo "haproxy_cost.sh: haproxy did not answer" >&2; exit 1
}

valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.%p" haproxy -db -f "$tmp/haproxy.cfg" \
    2>"$tmp/valgrind.err" &
pid=$!
ready
oha --no-tui -c 4 -n 200 "${trust[@]}" "$url" >/dev/null
callgrind_control -z "$pid" >/dev/null
oha --no-tui -c 4 -n "$n" "${trust[@]}" "$url" >"$tmp/oha.out"
grep -q "\\[200\\] $n responses" "$tmp/oha.out" || { echo "not all $n answered 200" >&2; cat "$tmp/oha.out" >&2; }
callgrind_control -d "$pid" >/dev/null
dump=$(ls -S "$tmp"/cg.* | head -1)
ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
if [[ -n "${KEEP_CALLGRIND:-}" ]]; then cp "$dump" "$KEEP_CALLGRIND.$name"; fi
kill "$pid"; wait "$pid" 2>/dev/null || true
echo "$name: $((ir / n)) user-space instructions per request ($n requests)"

haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
pid=$!
ready
oha --no-tui -c 4 -n 2000 "${trust[@]}" "$url" >/dev/null
strace -c -f -p "$pid" -o "$tmp/strace.out" &
st=$!
sleep 1
oha --no-tui -c 4 -n "$sn" "${trust[@]}" "$url" >"$tmp/oha.out"
grep -q "\\[200\\] $sn responses" "$tmp/oha.out" || { echo "not all $sn answered 200" >&2; cat "$tmp/oha.out" >&2; }
sleep 1
kill -INT $st; wait $st 2>/dev/null || true
cat "$tmp/strace.out"
awk -v n="$sn" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ {printf "%s %.3f per request\n", $NF, $4 / n}' "$tmp/strace.out"
