"""A collector for measuring OTLP export (bench/instructions.sh, bench/attest_cpu.sh): accepts
any POST (protobuf or JSON, nothing parsed), reads its body and answers 200 at once, keeping
HTTP/1.1 connections, so the proxy's side is all that is measured. Counts what it took.

    python3 bench/otlp_sink.py [PORT]     # prints the port it listens on, then serves
    ON_YAML="telemetry: {otlp: {endpoint: \"http://127.0.0.1:PORT\"}}" bench/attest_cpu.sh BIN

SIGUSR1 (or exit) prints the requests and bytes taken so far to stderr.
"""
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

taken = {"requests": 0, "bytes": 0}


class Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        self.rfile.read(n)
        taken["requests"] += 1
        taken["bytes"] += n
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def report(*_):
    print(f"otlp_sink: {taken['requests']} requests, {taken['bytes']} bytes", file=sys.stderr, flush=True)


signal.signal(signal.SIGUSR1, report)
server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), Sink)
print(server.server_address[1], flush=True)
try:
    server.serve_forever()
finally:
    report()
