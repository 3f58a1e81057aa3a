"""A bundle server that is not intentgate's: answers every GET with the bytes of SERVED (whatever
the test put there, e.g. another namespace's bundle) over HTTPS, with an ETag of its SHA-256 and
304 on If-None-Match. Lets a test prove what a sidecar refuses, whoever serves it.

usage: bundle_server.py SERVED CERT KEY READY
Writes the bound port to READY once listening; serves until killed.
"""
import hashlib
import os
import http.server
import ssl
import sys

def main():
    served, cert, key, ready = sys.argv[1:5]

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            with open(served, "rb") as f:
                body = f.read()
            etag = '"%s"' % hashlib.sha256(body).hexdigest()
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("ETag", etag)
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
    main()
