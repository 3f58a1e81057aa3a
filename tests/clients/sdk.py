"""Drives intentgate with the real LLM SDKs (openai, anthropic) as an agent uses them.

usage: sdk.py SDK BASE_URL CA_FILE (PROXY_URL | --env)
SDK is `openai` or `anthropic`. With PROXY_URL the client gets an http_client with that proxy and
CA_FILE as its trust; with --env it reads HTTPS_PROXY and SSL_CERT_FILE from the environment (set
by the caller), as under `intentgate run`. Makes one call intentgate allows (the models list, read
raw) and one it refuses (a chat completion / a message), and prints one JSON line:
{"allowed": {"status", "seen" (what the upstream saw)}, "refused": {"class", "status", "message", "type", "code",
"api_message", "body"}}.
"""
import json
import sys


def client(sdk, base_url, ca, proxy):
    mod = __import__(sdk)
    cls = mod.OpenAI if sdk == "openai" else mod.Anthropic
    kwargs = {"base_url": base_url, "api_key": "sk-test", "max_retries": 0, "timeout": 30}
    if proxy != "--env":
        kwargs["http_client"] = mod.DefaultHttpxClient(proxy=proxy, verify=ca)
    return mod, cls(**kwargs)


def main():
    sdk, base_url, ca, proxy = sys.argv[1:5]
    mod, c = client(sdk, base_url, ca, proxy)
    raw = c.models.with_raw_response.list()
    out = {"allowed": {"status": raw.status_code, "seen": raw.http_response.json()}}
    try:
        if sdk == "openai":
            c.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "hi"}])
        else:
            c.messages.create(model="claude-test", max_tokens=16,
                              messages=[{"role": "user", "content": "hi"}])
        out["refused"] = None
    except mod.APIStatusError as e:
        out["refused"] = {
            "class": type(e).__name__,
            "status": e.status_code,
            "message": str(e),
            "type": getattr(e, "type", None),
            "code": getattr(e, "code", None),
            "api_message": getattr(e, "api_message", None),
            "body": e.response.json(),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
