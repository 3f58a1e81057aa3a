"""An upstream that checks each request's attestation (the Txn-Token header) with PyPI PyJWT,
against the JWK Set it fetches from intentgate's admin API, including the request binding.

usage: attest_upstream.py JWKS_URL_FILE ISSUER PORT_FILE
(JWKS_URL_FILE holds the URL; it is read at each request, so it can be written after start.)
Serves on 127.0.0.1:0, writes the port to PORT_FILE. Answers 200 {"claims": …, "token": …} when
the attestation verifies (signature, iss, aud = the host, exp, req = this request), else 401
{"error": …}.
"""
import base64
import hashlib
import json
import os
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

JWKS_URL_FILE, ISSUER, PORT_FILE = sys.argv[1:4]
# The JWK Set is fetched directly, never through a proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def binding(method, authority, path_and_query):
    digest = hashlib.sha256(f"{method}\n{authority}\n{path_and_query}".encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def check(method, host, path, token):
    if not token:
        raise ValueError("no Txn-Token header")
    url = open(JWKS_URL_FILE).read().strip()
    keys = jwt.PyJWKSet.from_json(OPENER.open(url).read().decode())
    kid = jwt.get_unverified_header(token).get("kid")
    key = next(k for k in keys.keys if k.key_id == kid)
    claims = jwt.decode(token, key.key, algorithms=["EdDSA"], issuer=ISSUER,
                        audience=host.rsplit(":", 1)[0],
                        options={"require": ["exp", "iat", "req"]})
    if claims["req"] != binding(method, host, path):
        raise ValueError("the request binding (req) does not match this request")
    return claims


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self):
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        token = self.headers.get("txn-token")
        try:
            body = {"claims": check(self.command, self.headers.get("host", ""), self.path, token),
                    "token": token}
            status = 200
        except Exception as e:  # every failure is a refusal the test reads
            body, status = {"error": f"{type(e).__name__}: {e}"}, 401
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = answer


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(PORT_FILE + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(PORT_FILE + ".tmp", PORT_FILE)
    server.serve_forever()


if __name__ == "__main__":
    main()
