"""A small agent for `intentgate run` tests: makes the calls in a JSON plan through whatever proxy
and CA bundle the environment names (as intentgate run sets them), and prints their statuses.

usage: agent.py PLAN_JSON
PLAN: [{"lib": "requests"|"httpx"|"urllib"|"aiohttp", "method": "GET", "url": "...", "headers": {}},
       {"set_intent": "NAME"}, {"clear_intent": true}, {"touch": "FILE"}, {"sleep_until_file": "FILE"},
       {"admin_lib": "requests"|"httpx"|"aiohttp"|"curl", "method": "PUT", "path": "/v1/intent",
        "body": {...}} (a call to $INTENTGATE_ADMIN_URL with that client, as the environment
       tells it: proxy variables and NO_PROXY), {"unset_no_proxy": true}]
"""
import asyncio
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request


def on_term(signum, frame):
    marker = os.environ.get("AGENT_SIGNAL_FILE")
    if marker:
        with open(marker, "w") as f:
            f.write("TERM")
    sys.exit(7)


def admin(method, path, body=None):
    # The admin address is in NO_PROXY: urllib (like requests) goes there directly.
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(os.environ["INTENTGATE_ADMIN_URL"] + path, data=data, method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def admin_with(step):
    """An admin API call with the client `admin_lib`, honouring the proxy variables and NO_PROXY
    as that client does; its status."""
    lib, method = step["admin_lib"], step["method"]
    url = os.environ["INTENTGATE_ADMIN_URL"] + step["path"]
    body = step.get("body")
    if lib == "requests":
        import requests

        return requests.request(method, url, json=body, timeout=20).status_code
    if lib == "httpx":
        import httpx

        with httpx.Client(timeout=20) as c:
            return c.request(method, url, json=body).status_code
    if lib == "aiohttp":
        return asyncio.run(aiohttp_request({"method": method, "url": url, "json": body}))
    import subprocess

    args = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", method, url]
    if body is not None:
        args[1:1] = ["-H", "content-type: application/json", "-d", json.dumps(body)]
    return int(subprocess.run(args, capture_output=True, text=True, timeout=30).stdout)


async def aiohttp_request(step):
    import aiohttp

    # trust_env: the proxy variables (aiohttp ignores them otherwise); TLS trust comes from
    # SSL_CERT_FILE through Python's default context.
    async with aiohttp.ClientSession(trust_env=True) as session:
        async with session.request(step["method"], step["url"], headers=step.get("headers", {}),
                                   json=step.get("json")) as r:
            await r.read()
            return r.status


def main():
    signal.signal(signal.SIGTERM, on_term)
    plan = json.loads(sys.argv[1])
    out = []
    for step in plan:
        if "set_intent" in step:
            out.append(admin("PUT", "/v1/intent", {"name": step["set_intent"]}))
        elif "clear_intent" in step:
            out.append(admin("DELETE", "/v1/intent"))
        elif "admin_lib" in step:
            out.append(admin_with(step))
        elif "unset_no_proxy" in step:
            os.environ.pop("NO_PROXY", None)
            os.environ.pop("no_proxy", None)
        elif "touch" in step:
            open(step["touch"], "w").close()
        elif "sleep_until_file" in step:
            while not os.path.exists(step["sleep_until_file"]):
                time.sleep(0.05)
        elif step["lib"] == "requests":
            import requests

            r = requests.request(step["method"], step["url"], headers=step.get("headers", {}), timeout=20)
            out.append(r.status_code)
        elif step["lib"] == "urllib":
            req = urllib.request.Request(step["url"], method=step["method"], headers=step.get("headers", {}))
            try:
                with urllib.request.urlopen(req, timeout=20) as r:
                    out.append(r.status)
            except urllib.error.HTTPError as e:
                out.append(e.code)
        elif step["lib"] == "aiohttp":
            out.append(asyncio.run(aiohttp_request(step)))
        else:
            import httpx

            # httpx reads HTTP(S)_PROXY and SSL_CERT_FILE from the environment (trust_env).
            with httpx.Client(timeout=20) as c:
                out.append(c.request(step["method"], step["url"], headers=step.get("headers", {})).status_code)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
