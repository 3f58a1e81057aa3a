"""A service-account token issuer that is not intentgate's: keys and tokens made with PyPI
`joserfc`, and an HTTPS server standing in for the API server's discovery endpoints.

usage:
  issuer.py init DIR                     RSA (kid r1) and EC P-256 (kid e1) keys: DIR/keys.json
                                         (private), DIR/jwks.json (public)
  issuer.py mint DIR ALG CLAIMS_JSON     prints a compact JWS of CLAIMS signed with ALG's key
                                         (RS256 or ES256); a header kid is given unless
                                         CLAIMS has "_kid" (the kid to use, or null for none)
  issuer.py serve DIR CERT KEY READY     serves over HTTPS what DIR holds:
                                         /.well-known/openid-configuration -> discovery.json,
                                         /openid/v1/jwks -> jwks.json, /version -> version.json;
                                         when DIR/bearer exists, only to that bearer token (401
                                         otherwise); every request line and whether a token came
                                         is appended to DIR/requests.log; the bound port goes to
                                         READY once listening
"""
import http.server
import json
import os
import ssl
import sys

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey


def init(d):
    rsa = RSAKey.generate_key(2048, parameters={"kid": "r1", "use": "sig", "alg": "RS256"})
    ec = ECKey.generate_key("P-256", parameters={"kid": "e1", "use": "sig", "alg": "ES256"})
    keys = KeySet([rsa, ec])
    with open(os.path.join(d, "keys.json"), "w") as f:
        json.dump(keys.as_dict(private=True), f)
    with open(os.path.join(d, "jwks.json"), "w") as f:
        json.dump(keys.as_dict(private=False), f)


def mint(d, alg, claims):
    with open(os.path.join(d, "keys.json")) as f:
        keys = KeySet.import_key_set(json.load(f))
    kid = "r1" if alg == "RS256" else "e1"
    key = keys.get_by_kid(kid)
    header = {"alg": alg}
    wanted = claims.pop("_kid", kid)
    if wanted is not None:
        header["kid"] = wanted
    print(jwt.encode(header, claims, key))


def serve(d, cert, key, ready):
    files = {
        "/.well-known/openid-configuration": "discovery.json",
        "/openid/v1/jwks": "jwks.json",
        "/version": "version.json",
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            auth = self.headers.get("Authorization")
            with open(os.path.join(d, "requests.log"), "a") as log:
                log.write("%s %s\n" % (self.path, "token" if auth else "no-token"))
            status, body = 404, b"{}"
            bearer = os.path.join(d, "bearer")
            if os.path.exists(bearer) and auth != "Bearer " + open(bearer).read().strip():
                status, body = 401, b'{"kind": "Status", "code": 401}'
            elif self.path in files and os.path.exists(os.path.join(d, files[self.path])):
                status = 200
                with open(os.path.join(d, files[self.path]), "rb") as f:
                    body = f.read()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with open(ready + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(ready + ".tmp", ready)
    server.serve_forever()


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "init":
        init(sys.argv[2])
    elif cmd == "mint":
        mint(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
    elif cmd == "serve":
        serve(*sys.argv[2:6])
    else:
        sys.exit("unknown command " + cmd)
