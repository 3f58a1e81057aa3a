"""Drives intentgate's LLM API awareness with the real `openai` and `anthropic` SDKs (issue 24).

usage: llm_sdk.py SDK BASE_URL CA_FILE PROXY_URL CONTROL_URL
Makes, through the proxy (the SDK's http_client, trusting CA_FILE): an allowed call, an allowed
streamed call, a call naming a model the intent does not allow, and one asking for more tokens
than it allows. The streamed call reads its first event, then tells the upstream (GET
CONTROL_URL/go, not through the proxy) to send the rest. Prints one JSON line:
{"plain": {"text", "usage"}, "stream": {"first", "rest", "usage"},
 "model": REFUSAL, "tokens": REFUSAL} with REFUSAL = {"class", "status", "message", "body"}.
"""
import json
import sys
import urllib.request


def refusal(mod, call):
    try:
        call()
        return None
    except mod.APIStatusError as e:
        return {"class": type(e).__name__, "status": e.status_code, "message": str(e),
                "body": e.response.json()}


def go(control):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    opener.open(control + "/go", timeout=30).read()


def openai_calls(mod, c, control):
    msgs = [{"role": "user", "content": "hi"}]
    r = c.chat.completions.create(model="gpt-4o-mini", max_tokens=50, messages=msgs)
    out = {"plain": {"text": r.choices[0].message.content, "usage": r.usage.model_dump()}}
    s = c.chat.completions.create(model="gpt-4o-mini", max_tokens=50, messages=msgs, stream=True,
                                  stream_options={"include_usage": True})
    it = iter(s)
    first = next(it).choices[0].delta.content
    go(control)
    rest = list(it)
    out["stream"] = {"first": first,
                     "rest": "".join(ch.choices[0].delta.content or "" for ch in rest if ch.choices),
                     "usage": rest[-1].usage.model_dump()}
    out["model"] = refusal(mod, lambda: c.chat.completions.create(
        model="gpt-4o", max_tokens=50, messages=msgs))
    out["tokens"] = refusal(mod, lambda: c.chat.completions.create(
        model="gpt-4o-mini", max_tokens=4000, messages=msgs))
    return out


def anthropic_calls(mod, c, control):
    msgs = [{"role": "user", "content": "hi"}]
    model = "claude-3-5-haiku-20241022"
    r = c.messages.create(model=model, max_tokens=50, messages=msgs)
    out = {"plain": {"text": r.content[0].text, "usage": r.usage.model_dump()}}
    s = c.messages.create(model=model, max_tokens=50, messages=msgs, stream=True)
    it = iter(s)
    first = next(it).type
    go(control)
    rest = list(it)
    out["stream"] = {"first": first,
                     "rest": "".join(e.delta.text for e in rest if e.type == "content_block_delta"),
                     "usage": [e.usage.model_dump() for e in rest if e.type == "message_delta"][0]}
    out["model"] = refusal(mod, lambda: c.messages.create(
        model="claude-opus-4-1", max_tokens=50, messages=msgs))
    out["tokens"] = refusal(mod, lambda: c.messages.create(
        model=model, max_tokens=4000, messages=msgs))
    return out


def main():
    sdk, base_url, ca, proxy, control = sys.argv[1:6]
    mod = __import__(sdk)
    cls = mod.OpenAI if sdk == "openai" else mod.Anthropic
    c = cls(base_url=base_url, api_key="sk-test", max_retries=0, timeout=60,
            http_client=mod.DefaultHttpxClient(proxy=proxy, verify=ca))
    calls = openai_calls if sdk == "openai" else anthropic_calls
    print(json.dumps(calls(mod, c, control)))


if __name__ == "__main__":
    main()
