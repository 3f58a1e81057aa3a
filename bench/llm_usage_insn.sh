#!/usr/bin/env bash
# User-space instructions that LLM usage counting costs a response streamed one frame per SSE
# event (issue 24: <= 2 %), one command:
#   bench/llm_usage_insn.sh BIN [BIN...]
# The upstream of bench/llm_usage_ab.py (a 200-event OpenAI chat completion, ~50 KB) writes
# each event on its own, GAP_US (default 1000) apart, so the proxy reads one frame per event
# even under valgrind. Each BIN serves it under a `protocol: llm` rule (audit off) inside
# callgrind; N (default 100) responses over 4 connections are counted after 100 of warm-up.
# Printed per response: all of the proxy's instructions, and the response side of the counting
# (callgrind's inclusive cost of the scanner's functions: `Scanner::data` with its copies,
# `finish`, the scanner made and dropped) with its share. The total moves by a few % between
# runs (how often the runtime parks); the scanner's share does not. For CPU time with a
# confidence interval: bench/llm_usage_ab.py --frames event. Needs valgrind, oha, curl.
set -euo pipefail
[[ $# -ge 1 && $1 != -h && $1 != --help ]] || { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
n=${N:-100}
tmp=$(mktemp -d)
source "$here/upstream.sh"
up=$(free_port)
python3 "$here/llm_usage_ab.py" --upstream "$up" event 200 "${GAP_US:-1000}" &
up_pid=$!
trap 'kill $up_pid 2>/dev/null || true; pkill -f "$tmp/proxy.yaml" 2>/dev/null || true; rm -rf "$tmp"' EXIT
printf '%s' '{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"max_tokens":400,"messages":[{"role":"user","content":"Summarise the ticket."}]}' >"$tmp/req.json"
url=http://127.0.0.1:$up/v1/chat/completions
load() { oha --no-tui -c 4 -n "$1" -m POST -D "$tmp/req.json" -T application/json -x "http://127.0.0.1:$port" "$url"; }
for bin in "$@"; do
    port=$(free_port)
    cat >"$tmp/proxy.yaml" <<Y
listen: {proxy: "127.0.0.1:$port", admin: null}
agent: {id: bench, owner: bench}
audit: {path: off}
egress: {allow_cidrs: [127.0.0.0/8]}
mcp: {detect: rules}
intents: {bench: {allow: [{hosts: [127.0.0.1], ports: [$up], protocol: llm, llm: {models: ["gpt-4o-*"]}}]}}
intent: bench
Y
    RUST_BACKTRACE=0 valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.%p" \
        "$bin" serve --config "$tmp/proxy.yaml" 2>"$tmp/valgrind.err" &
    vg=$!
    for _ in $(seq 300); do
        curl -sf -o /dev/null -x "http://127.0.0.1:$port" -d @"$tmp/req.json" \
            -H content-type:application/json "$url" && break
        sleep 0.2
    done
    load 100 >/dev/null
    callgrind_control -z "$vg" >/dev/null
    load "$n" >"$tmp/oha.out"
    grep -q "\[200\] $n responses" "$tmp/oha.out" || { echo "$bin: not all $n answered 200" >&2; cat "$tmp/oha.out" >&2; }
    callgrind_control -d "$vg" >/dev/null
    dump=$(ls -S "$tmp"/cg.* | head -1)
    callgrind_annotate --threshold=100 --inclusive=yes "$dump" >"$tmp/incl"
    kill "$vg"; wait "$vg" 2>/dev/null || true
    rm -f "$tmp"/cg.*
    python3 - "$tmp/incl" "$n" "$bin" <<'PY'
import re, sys
text, n, binary = open(sys.argv[1]).read(), int(sys.argv[2]), sys.argv[3]
total = int(re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", text)[1].replace(",", ""))
scanner = 0
for v, name in re.findall(r"^\s*([\d,]+) \([ \d.]+%\)\s+\S*?(\S+usage::(?:Scanner::data|Scanner::finish|scan|Scanner>))", text, re.M):
    scanner += int(v.replace(",", ""))
print(f"{binary}: {total // n} instructions per response; usage counting's own "
      f"{scanner // n} ({100 * scanner / total:.2f} %)")
PY
done
