#!/usr/bin/env bash
# What counting an LLM response's usage costs (issue 24's target: <= 2 % CPU on a streamed
# response), one command:
#   bench/llm_usage_cpu.sh BIN [N] [C] [REPS] [EVENTS]
# nginx answers a streamed OpenAI chat completion of EVENTS (default 200) `chat.completion.chunk`
# events, then the usage event and `[DONE]` (about 40 KB), to a POST of a chat request with
# `stream: true`. bench/attest_cpu.sh measures the proxy's CPU per response (N responses over C
# connections, REPS runs each, medians): "off" = the same bytes through a plain rule, "on" =
# through a `protocol: llm` rule (request read, model checked, every event scanned for usage,
# tokens counted). Then bench/instructions.sh counts user-space instructions per response for
# both. Needs nginx, oha, valgrind. Everything runs on 127.0.0.1.
# VARIANT_BIN=BIN2 measures the usage counting alone instead: BIN2 is BIN built without it
# (bench/variants/no-usage.patch), both under the same `protocol: llm` rule, same run ("off" =
# BIN2, "on" = BIN); the counting's share is printed as % of BIN2's instructions per response.
# EVENTS (or the 5th argument) sets the stream's length; SKIP_CPU=1 skips the CPU-time runs and
# counts instructions only; INSN_N (default 1000) is how many responses callgrind counts.
# For the CPU (kernel included) with a confidence interval, and a stream in one frame per event:
# bench/llm_usage_ab.py (paired A/B of BIN and BIN2 run side by side).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 1 ]] || { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
bin=$1 events=${5:-${EVENTS:-200}} variant=${VARIANT_BIN:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/files/v1/chat"
python3 - "$events" >"$tmp/files/v1/chat/completions" <<'PY'
import json, sys
n = int(sys.argv[1])
base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1760000000,
        "model": "gpt-4o-mini", "system_fingerprint": "fp_bench"}
def event(choices, **extra):
    sys.stdout.write("data: " + json.dumps(dict(base, choices=choices, **extra)) + "\n\n")
event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
for i in range(n):
    event([{"index": 0, "delta": {"content": f" word{i}"}, "logprobs": None, "finish_reason": None}])
event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
event([], usage={"prompt_tokens": 42, "completion_tokens": n, "total_tokens": 42 + n})
sys.stdout.write("data: [DONE]\n\n")
PY
printf '%s' '{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"max_tokens":400,"messages":[{"role":"user","content":"Summarise the ticket."}]}' >"$tmp/req.json"
chmod -R a+rX "$tmp"  # nginx workers read the files as an unprivileged user
export FILES_DIR=$tmp/files METHOD=POST BODY_FILE=$tmp/req.json CT=application/json
export URL_PATH=/files/v1/chat/completions
llm_rule='protocol: llm, llm: {models: ["gpt-4o-*"]}'
size=$(wc -c <"$tmp/files/v1/chat/completions")
insn() { # RULE_KEYS BIN... -> one line per BIN from bench/instructions.sh
    echo "rule: {hosts: [127.0.0.1]$1}" >&2
    POLICY_YAML='policy: {}' EXTRA_YAML="intent: bench
intents: {bench: {allow: [{hosts: [127.0.0.1], ports: [@UP@]$1}]}}" bench/instructions.sh -n "${INSN_N:-1000}" "${@:2}" || true  # it ends with status 1
}
if [[ -n "$variant" ]]; then
    if [[ -z "${SKIP_CPU:-}" ]]; then
        echo "== proxy CPU per streamed response ($events events, $size bytes), protocol: llm: $variant (off, no usage counting) vs $bin (on)"
        OFF_BIN=$variant OFF_YAML='mcp: {detect: rules}' OFF_RULE=$llm_rule \
            ON_YAML='mcp: {detect: rules}' ON_RULE=$llm_rule bench/attest_cpu.sh "$bin" "${2:-5000}" "${3:-8}" "${4:-3}"
    fi
    echo "== user-space instructions per streamed response ($events events, $size bytes), same run"
    out=$(insn ", $llm_rule" "$variant" "$bin")
    echo "$out"
    awk '{n[NR] = $2} END {printf "usage counting: %d instructions per response, %.2f %% of the response without it\n", n[2] - n[1], (n[2] - n[1]) * 100 / n[1]}' <<<"$out"
    exit 0
fi
if [[ -z "${SKIP_CPU:-}" ]]; then
    echo "== proxy CPU per streamed response ($events events, $size bytes): plain rule (off) vs protocol: llm (on)"
    ON_YAML='mcp: {detect: rules}' ON_RULE=$llm_rule bench/attest_cpu.sh "$bin" "${2:-5000}" "${3:-8}" "${4:-3}"
fi
echo "== user-space instructions per streamed response ($events events, $size bytes)"
for rule in "" ", $llm_rule"; do  # KEEP_CALLGRIND=P keeps P.plain.BIN and P.llm.BIN
    KEEP_CALLGRIND=${KEEP_CALLGRIND:+$KEEP_CALLGRIND.$([[ -z $rule ]] && echo plain || echo llm)} \
        insn "$rule" "$bin"
done
