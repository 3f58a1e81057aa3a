"""Drives intentgate with real Python HTTP clients (requests and httpx).

usage: fetch.py LIBRARY PROXY_URL METHOD URL [BODY] [--cacert FILE] [--header K:V ...]
Prints one JSON line: {"status": N, "body": "...", "headers": {...}}.
"""
import json
import sys


def main():
    args = sys.argv[1:]
    cacert = None
    headers = {}
    rest = []
    i = 0
    while i < len(args):
        if args[i] == "--cacert":
            cacert = args[i + 1]
            i += 2
        elif args[i] == "--header":
            k, v = args[i + 1].split(":", 1)
            headers[k.strip()] = v.strip()
            i += 2
        else:
            rest.append(args[i])
            i += 1
    lib, proxy, method, url = rest[:4]
    body = rest[4].encode() if len(rest) > 4 else None
    verify = cacert if cacert else True
    if lib == "requests":
        import requests

        r = requests.request(method, url, data=body, headers=headers, timeout=30,
                             proxies={"http": proxy, "https": proxy}, verify=verify)
        out = {"status": r.status_code, "body": r.text, "headers": dict(r.headers)}
    elif lib == "httpx":
        import httpx

        with httpx.Client(proxy=proxy, verify=verify, timeout=30) as c:
            r = c.request(method, url, content=body, headers=headers)
            out = {"status": r.status_code, "body": r.text, "headers": dict(r.headers)}
    else:
        raise SystemExit(f"unknown library {lib}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
