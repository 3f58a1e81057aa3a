"""Intent tokens and attestations checked with PyPI PyJWT (code we did not write).

  pyjwt_tokens.py verify JWKS_FILE TOKEN ISSUER AUDIENCE [METHOD AUTHORITY PATH_AND_QUERY]
      verifies TOKEN against the JWK Set (its kid); with the request, also the `req` binding
      (base64url(SHA-256(method \\n authority \\n path?query))). Prints the claims; exit 1 refused.
  pyjwt_tokens.py keygen ALG DIR
      makes a key (EdDSA, ES256 or RS256): DIR/key.pem (PKCS#8) and DIR/jwks.json.
  pyjwt_tokens.py mint DIR ALG CLAIMS_JSON
      signs CLAIMS_JSON with DIR/key.pem, the kid from DIR/jwks.json.
"""
import base64
import hashlib
import json
import sys

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


def binding(method, authority, pq):
    digest = hashlib.sha256(f"{method}\n{authority}\n{pq}".encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def verify(jwks_file, token, issuer, audience, request):
    keys = jwt.PyJWKSet.from_json(open(jwks_file).read())
    kid = jwt.get_unverified_header(token).get("kid")
    key = next(k for k in keys.keys if k.key_id == kid)
    try:
        claims = jwt.decode(token, key.key, algorithms=["EdDSA", "ES256", "RS256"],
                            issuer=issuer, audience=audience,
                            options={"require": ["exp", "iat"]})
    except jwt.PyJWTError as e:
        print(f"refused: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    if request and claims.get("req") != binding(*request):
        print("refused: the request binding does not match", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(claims))


def keygen(alg, out):
    if alg == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
        jwk = jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    elif alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": f"py-{alg.lower()}", "alg": alg, "use": "sig"})
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    open(f"{out}/key.pem", "wb").write(pem)
    json.dump({"keys": [jwk]}, open(f"{out}/jwks.json", "w"))


def mint(out, alg, claims):
    kid = json.load(open(f"{out}/jwks.json"))["keys"][0]["kid"]
    key = open(f"{out}/key.pem", "rb").read()
    print(jwt.encode(json.loads(claims), key, algorithm=alg, headers={"kid": kid}))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "verify":
        verify(args[0], args[1], args[2], args[3], args[4:7] if len(args) > 4 else None)
    elif cmd == "keygen":
        keygen(args[0], args[1])
    elif cmd == "mint":
        mint(args[0], args[1], args[2])
