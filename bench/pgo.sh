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
# policy off, POSTs with a 16 KiB body, intercepted HTTPS, the DNS-miss mix, every request-path
# feature on and off (bench/features.py's instruction runs: token, credential, budget, MCP,
# attestation, OTLP), decisions without the cache, a streamed LLM response with its usage counted,
# and loading catalogs of 1,000 and 10,000 intents. Code the training never runs is compiled as
# cold (less inlined): a path that matters gets a run here. The counts are merged (only the
# functions that ran: `--sparse`) into layout/pgo.profdata. Regenerate it as a release step, with layout/link.order after it (the
# function layout is read from the optimized build), whenever the request path changed: a
# function whose code no longer matches its counts is compiled as if it had none.
# Dependencies already compiled keep the profile they were built with until they are built
# again (Cargo cannot see the file): `cargo clean --release` after a new profile. Needs
# llvm-profdata of rustc's LLVM major version (Debian: llvm-N), valgrind, nginx, oha, python3.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
profdata=
for p in "llvm-profdata-$major" "/usr/lib/llvm-$major/bin/llvm-profdata" llvm-profdata; do
    if command -v "$p" >/dev/null && "$p" --version 2>/dev/null | grep -q "LLVM version $major\."; then
        profdata=$p
        break
    fi
done
[[ -n "$profdata" ]] || {
    echo "pgo.sh: no llvm-profdata of LLVM $major (rustc's): apt-get install llvm-$major" >&2
    exit 2
}

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
export LLVM_PROFILE_FILE="$raw/%m_%p.profraw" RUST_BACKTRACE=0

catalog=$raw/catalog.yaml body=$raw/body.json
python3 "$here/catalog.py" 1000 | sed 's/@UPSTREAM_PORT@/@UP@/' >"$catalog"
python3 -c 'import json; print(json.dumps({"items": ["x" * 60] * 256}))' >"$body"
run() { echo "pgo.sh: training: $1" >&2; shift; "$@" >/dev/null; }
run "target 1 (1,000 intents, audit to a file)" env POLICY_FILE="$catalog" "$here/instructions.sh" -n 3000 --audit "$bin"
run "policy off" "$here/instructions.sh" -n 2000 "$bin"
run "POST, 16 KiB" env METHOD=POST BODY_FILE="$body" CT=application/json "$here/instructions.sh" -n 1000 "$bin"
run "intercepted HTTPS" "$here/instructions.sh" -n 2000 --https "$bin"
run "the DNS-miss mix" "$here/instructions.sh" -n 1000 --dns-miss "$bin"
run "the request-path features, off and on" python3 "$here/features.py" "$bin" --no-cpu --insn-n 500
python3 "$here/catalog.py" 1000 --no-cache | sed 's/@UPSTREAM_PORT@/@UP@/' >"$catalog"
run "decisions without the cache" env POLICY_FILE="$catalog" "$here/instructions.sh" -n 1000 "$bin"
run "a streamed LLM response, usage counted" env N=50 "$here/llm_usage_insn.sh" "$bin"
run "loading catalogs of 1,000 and 10,000 intents" python3 "$here/catalog_load.py" --bin "$bin" --sizes 1000,10000 --reps 1

"$profdata" merge --sparse -o "$root/layout/pgo.profdata" "$raw"/*.profraw
"$profdata" show "$root/layout/pgo.profdata" | sed -n 's/^Total functions: /pgo.sh: functions profiled: /p' >&2
echo "pgo.sh: wrote layout/pgo.profdata; next: cargo clean --release, cargo build --release, bench/order.sh" >&2
