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
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 1 ]] || { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
bin=$1 events=${5:-200}
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
echo "== proxy CPU per streamed response ($events events, $(wc -c <"$tmp/files/v1/chat/completions") bytes): plain rule (off) vs protocol: llm (on)"
ON_YAML='mcp: {detect: rules}' ON_RULE=$llm_rule bench/attest_cpu.sh "$bin" "${2:-5000}" "${3:-8}" "${4:-3}"
echo "== user-space instructions per streamed response"
for rule in "" ", $llm_rule"; do
    echo "rule: {hosts: [127.0.0.1]${rule}}"
    POLICY_YAML='policy: {}' EXTRA_YAML="intent: bench
intents: {bench: {allow: [{hosts: [127.0.0.1], ports: [@UP@]$rule}]}}" bench/instructions.sh -n "${INSN_N:-1000}" "$bin" || true  # it ends with status 1
done
