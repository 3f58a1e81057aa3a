"""An OTLP/HTTP receiver for tests/integration/otlp.rs, built on the official OpenTelemetry
protobuf definitions (opentelemetry-proto): every request body must parse as
ExportTraceServiceRequest (/v1/traces) or ExportLogsServiceRequest (/v1/logs), in the encoding
its Content-Type names: `application/x-protobuf` (the generated classes' own parser, which must
consume the whole body, and their encoder, which must write the same bytes back) or `application/json` (OTLP JSON: no unknown
field); else 400. Connections are kept (HTTP/1.1), as a collector keeps them.

    python3 tests/clients/otlp_receiver.py OUT.jsonl     # prints the port it listens on, then serves

Each accepted request is appended to OUT.jsonl as {"path": ..., "encoding": "protobuf"|"json",
"peer_port": <the client's port>, "msg": <the parsed message as protobuf JSON, ids in hex>};
a refused one as {"path": ..., "error": ...}.
"""
import base64
import json
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from google.protobuf.unknown_fields import UnknownFieldSet
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

IDS = ("traceId", "spanId", "parentSpanId")
OUT = sys.argv[1]


def ids(doc, to_proto):
    """OTLP JSON writes ids as lowercase hex; protobuf's JSON mapping as base64."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k in IDS:
                if to_proto:
                    if not re.fullmatch(r"[0-9a-f]{16}|[0-9a-f]{32}", v):
                        raise ValueError(f"{k} {v!r} is not lowercase hex of 8 or 16 bytes")
                    doc[k] = base64.b64encode(bytes.fromhex(v)).decode()
                else:
                    doc[k] = base64.b64decode(v).hex()
            else:
                ids(v, to_proto)
    elif isinstance(doc, list):
        for v in doc:
            ids(v, to_proto)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        entry = {"path": self.path, "peer_port": self.client_address[1]}
        try:
            msg = {"/v1/traces": ExportTraceServiceRequest, "/v1/logs": ExportLogsServiceRequest}[self.path]()
            ct = self.headers.get("Content-Type")
            if ct == "application/x-protobuf":
                entry["encoding"] = "protobuf"
                if msg.ParseFromString(body) != len(body):
                    raise ValueError("the body was not read whole")
                # Nothing the definitions lack, and exactly the bytes their own encoder writes
                # for the message (fields in order, minimal lengths): no unknown field anywhere.
                if len(UnknownFieldSet(msg)) or msg.SerializeToString(deterministic=True) != body:
                    raise ValueError("not the definitions' own encoding of the message")
            elif ct == "application/json":
                entry["encoding"] = "json"
                doc = json.loads(body)
                ids(doc, True)
                json_format.ParseDict(doc, msg)
            else:
                raise ValueError(f"Content-Type {ct!r}")
            out = json_format.MessageToDict(msg)
            ids(out, False)
            entry["msg"] = out
            status = 200
        except Exception as e:  # noqa: BLE001 - every failure is the answer
            entry["error"] = f"{type(e).__name__}: {e}"
            status = 400
        with open(OUT, "a") as f:
            f.write(json.dumps(entry) + "\n")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
