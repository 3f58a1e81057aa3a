#!/usr/bin/env bash
# The floor's cost per plain keep-alive request: bench/floor (hyper-floor, a bare hyper/tokio
# forward proxy with intentgate's stack and server setup, no policy) counted exactly as
# bench/haproxy_cost.sh counts haproxy's and bench/instructions.sh intentgate's: the least this
# stack can cost, issue 26's targets 1-2 bound (docs/performance-log.md).
#
#   bench/floor_cost.sh [-n REQUESTS] [--no-header-timer] [--https] [--strace N]
#
# Under callgrind: 200 warm-up GETs of /small through the proxy (oha -x, 4 connections) to a
# local nginx, the counters zeroed, REQUESTS more (default 2000): user-space instructions per
# request. Then, without valgrind, `strace -c -f` over N (default 20000; 0 skips it) requests
# after 2,000 warm-up ones. Builds bench/floor (cargo --offline) when its binary is missing;
# FLOOR_BIN overrides the binary (bench/floor/target-pgo/release/hyper-floor: the floor built
# with its own profile, bench/floor_pgo.sh), FLOOR_ARGS adds flags (e.g. "--max-headers 100").
# KEEP_CALLGRIND=PREFIX keeps the profile as PREFIX.floor.
# --no-header-timer: the floor without hyper's header read timer (TokioTimer).
# --https: intercepted HTTPS as bench/instructions.sh --https drives intentgate: nginx also on
# TLS (the same openssl-made upstream CA and leaf), the floor with --tls (its CA made by openssl
# here, P-256 as `intentgate ca init`), oha sends CONNECT and keeps its 4 tunnels alive.
set -euo pipefail
n=2000 sn=20000 flags=() https=
while [[ $# -gt 0 ]]; do
    case "$1" in
        -n) n=$2; shift 2 ;;
        --strace) sn=$2; shift 2 ;;
        --no-header-timer) flags+=(--no-header-timer); shift ;;
        --https) https=1; shift ;;
        *) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
done
for tool in valgrind callgrind_control strace nginx oha curl openssl; do
    command -v "$tool" >/dev/null || { echo "floor_cost.sh: $tool is missing" >&2; exit 2; }
done
here=$(cd "$(dirname "$0")" && pwd)
bin=${FLOOR_BIN:-$here/floor/target/release/hyper-floor}
if [[ ! -x "$bin" ]]; then
    # From inside the tree: the repository's .cargo/config.toml (jemalloc's and aws-lc's build
    # settings) applies by the working directory, not by the manifest's. Without intentgate's
    # profile (layout/pgo.profdata is intentgate's, not the floor's): the floor as measured.
    (cd "$here/floor" && INTENTGATE_NO_PGO=1 cargo build --release --offline --locked >&2)
fi
read -r -a extra <<<"${FLOOR_ARGS:-}"
flags+=("${extra[@]}")
tmp=$(mktemp -d)
source "$here/upstream.sh"
up=$(free_port) port=$(free_port) tls_up=$(free_port)
trust=()
if [[ -n "$https" ]]; then
    t=$tmp/tls
    upstream_tls "$t" floor_ca || exit 1
    start_nginx "$tmp" "$up" "$tls_up" "$t"
    flags+=(--tls --ca-cert "$t/ig/ca.pem" --ca-key "$t/ig/ca-key.pem" --upstream-ca "$t/up-ca.pem")
    url=https://127.0.0.1:$tls_up/small
    trust=(--cacert "$t/ig/ca.pem")
else
    start_nginx "$tmp" "$up"
    url=http://127.0.0.1:$up/small
fi
pid=
trap 'kill $nginx_pid $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
ready() {
    for _ in $(seq 300); do curl -sf -o /dev/null "${trust[@]}" -x "http://127.0.0.1:$port" "$url" && return 0; sleep 0.2; done
    echo "floor_cost.sh: hyper-floor did not answer" >&2; exit 1
}

valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$tmp/cg.%p" \
    "$bin" --listen "127.0.0.1:$port" "${flags[@]}" >"$tmp/floor.out" 2>"$tmp/valgrind.err" &
pid=$!
ready
oha --no-tui -c 4 -n 200 "${trust[@]}" -x "http://127.0.0.1:$port" "$url" >/dev/null
callgrind_control -z "$pid" >/dev/null
oha --no-tui -c 4 -n "$n" "${trust[@]}" -x "http://127.0.0.1:$port" "$url" >"$tmp/oha.out"
grep -q "\\[200\\] $n responses" "$tmp/oha.out" || { echo "not all $n answered 200" >&2; cat "$tmp/oha.out" >&2; }
callgrind_control -d "$pid" >/dev/null
dump=$(ls -S "$tmp"/cg.* | head -1)
ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
if [[ -n "${KEEP_CALLGRIND:-}" ]]; then cp "$dump" "$KEEP_CALLGRIND.floor"; fi
kill "$pid"; wait "$pid" 2>/dev/null || true
pid=
echo "hyper-floor${https:+ --tls}$([[ " ${flags[*]} " == *" --no-header-timer "* ]] && echo " --no-header-timer")${FLOOR_ARGS:+ $FLOOR_ARGS}: $((ir / n)) user-space instructions per ${https:+intercepted HTTPS }request ($n requests)"

[[ "$sn" -gt 0 ]] || exit 0
"$bin" --listen "127.0.0.1:$port" "${flags[@]}" >"$tmp/floor.out" 2>&1 &
pid=$!
ready
oha --no-tui -c 4 -n 2000 "${trust[@]}" -x "http://127.0.0.1:$port" "$url" >/dev/null
strace -c -f -p "$pid" -o "$tmp/strace.out" &
st=$!
sleep 1
oha --no-tui -c 4 -n "$sn" "${trust[@]}" -x "http://127.0.0.1:$port" "$url" >"$tmp/oha.out"
grep -q "\\[200\\] $sn responses" "$tmp/oha.out" || { echo "not all $sn answered 200" >&2; cat "$tmp/oha.out" >&2; }
sleep 1
kill -INT $st; wait $st 2>/dev/null || true
cat "$tmp/strace.out"
awk -v n="$sn" '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ {printf "%s %.3f per request\n", $NF, $4 / n}' "$tmp/strace.out"
