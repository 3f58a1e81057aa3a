#!/usr/bin/env bash
# Regenerates layout/link.order, the order in which the linker lays out the functions of the
# `intentgate` binary (build.rs passes it to lld as --symbol-ordering-file), or checks it.
#
#   bench/order.sh [BIN]          rewrite layout/link.order from a run of BIN
#   bench/order.sh --check [BIN]  how many of its names BIN still defines (nothing written)
#
# BIN defaults to target/release/intentgate. The functions that start-up, an idle sidecar and its
# probes run come first, then those that serve plain HTTP, then intercepted HTTPS, then loading a
# 1,000-intent catalog: packed, the kernel maps ~2 MiB of code instead of ~7 MiB spread over the
# whole 11 MB `.text` (it maps 64 KiB around every page touched), which is most of the idle RSS
# (docs/performance.md). The names are the
# mangled symbols of this toolchain and Cargo.lock, the same for a checkout at any path (the
# release profile has no debug info, whose paths would change ThinLTO's `.llvm.<hash>` suffixes)
# and for the dist profile; stale names are skipped by the linker, so a stale file costs memory,
# never correctness. Regenerate it as a release step (after a toolchain or dependency update, or
# when `--check` reports under ~90 %), not in everyday commits. Needs valgrind, nginx, curl and
# openssl; all on 127.0.0.1.
set -euo pipefail
export LC_ALL=C

here=$(cd "$(dirname "$0")" && pwd)
out="$here/../layout/link.order"
check=0
if [[ "${1:-}" == "--check" ]]; then check=1; shift; fi
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
fi
bin=$(realpath "${1:-$here/../target/release/intentgate}")
[[ -x "$bin" ]] || { echo "order.sh: no binary at $bin (cargo build --release)" >&2; exit 2; }
defined() { nm --defined-only "$bin" | awk '$2 ~ /^[tTwW]$/ {print $3}' | sort -u; }

if [[ $check -eq 1 ]]; then
    total=$(grep -cv '^#' "$out")
    found=$(comm -12 <(grep -v '^#' "$out" | sort -u) <(defined) | wc -l)
    echo "layout/link.order: $found of $total names defined in $bin ($((100 * found / total)) %)"
    exit 0
fi
for tool in valgrind nginx curl nm openssl; do
    command -v "$tool" >/dev/null || { echo "order.sh: $tool is missing" >&2; exit 2; }
done

tmp=$(mktemp -d)
source "$here/upstream.sh"
up=$(free_port) up_tls=$(free_port)
# The TLS upstream (a throwaway CA, a leaf for 127.0.0.1) and intentgate's interception CA.
upstream_tls "$tmp/tls" "$bin" || exit 1
start_nginx "$tmp" "$up" "$up_tls" "$tmp/tls"
trap 'kill $nginx_pid 2>/dev/null || true; pkill -f "$tmp/" 2>/dev/null || true; rm -rf "$tmp"' EXIT

# run NAME ARGS...: BIN under callgrind until ready; probes, requests, SIGTERM; its function names.
run() {
    local name=$1 port admin vg
    shift
    port=$(free_port) admin=$(free_port)
    RUST_BACKTRACE=0 valgrind --tool=callgrind --demangle=no \
        --callgrind-out-file="$tmp/cg.$name" "$bin" serve --listen "127.0.0.1:$port" \
        --admin "127.0.0.1:$admin" --ready-file "$tmp/ready.$name" "$@" >/dev/null 2>"$tmp/vg.$name" &
    vg=$!
    for _ in $(seq 600); do [[ -s "$tmp/ready.$name" ]] && break; sleep 0.1; done
    [[ -s "$tmp/ready.$name" ]] || { echo "order.sh: $name never became ready" >&2; cat "$tmp/vg.$name" >&2; exit 1; }
    for path in healthz readyz metrics v1/policy; do
        curl -s "http://127.0.0.1:$admin/$path" >/dev/null
    done
    for _ in $(seq 20); do
        curl -s -x "http://127.0.0.1:$port" "http://127.0.0.1:$up/small" \
            "http://127.0.0.1:$up/other?q=1" >/dev/null
    done
    if [[ $name == https ]]; then
        for v in --http1.1 --http2; do
            curl -sf "$v" --cacert "$tmp/tls/ig/ca.pem" -x "http://127.0.0.1:$port" \
                "https://127.0.0.1:$up_tls/small" "https://127.0.0.1:$up_tls/other" >/dev/null ||
                { echo "order.sh: no answer through the intercepted tunnel" >&2; exit 1; }
        done
    fi
    kill -TERM "$vg"
    wait "$vg" 2>/dev/null || true
    sed -n 's/^c\{0,1\}fn=([0-9]*) //p' "$tmp/cg.$name" | sort -u
}

# 1. The embedded default: start-up, idle, probes, denied requests (loopback is not egress).
run idle >"$tmp/idle.names"
# 2. Policy off, loopback allowed: the plain-HTTP forwarding path.
cat >"$tmp/off.yaml" <<EOF
audit: {path: "off"}
agent: {id: bench-agent, owner: bench}
egress: {allow_cidrs: ["127.0.0.0/8"]}
policy: {builtin: false, paths: ["$here/variants/allow-all.rego"]}
EOF
run serving --config "$tmp/off.yaml" >"$tmp/serving.names"
# 3. Intercepted HTTPS (HTTP/1.1 and HTTP/2 in the tunnel), TLS re-originated to nginx.
sed "s|^egress: .*|egress: {allow_cidrs: [\"127.0.0.0/8\"], connect_ports: [$up_tls]}|" \
    "$tmp/off.yaml" >"$tmp/tls.yaml"
echo "tls: {ca_cert: \"$tmp/tls/ig/ca.pem\", ca_key: \"$tmp/tls/ig/ca-key.pem\", upstream_ca: \"$tmp/tls/up-ca.pem\", intercept: all}" \
    >>"$tmp/tls.yaml"
run https --config "$tmp/tls.yaml" >"$tmp/https.names"
# 4. A 1,000-intent catalog (bench/catalog.py): the large-document reader and the catalog's
#    compiler, so a platform team's catalog does not spread start-up over the whole `.text`.
python3 "$here/catalog.py" 1000 | sed "s/@UPSTREAM_PORT@/$up/" >"$tmp/catalog.yaml"
run catalog --config "$tmp/catalog.yaml" >"$tmp/catalog.names"

defined >"$tmp/defined"
comm -12 "$tmp/idle.names" "$tmp/defined" >"$tmp/first"
comm -12 "$tmp/serving.names" "$tmp/defined" | comm -23 - "$tmp/first" >"$tmp/second"
sort -u "$tmp/first" "$tmp/second" | comm -13 - "$tmp/https.names" | comm -12 - "$tmp/defined" >"$tmp/third"
sort -u "$tmp/first" "$tmp/second" "$tmp/third" | comm -13 - "$tmp/catalog.names" |
    comm -12 - "$tmp/defined" >"$tmp/fourth"
{
    echo "# Function layout for the intentgate binary: written by bench/order.sh, read by build.rs."
    cat "$tmp/first" "$tmp/second" "$tmp/third" "$tmp/fourth"
} >"$out"
echo "order.sh: wrote $(grep -cv '^#' "$out") names to layout/link.order"
