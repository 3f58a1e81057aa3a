#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: deterministic, so it shows
# small changes that the CPU-time benchmark (bench/load.sh) cannot see on a busy host. Kernel
# time (the socket syscalls, about half of the real cost) is not included.
#
#   bench/instructions.sh [-n REQUESTS] BIN [BIN...]
#
# Each BIN (an `intentgate` binary) serves the "policy off" bench config under valgrind; after 200
# warm-up requests the counters are zeroed, oha sends REQUESTS (default 2000) keep-alive GETs over
# 4 connections to a local nginx, and the instructions are divided by REQUESTS. Needs valgrind,
# nginx and oha (bench/load.sh installs the last two). Everything runs on 127.0.0.1.
set -euo pipefail

n=2000
if [[ "${1:-}" == "-n" ]]; then n=$2; shift 2; fi
if [[ $# -eq 0 || "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
for tool in valgrind callgrind_control nginx oha curl; do
    command -v "$tool" >/dev/null || { echo "instructions.sh: $tool is missing" >&2; exit 2; }
done

here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(free_port)
cat >"$tmp/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $tmp/nginx.pid;
error_log $tmp/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $tmp;
  server { listen 127.0.0.1:$up; location / { return 200 '{"ok":true}'; } }
}
EOF
nginx -c "$tmp/nginx.conf" &
nginx_pid=$!
trap 'kill $nginx_pid 2>/dev/null; pkill -f "$tmp/proxy.yaml" 2>/dev/null; rm -rf "$tmp"' EXIT

for bin in "$@"; do
    port=$(free_port)
    cat >"$tmp/proxy.yaml" <<EOF
listen: {proxy: "127.0.0.1:$port", admin: null}
audit: {path: "off"}
agent: {id: bench-agent, owner: bench}
egress: {allow_cidrs: ["127.0.0.0/8"]}
policy: {builtin: false, paths: ["$here/variants/allow-all.rego"]}
EOF
    INTENTGATE_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.%p" \
        "$bin" serve --config "$tmp/proxy.yaml" 2>"$tmp/valgrind.err" &
    vg=$!
    for _ in $(seq 200); do
        curl -s -o /dev/null -x "http://127.0.0.1:$port" "http://127.0.0.1:$up/small" && break
        sleep 0.2
    done
    oha --no-tui -c 4 -n 200 -x "http://127.0.0.1:$port" "http://127.0.0.1:$up/small" >/dev/null
    callgrind_control -z "$vg" >/dev/null
    oha --no-tui -c 4 -n "$n" -x "http://127.0.0.1:$port" "http://127.0.0.1:$up/small" >/dev/null
    callgrind_control -d "$vg" >/dev/null
    dump=$(ls -S "$tmp"/cg.* | head -1)
    ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
    kill "$vg"; wait "$vg" 2>/dev/null || true
    rm -f "$tmp"/cg.*
    echo "$bin: $((ir / n)) user-space instructions per request ($n requests)"
done
