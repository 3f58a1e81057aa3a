#!/usr/bin/env bash
# The CPU an attestation adds per forwarded request, end to end: the same intentgate binary with
# `attestation.enabled` off and on, alternately (REPS times each), forwarding N plain-HTTP
# requests from oha (C connections) to a local nginx; the proxy's CPU time (utime + stime from
# /proc) over the requests it served. Prints one line per run and the medians.
#   bench/attest_cpu.sh BIN [N] [C] [REPS]
# ON_YAML (optional) measures another feature the same way: its config lines are added in the
# "on" runs instead of `attestation.enabled`, e.g.
#   ON_YAML='telemetry: {otlp: {endpoint: "http://127.0.0.1:4318"}}' bench/attest_cpu.sh BIN
# ON_RULE (optional) adds keys to the allow rule in the "on" runs (the "off" runs keep the plain
# rule), e.g. ON_RULE='protocol: mcp, mcp: {tools: [read_ticket]}'; ON_INTENT adds keys to the
# intent itself, e.g. ON_INTENT='budget: {calls: 1000000000}'.
# ON_HEADER (optional) is a request header the client sends in the "on" runs ("name: value").
# OFF_BIN, OFF_YAML, OFF_RULE (optional) make the "off" runs another binary (a variant built
# without the feature), with these config lines and rule keys: a same-run A/B of two builds
# (bench/llm_usage_cpu.sh with VARIANT_BIN uses them).
# The requests are GETs of /x unless: METHOD (e.g. POST), BODY_FILE (the body sent), CT (its
# Content-Type), URL_PATH (e.g. /files/sse.txt: nginx serves files put in $FILES_DIR there, also
# to a POST). bench/mcp_cpu.sh and bench/llm_usage_cpu.sh use these.
# PIN=1 runs the proxy on CPU 1 and nginx and oha on CPU 0, so the proxy's time is not mixed with
# theirs on one core (less spread between reps; both sides of the A/B run the same way).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/upstream.sh
bin=$1 n=${2:-20000} c=${3:-8} reps=${4:-3}
tmp=$(mktemp -d)
trap 'kill $nginx_pid ${ig:-} 2>/dev/null || true; rm -rf "$tmp"' EXIT
up=$(free_port)
start_nginx "$tmp" "$up"
pin_proxy=() pin_load=()
if [[ ${PIN:-0} == 1 ]]; then
    pin_proxy=(taskset -c 1) pin_load=(taskset -c 0)
    for p in $nginx_pid $(pgrep -P "$nginx_pid"); do taskset -pc 0 "$p" >/dev/null; done
fi
ticks=$(getconf CLK_TCK)
cpu() { awk -v t="$ticks" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
feature() { # on|off -> the config line(s) of the feature measured
    if [[ -z "${ON_YAML:-}" ]]; then echo "attestation: {enabled: $1}"
    elif [[ $1 == true ]]; then echo "$ON_YAML"
    else echo "${OFF_YAML:-}"
    fi
}
rule() { # on|off -> the keys ON_RULE adds to the allow rule
    if [[ $1 == true && -n "${ON_RULE:-}" ]]; then echo ", ${ON_RULE}"; fi
    if [[ $1 == false && -n "${OFF_RULE:-}" ]]; then echo ", ${OFF_RULE}"; fi
}
intent_keys() { # on|off -> the keys ON_INTENT adds to the intent
    if [[ $1 == true && -n "${ON_INTENT:-}" ]]; then echo ", ${ON_INTENT}"; fi
}
req=(-m "${METHOD:-GET}")
if [[ -n "${BODY_FILE:-}" ]]; then req+=(-D "$BODY_FILE"); fi
if [[ -n "${CT:-}" ]]; then req+=(-T "$CT"); fi
url_path=${URL_PATH:-/x}
run() { # attestation on|off -> µs of proxy CPU per request
    local on=$1 p a
    p=$(free_port) a=$(free_port)
    cat >"$tmp/c.yaml" <<YAML
listen: {proxy: 127.0.0.1:$p, admin: 127.0.0.1:$a}
agent: {id: bench, owner: bench}
audit: {path: off}
egress: {allow_cidrs: [127.0.0.0/8]}
$(feature "$on")
intents: {bench: {allow: [{hosts: [127.0.0.1], ports: [$up]$(rule "$on")}]$(intent_keys "$on")}}
intent: bench
YAML
    local b=$bin r=("${req[@]}")
    if [[ $on == false ]]; then b=${OFF_BIN:-$bin}; fi
    if [[ $on == true && -n "${ON_HEADER:-}" ]]; then r+=(-H "$ON_HEADER"); fi
    "${pin_proxy[@]}" "$b" serve --config "$tmp/c.yaml" >"$tmp/ig.log" 2>&1 &
    ig=$!
    until curl -s "http://127.0.0.1:$a/readyz" >/dev/null; do sleep 0.05; done
    # Warm up (connections, caches), then measure.
    "${pin_load[@]}" oha -n 2000 -c "$c" --no-tui "${r[@]}" -x "http://127.0.0.1:$p" "http://127.0.0.1:$up$url_path" >/dev/null
    local before after
    before=$(cpu $ig)
    "${pin_load[@]}" oha -n "$n" -c "$c" --no-tui "${r[@]}" -x "http://127.0.0.1:$p" "http://127.0.0.1:$up$url_path" >"$tmp/oha.out"
    grep -q "\\[200\\] $n responses" "$tmp/oha.out" || { echo "not all $n answered 200" >&2; cat "$tmp/oha.out" >&2; }
    after=$(cpu $ig)
    kill $ig; wait $ig 2>/dev/null || true
    awk -v b="$before" -v a="$after" -v n="$n" 'BEGIN {printf "%.1f\n", (a - b) * 1e6 / n}'
}
off=() on=()
for i in $(seq "$reps"); do
    off+=("$(run false)"); on+=("$(run true)")
    echo "rep $i: off ${off[-1]} µs, on ${on[-1]} µs per request"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mo=$(median "${off[@]}") mn=$(median "${on[@]}")
echo "median: off $mo µs, on $mn µs, added $(awk -v a="$mn" -v b="$mo" 'BEGIN {printf "%.1f", a - b}') µs per request"
# Each rep's on minus its off (run back to back, so a slow stretch of the host weighs on both):
# their median, and the middle half of them.
diffs=$(for i in "${!off[@]}"; do awk -v a="${on[$i]}" -v b="${off[$i]}" 'BEGIN {printf "%.1f\n", a - b}'; done | sort -n)
echo "paired: median $(median $diffs) µs, middle half $(echo "$diffs" | awk '{a[NR]=$1} END {q=int((NR+3)/4); print a[q] " to " a[NR-q+1]}') µs (all: $(echo $diffs))"
