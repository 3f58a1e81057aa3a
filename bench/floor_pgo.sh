#!/usr/bin/env bash
# The stack's floor built as intentgate is, with a profile of how it runs: bench/floor (hyper-floor)
# compiled with -Cprofile-use from its own training, so that it compares with intentgate's
# profile-guided release build (bench/pgo.sh, layout/rustc-pgo) in the same build mode.
#
#   bench/floor_pgo.sh                      instrumented build, training, profile, optimized build
#   FLOOR_GEN_BIN=BIN bench/floor_pgo.sh    the same with an instrumented binary already built
#
# The instrumented build (RUSTFLAGS=-Cprofile-generate, bench/floor/target-pgo-gen) serves oha
# through a local nginx, each workload in a process of its own: plain keep-alive requests (4 and
# 32 connections, as bench/floor_cost.sh and bench/load.py drive it), plain requests on a new
# connection each, and intercepted HTTPS (--tls, kept tunnels, as floor_cost.sh --https). The
# counts are merged (--sparse) into bench/floor/target-pgo/floor.profdata, and the floor is built
# again with it (-Cprofile-use, -no-pgo-warn-mismatch: layout/rustc-pgo's flags, here for every
# crate of the build) into bench/floor/target-pgo/release/hyper-floor, from scratch (Cargo cannot
# see the profile). Neither is committed: this script makes both (two clean builds of the floor
# and ~1 min of training: 16 min on a busy two-core host). Run it again after a change to
# bench/floor or its Cargo.lock. Needs llvm-profdata of rustc's LLVM major version (Debian:
# llvm-N), nginx, oha, curl, openssl.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
floor=$here/floor
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
source "$here/llvm_profdata.sh"
for tool in nginx oha curl openssl; do
    command -v "$tool" >/dev/null || { echo "floor_pgo.sh: $tool is missing" >&2; exit 2; }
done

# From inside the tree, as bench/floor_cost.sh builds it: the repository's .cargo/config.toml
# (jemalloc's and aws-lc's build settings) applies by the working directory. INTENTGATE_NO_PGO=1:
# layout/rustc-pgo adds intentgate's profile, not the floor's.
build() {
    local dir=$1 flags=$2
    (cd "$floor" && INTENTGATE_NO_PGO=1 RUSTFLAGS="$flags" \
        nice -n 5 cargo build --release --offline --locked --target-dir "$dir" >&2)
}
bin=${FLOOR_GEN_BIN:-}
if [[ -z "$bin" ]]; then
    echo "floor_pgo.sh: building the instrumented floor (bench/floor/target-pgo-gen)" >&2
    # The directory given here is only the binary's default; the runs write to $raw.
    build target-pgo-gen "-Cprofile-generate=$floor/target-pgo-gen/raw"
    bin=$floor/target-pgo-gen/release/hyper-floor
fi
export RUST_BACKTRACE=0

raw=$(mktemp -d)
source "$here/upstream.sh"
up=$(free_port) tls_up=$(free_port) port=$(free_port)
t=$raw/tls
upstream_tls "$t" floor_ca || exit 1
start_nginx "$raw" "$up" "$tls_up" "$t"
pid=
trap 'kill $nginx_pid $pid 2>/dev/null || true; rm -rf "$raw"' EXIT
tls=(--tls --ca-cert "$t/ig/ca.pem" --ca-key "$t/ig/ca-key.pem" --upstream-ca "$t/up-ca.pem")

inputs=()
k=0
# run WHAT URL "FLOOR FLAGS" "OHA RUN" ...: one floor process, each OHA RUN (oha's flags) in turn.
run() {
    local what=$1 url=$2 flags=$3 trust=()
    shift 3
    [[ $url == https:* ]] && trust=(--cacert "$t/ig/ca.pem")
    k=$((k + 1))
    echo "floor_pgo.sh: training: $what" >&2
    # shellcheck disable=SC2086 # $flags: the floor's flags, word-split on purpose
    LLVM_PROFILE_FILE="$raw/$k/%m_%p.profraw" "$bin" --listen "127.0.0.1:$port" $flags >/dev/null &
    pid=$!
    local ok=
    for _ in $(seq 300); do
        curl -sf -o /dev/null "${trust[@]}" -x "http://127.0.0.1:$port" "$url" && { ok=1; break; }
        sleep 0.2
    done
    [[ -n "$ok" ]] || { echo "floor_pgo.sh: hyper-floor did not answer" >&2; exit 1; }
    for o in "$@"; do
        # shellcheck disable=SC2086 # $o: oha's flags
        oha --no-tui $o "${trust[@]}" -x "http://127.0.0.1:$port" "$url" >"$raw/oha.out"
        local n=${o##*-n }
        n=${n%% *}
        grep -q "\\[200\\] $n responses" "$raw/oha.out" || {
            echo "floor_pgo.sh: not all $n answered 200 ($o)" >&2; cat "$raw/oha.out" >&2; exit 1; }
    done
    kill "$pid"; wait "$pid" 2>/dev/null || true
    pid=
    "$profdata" merge -o "$raw/$k.profdata" "$raw/$k"/*.profraw
    echo "floor_pgo.sh:   counts: $("$profdata" show "$raw/$k.profdata" | sed -n 's/^Total count: //p')" >&2
    inputs+=("$raw/$k.profdata")
}
run "plain, kept connections" "http://127.0.0.1:$up/small" "" "-c 4 -n 20000" "-c 32 -n 20000"
run "plain, a connection a request" "http://127.0.0.1:$up/small" "" "-c 4 -n 2000 --disable-keepalive"
run "intercepted HTTPS, kept tunnels" "https://127.0.0.1:$tls_up/small" "${tls[*]}" "-c 4 -n 10000" "-c 32 -n 10000"

mkdir -p "$floor/target-pgo"
prof=$floor/target-pgo/floor.profdata
"$profdata" merge --sparse -o "$prof" "${inputs[@]}"
"$profdata" show "$prof" | sed -n 's/^Total functions: /floor_pgo.sh: functions profiled: /p' >&2
echo "floor_pgo.sh: building the floor with the profile (bench/floor/target-pgo)" >&2
rm -rf "$floor/target-pgo/release"
build target-pgo "-Cprofile-use=$prof -Cllvm-args=-no-pgo-warn-mismatch"
echo "floor_pgo.sh: wrote $floor/target-pgo/release/hyper-floor" >&2
