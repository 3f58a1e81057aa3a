"""A static file server over HTTPS (for git's "dumb" HTTP protocol in the `run` tests).

usage: static_https.py DIR CERT KEY PORT_FILE
Serves DIR on 127.0.0.1:0 with CERT/KEY, writes the port to PORT_FILE, serves until killed.
"""
import functools
import http.server
import os
import ssl
import sys


def main():
    root, cert, key, port_file = sys.argv[1:5]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
    handler.func.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
