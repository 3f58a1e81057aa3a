"""Upstream servers for the transparent-mode test, run inside the test's upstream network namespace:
HTTP on port 80 (a WebSocket echo for upgrade requests), HTTPS on 443 (CERT/KEY), and servers that speak first (a "220 hello" banner, as
SMTP does) on every BANNER_PORT (IPv4 and IPv6). Every connection and request is logged as one JSON line to LOG,
so the test can prove what arrived (with which tags, on which local address) and what never did.

usage: transparent_upstream.py LOG READY CERT KEY BANNER_PORT...
Writes READY once every socket is listening; serves until killed.
"""
import base64
import hashlib
import http.server
import json
import os
import socket
import ssl
import sys
import threading

LOCK = threading.Lock()


def log(log_path, **entry):
    with LOCK, open(log_path, "a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()


def http_server(log_path, port, context):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            local = self.connection.getsockname()
            if self.headers.get("Upgrade", "").lower() == "websocket":
                return self.websocket(local)
            log(log_path, kind="https" if context else "http", local=local[0], port=local[1],
                method=self.command, path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()})
            body = json.dumps({"path": self.path, "local": local[0]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def websocket(self, local):
            """RFC 6455 handshake, then echo one text frame back unmasked."""
            log(log_path, kind="ws", local=local[0], port=local[1], path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()})
            key = self.headers.get("Sec-WebSocket-Key", "")
            accept = base64.b64encode(hashlib.sha1(
                (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.end_headers()
            self.wfile.flush()
            head = self.rfile.read(2)
            n = head[1] & 0x7F
            mask = self.rfile.read(4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(n)))
            self.wfile.write(bytes([0x81, len(data)]) + data)
            self.wfile.flush()
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)
    if context:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def banner_server(log_path, port, family):
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(("::", port))
    else:
        sock.bind(("0.0.0.0", port))
    sock.listen(16)

    def serve(conn, peer):
        with conn:
            local = conn.getsockname()
            log(log_path, kind="tcp", local=local[0], port=local[1], peer=peer[0])
            conn.sendall(b"220 hello\r\n")
            conn.settimeout(5)
            try:
                line = conn.recv(1024)
                if line:
                    conn.sendall(b"250 " + line)
            except OSError:
                pass

    def accept():
        while True:
            conn, peer = sock.accept()
            threading.Thread(target=serve, args=(conn, peer), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def main():
    log_path, ready, cert, key = sys.argv[1:5]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    http_server(log_path, 80, None)
    http_server(log_path, 443, context)
    for port in sys.argv[5:]:
        banner_server(log_path, int(port), socket.AF_INET)
        banner_server(log_path, int(port), socket.AF_INET6)
    with open(ready + ".tmp", "w") as f:
        f.write("ready")
    os.rename(ready + ".tmp", ready)
    threading.Event().wait()


if __name__ == "__main__":
    main()
