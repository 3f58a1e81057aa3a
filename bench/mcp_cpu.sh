#!/usr/bin/env bash
# What an MCP `tools/call` decision costs over a plain allowed POST of the same body (issue 24's
# target: <= 30 µs CPU end to end), one command:
#   bench/mcp_cpu.sh BIN [N] [C] [REPS]
# 1. proxy CPU per request (bench/attest_cpu.sh, N requests over C connections, REPS runs each,
#    medians): "off" = the POST under a plain rule, "on" = the same POST under a `protocol: mcp`
#    rule with `mcp: {tools: [read_ticket]}` (read as JSON-RPC, its tool matched);
# 2. user-space instructions per request (bench/instructions.sh, callgrind, deterministic) for
#    the same two rules. Needs nginx, oha, valgrind. Everything runs on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 1 ]] || { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
bin=$1; shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '%s' '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"read_ticket","arguments":{"ticket_id":"T-1234","fields":["title","status","assignee","body"]}}}' >"$tmp/call.json"
export METHOD=POST BODY_FILE=$tmp/call.json CT=application/json
mcp_rule='protocol: mcp, mcp: {tools: [read_ticket]}'
echo "== proxy CPU per request: plain POST (off) vs MCP tools/call (on), $(wc -c <"$tmp/call.json") body bytes"
ON_YAML='mcp: {detect: rules}' ON_RULE=$mcp_rule bench/attest_cpu.sh "$bin" "$@"
echo "== user-space instructions per request"
for rule in "" ", $mcp_rule"; do
    echo "rule: {hosts: [127.0.0.1]${rule}}"
    POLICY_YAML='policy: {}' EXTRA_YAML="intent: bench
intents: {bench: {allow: [{hosts: [127.0.0.1], ports: [@UP@]$rule}]}}" bench/instructions.sh -n "${INSN_N:-2000}" "$bin" || true  # it ends with status 1
done
