#!/usr/bin/env bash
# End-to-end load benchmark: direct vs through intentgate (and optional peers), in one run.
#
#   bench/load.sh                                   # direct + intentgate, 3 interleaved reps (~3-4 min)
#   bench/load.sh --reps 5 --peers squid,tinyproxy  # + peer proxies from apt (mitmproxy: PyPI)
#   bench/load.sh --variant policy=FILE.yaml        # + intentgate with FILE's sections added to the config
#   bench/load.sh --https                           # + direct-tls and intercepted intentgate-tls (needs openssl)
#   bench/load.sh --https --peers haproxy           # + haproxy as a reverse-proxy reference, plain and TLS
#   bench/load.sh --https --peers hyper-floor       # + the stack's floor (bench/floor, built here), plain and TLS
#   bench/load.sh --help                            # every option
#
# Installs what is missing (apt: nginx-light and the requested peers; mitmproxy in a venv under
# ~/.cache/intentgate-bench; `cargo install oha --locked`),
# builds `cargo build --release`, then runs bench/load.py. Results: stdout and bench/results/<stamp>.md.
# Debian/Ubuntu, run as root (or with the tools already installed).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"

peers="" ; perf=0 ; no_build=0 ; no_install=0 ; bin_given=0 ; oha_given=0
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    -h|--help) exec python3 "$HERE/load.py" --help ;;
    --peers) peers="${args[$((i + 1))]:-}" ;;
    --peers=*) peers="${args[$i]#--peers=}" ;;
    --no-build) no_build=1 ;;
    --perf) perf=1 ;;
    --no-install) no_install=1 ;;
    --bin|--bin=*) bin_given=1 ;;
    --oha|--oha=*) oha_given=1 ;;
  esac
done

need=()
command -v nginx >/dev/null || need+=(nginx-light)
[ "$perf" = 1 ] && ! command -v perf >/dev/null && need+=(linux-perf)
IFS=, read -r -a peer_list <<< "$peers"
# mitmproxy comes from PyPI, in a venv of its own (its dependencies are pinned tightly).
MITM_VENV="${XDG_CACHE_HOME:-$HOME/.cache}/intentgate-bench/mitmproxy-venv"
for p in "${peer_list[@]}"; do
  if [ "$p" = mitmproxy ]; then
    export PATH="$MITM_VENV/bin:$PATH"
    if ! command -v mitmdump >/dev/null; then
      if [ "$no_install" = 1 ]; then echo "load.sh: mitmdump missing (pip install mitmproxy)" >&2; exit 2; fi
      echo "load.sh: installing mitmproxy into $MITM_VENV" >&2
      python3 -m venv "$MITM_VENV" && "$MITM_VENV/bin/pip" install -q mitmproxy
    fi
    continue
  fi
  # hyper-floor(-pgo) is built from bench/floor (by load.py, when its binary is missing), not installed.
  case "$p" in hyper-floor | hyper-floor-pgo) continue ;; esac
  [ -n "$p" ] && ! command -v "$p" >/dev/null && need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$no_install" = 1 ]; then
    echo "load.sh: missing ${need[*]} (apt-get install -y ${need[*]})" >&2; exit 2
  fi
  echo "load.sh: installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  # apt does not start these services here; load.py starts its own instances with its own configs
fi

extra=()
if [ "$oha_given" = 0 ]; then
  OHA="${OHA:-$(command -v oha || echo "${CARGO_HOME:-$HOME/.cargo}/bin/oha")}"
  if [ ! -x "$OHA" ]; then
    if [ "$no_install" = 1 ]; then echo "load.sh: oha missing (cargo install oha --locked)" >&2; exit 2; fi
    echo "load.sh: installing oha (cargo install oha --locked; several minutes on 2 cores)" >&2
    nice -n 10 cargo install oha --locked
    OHA="${CARGO_HOME:-$HOME/.cargo}/bin/oha"
  fi
  extra+=(--oha "$OHA")
fi

if [ "$bin_given" = 0 ]; then
  if [ "$no_build" = 0 ]; then
    echo "load.sh: cargo build --release" >&2
    (cd "$ROOT" && nice -n 10 cargo build --release --quiet)
  fi
  extra+=(--bin "${CARGO_TARGET_DIR:-$ROOT/target}/release/intentgate")
fi

exec python3 "$HERE/load.py" "${extra[@]}" "$@"
