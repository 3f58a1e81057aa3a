#!/usr/bin/env bash
# What a budget costs per call (issue 24: "budgets in process <= 1 µs per request; with Redis
# one round trip, pipelined with the upstream dial"), one command:
#   bench/budget_redis.sh BIN [BEFORE_BIN] [N] [REPS]
# A redis-server on a free loopback port and nginx as the upstream. Then:
# 1. with BEFORE_BIN (e.g. a build of the code before the dial overlapped the store's round
#    trip): the latency of one call with a Redis budget, BEFORE_BIN and BIN alternately REPS
#    (default 5) times, each N (default 2000) calls one after another, each on a new client
#    connection (oha -c 1 --disable-keepalive) and, with `limits.pool_max_idle_per_host: 0`, a
#    new upstream connection (the dial the round trip overlaps); the median of the runs' p50s;
# 2. user-space instructions per request for BIN (bench/instructions.sh, keep-alive): no
#    budget, an in-process budget, a Redis budget.
# Needs redis-server, nginx, oha, valgrind. Everything runs on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 1 ]] || { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
. bench/upstream.sh
bin=$1 before=${2:-} n=${3:-2000} reps=${4:-5}
tmp=$(mktemp -d)
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$tmp/redis.log" 2>&1 &
redis_pid=$!
trap 'kill $redis_pid ${nginx_pid:-} ${ig:-} 2>/dev/null || true; rm -rf "$tmp"' EXIT
until (exec 3<>"/dev/tcp/127.0.0.1/$redis_port") 2>/dev/null; do sleep 0.05; done
budget="budget: {calls: 1000000000, window: 1h}"
redis="budgets: {redis_url: \"redis://127.0.0.1:$redis_port\"}"
if [[ -n "$before" ]]; then
    up=$(free_port)
    start_nginx "$tmp" "$up"
    p50() { # BIN -> the p50 latency in µs of N calls, each on new connections
        local p a
        p=$(free_port) a=$(free_port)
        cat >"$tmp/c.yaml" <<YAML
listen: {proxy: 127.0.0.1:$p, admin: 127.0.0.1:$a}
agent: {id: bench, owner: bench}
audit: {path: off}
egress: {allow_cidrs: [127.0.0.0/8]}
limits: {pool_max_idle_per_host: 0}
$redis
intents: {bench: {allow: [{hosts: [127.0.0.1], ports: [$up]}], $budget}}
intent: bench
YAML
        "$1" serve --config "$tmp/c.yaml" >"$tmp/ig.log" 2>&1 &
        ig=$!
        until curl -s "http://127.0.0.1:$a/readyz" >/dev/null; do sleep 0.05; done
        oha -n 200 -c 1 --disable-keepalive --no-tui -x "http://127.0.0.1:$p" "http://127.0.0.1:$up/x" >/dev/null
        oha -n "$n" -c 1 --disable-keepalive --no-tui --output-format json \
            -x "http://127.0.0.1:$p" "http://127.0.0.1:$up/x" >"$tmp/oha.json"
        kill $ig; wait $ig 2>/dev/null || true
        python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["statusCodeDistribution"].get("200")==int(sys.argv[2]), d["statusCodeDistribution"]; print("%.1f" % (d["latencyPercentiles"]["p50"]*1e6))' "$tmp/oha.json" "$n"
    }
    b=() a=()
    for i in $(seq "$reps"); do
        b+=("$(p50 "$before")"); a+=("$(p50 "$bin")")
        echo "rep $i: p50 before ${b[-1]} µs, after ${a[-1]} µs per call (Redis budget, new connections)"
    done
    median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
    echo "median p50: before $(median "${b[@]}") µs, after $(median "${a[@]}") µs"
    kill $nginx_pid 2>/dev/null || true
fi
for variant in none in-process redis; do
    case $variant in
        none) extra="intents: {bench: {allow: [{hosts: [127.0.0.1], ports: [@UP@]}]}}" ;;
        in-process) extra="intents: {bench: {allow: [{hosts: [127.0.0.1], ports: [@UP@]}], $budget}}" ;;
        redis) extra="$redis
intents: {bench: {allow: [{hosts: [127.0.0.1], ports: [@UP@]}], $budget}}" ;;
    esac
    echo "budget: $variant"
    POLICY_YAML='policy: {}' EXTRA_YAML="intent: bench
$extra" bench/instructions.sh -n "${INSN_N:-2000}" "$bin" || true  # it ends with status 1
done
