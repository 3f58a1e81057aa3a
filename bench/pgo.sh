#!/usr/bin/env bash
# Regenerates layout/pgo.profdata, the profile that optimized builds of intentgate are compiled
# with (layout/rustc-pgo adds it; docs/performance.md, "Profile-guided build").
#
#   bench/pgo.sh            build an instrumented binary, run the training, write the profile
#   PGO_BIN=BIN bench/pgo.sh   the same with an instrumented binary already built
#
# The instrumented build (RUSTFLAGS=-Cprofile-generate, in target/pgo-gen, without the current
# profile) serves the benchmarks' own workloads, each counted as bench/instructions.sh runs it:
# target 1's configuration (a 1,000-intent catalog, audit to a file), plain requests with the
# policy off, POSTs with a 16 KiB body, intercepted HTTPS, spliced HTTPS (kept tunnels, and a
# tunnel a request), plain requests on a new connection each, the DNS-miss mix, every request-path
# feature on and off (bench/features.py's instruction runs: token, credential, budget, MCP,
# attestation, OTLP), decisions without the cache, a streamed LLM response with its usage
# counted, and budgets kept in Redis (when redis-server is installed). Code the training never runs is compiled as cold (less inlined): a path that matters
# gets a run here. The counts are merged (only the functions that ran: `--sparse`) into
# layout/pgo.profdata. Regenerate it as a release step, with layout/link.order after it (the
# function layout is read from the optimized build), whenever the request path changed: a
# function whose code no longer matches its counts is compiled as if it had none.
# Dependencies already compiled keep the profile they were built with until they are built
# again (Cargo cannot see the file): `cargo clean --release` after a new profile. Needs
# llvm-profdata of rustc's LLVM major version (Debian: llvm-N), valgrind, nginx, oha, python3.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
source "$here/llvm_profdata.sh"

raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT
bin=${PGO_BIN:-}
if [[ -z "$bin" ]]; then
    echo "pgo.sh: building the instrumented binary (target/pgo-gen)" >&2
    # The directory given here is only the binary's default; the runs write to $raw.
    (cd "$root" && INTENTGATE_NO_PGO=1 RUSTFLAGS="-Cprofile-generate=target/pgo-gen/raw" \
        cargo build --release --locked --target-dir target/pgo-gen --bin intentgate)
    bin=$root/target/pgo-gen/release/intentgate
fi
export RUST_BACKTRACE=0

catalog=$raw/catalog.yaml body=$raw/body.json
python3 "$here/catalog.py" 1000 | sed 's/@UPSTREAM_PORT@/@UP@/' >"$catalog"
python3 -c 'import json; print(json.dumps({"items": ["x" * 60] * 256}))' >"$body"
# Each workload's counts are merged apart, then weighed: the request path's runs WEIGHT (default
# 10) times the rest's. With equal weights and a 10,000-intent load in the training, loading held
# most of the counts (1.2 billion, against ~0.1 billion for the requests), LLVM saw the request
# path as less hot, and a target-1 request cost +6 % instructions (journal, 2026-12-07, stop 39).
# Loading a catalog is in the training anyway: target 1's 1,000 intents at every start.
weight=${WEIGHT:-10}
inputs=()
k=0
run() {
    local w=$1 what=$2
    shift 2
    k=$((k + 1))
    echo "pgo.sh: training: $what" >&2
    LLVM_PROFILE_FILE="$raw/$k/%m_%p.profraw" "$@" >/dev/null
    "$profdata" merge -o "$raw/$k.profdata" "$raw/$k"/*.profraw
    echo "pgo.sh:   counts: $("$profdata" show "$raw/$k.profdata" | sed -n 's/^Total count: //p'), weight $w" >&2
    inputs+=("--weighted-input=$w,$raw/$k.profdata")
}
run "$weight" "target 1 (1,000 intents, audit to a file)" env POLICY_FILE="$catalog" "$here/instructions.sh" -n 3000 --audit "$bin"
run "$weight" "policy off" "$here/instructions.sh" -n 2000 "$bin"
run "$weight" "POST, 16 KiB" env METHOD=POST BODY_FILE="$body" CT=application/json "$here/instructions.sh" -n 1000 "$bin"
run "$weight" "intercepted HTTPS" "$here/instructions.sh" -n 2000 --https "$bin"
run "$weight" "spliced HTTPS, kept tunnels" "$here/instructions.sh" -n 1000 --splice "$bin"
run "$weight" "spliced HTTPS, a tunnel a request" env NEW_CONNS=1 "$here/instructions.sh" -n 300 --splice "$bin"
run "$weight" "plain, a connection a request" env NEW_CONNS=1 "$here/instructions.sh" -n 500 "$bin"
run "$weight" "the DNS-miss mix" "$here/instructions.sh" -n 1000 --dns-miss "$bin"
run "$weight" "the request-path features, off and on" python3 "$here/features.py" "$bin" --no-cpu --insn-n 500
python3 "$here/catalog.py" 1000 --no-cache | sed 's/@UPSTREAM_PORT@/@UP@/' >"$catalog"
run 1 "decisions without the cache" env POLICY_FILE="$catalog" "$here/instructions.sh" -n 1000 "$bin"
run 1 "a streamed LLM response, usage counted" env N=50 "$here/llm_usage_insn.sh" "$bin"
if command -v redis-server >/dev/null; then
    run 1 "budgets: none, in process, in Redis" env INSN_N=500 "$here/budget_redis.sh" "$bin"
else
    echo "pgo.sh: no redis-server: budgets kept in Redis left out of the training" >&2
fi

"$profdata" merge --sparse -o "$root/layout/pgo.profdata" "${inputs[@]}"
"$profdata" show "$root/layout/pgo.profdata" | sed -n 's/^Total functions: /pgo.sh: functions profiled: /p' >&2
echo "pgo.sh: wrote layout/pgo.profdata; next: cargo clean --release, cargo build --release, bench/order.sh" >&2
