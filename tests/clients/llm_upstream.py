"""A local HTTPS upstream that speaks the OpenAI, Anthropic and Gemini wire formats (issue 24 tests).

usage: llm_upstream.py CERT_PEM KEY_PEM
Serves HTTPS on 127.0.0.1 (an ephemeral port) and a plain-HTTP control port, and prints one line
`{"api": PORT, "control": PORT}`. API calls, streamed or not, answer with fixed token usage:
  OpenAI  /v1/chat/completions  prompt 11, completion 7 (streamed: the usage chunk only with
                                stream_options.include_usage)
  Anthropic /v1/messages        input 25, output 15 (streamed: message_start, then message_delta)
  Gemini  models/M:generateContent, :streamGenerateContent?alt=sse   prompt 4, candidates 10
A streamed answer sends its first event, then waits until GET /go on the control port (up to 60 s)
before it sends the rest: a client that saw the first event while the upstream still held the
last proves the stream was not held back on the way. Control: GET /go, GET /calls (the calls
received, with `released`: whether /go came while the stream waited).
"""
import json
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GO = threading.Event()
CALLS = []
LOCK = threading.Lock()


def sse(data, event=None):
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


class Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(n)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        path = self.path.split("?")[0]
        call = {"path": path, "model": body.get("model"), "released": None}
        with LOCK:
            CALLS.append(call)
        if path.endswith("/chat/completions"):
            self.openai(body, call)
        elif path.endswith("/messages"):
            self.anthropic(body, call)
        elif ":generateContent" in path or ":streamGenerateContent" in path:
            self.gemini(path, call)
        else:
            self.send_json(404, {"error": {"message": "no such call"}})

    def send_json(self, status, doc):
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def stream(self, first, rest, call):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

        def chunk(b):
            self.wfile.write(f"{len(b):x}\r\n".encode() + b + b"\r\n")
            self.wfile.flush()

        chunk(first)
        call["released"] = GO.wait(60)
        GO.clear()
        for e in rest:
            chunk(e)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def openai(self, body, call):
        model = body.get("model")
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        if not body.get("stream"):
            self.send_json(200, {
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "Hello"}}],
                "usage": usage})
            return
        with_usage = (body.get("stream_options") or {}).get("include_usage")

        def chunk(delta, finish=None, choices=True):
            c = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                 "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
                 if choices else []}
            if with_usage:
                c["usage"] = None
            return c

        last = chunk({}, choices=False)
        last["usage"] = usage
        rest = [sse(chunk({"content": "lo"}, "stop"))]
        if with_usage:
            rest.append(sse(last))
        rest.append(b"data: [DONE]\n\n")
        self.stream(sse(chunk({"role": "assistant", "content": "Hel"})), rest, call)

    def anthropic(self, body, call):
        model = body.get("model")
        msg = {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": 25, "output_tokens": 1}}
        if not body.get("stream"):
            msg.update(content=[{"type": "text", "text": "Hello"}], stop_reason="end_turn",
                       usage={"input_tokens": 25, "output_tokens": 15})
            self.send_json(200, msg)
            return
        first = sse({"type": "message_start", "message": msg}, "message_start")
        rest = [
            sse({"type": "content_block_start", "index": 0,
                 "content_block": {"type": "text", "text": ""}}, "content_block_start"),
            sse({"type": "content_block_delta", "index": 0,
                 "delta": {"type": "text_delta", "text": "Hello"}}, "content_block_delta"),
            sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
            sse({"type": "message_delta", "delta": {"stop_reason": "end_turn",
                 "stop_sequence": None}, "usage": {"output_tokens": 15}}, "message_delta"),
            sse({"type": "message_stop"}, "message_stop"),
        ]
        self.stream(first, rest, call)

    def gemini(self, path, call):
        model = path.rsplit("/", 1)[-1].split(":")[0]
        call["model"] = model

        def answer(text, out):
            return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                                    "index": 0}],
                    "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": out,
                                      "totalTokenCount": 4 + out},
                    "modelVersion": model}

        if ":generateContent" in path:
            self.send_json(200, answer("Hello", 10))
        else:
            self.stream(sse(answer("Hel", 1)), [sse(answer("lo", 10))], call)


class Control(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/go":
            GO.set()
            doc = {"ok": True}
        else:
            with LOCK:
                doc = list(CALLS)
        data = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main():
    cert, key = sys.argv[1:3]
    api = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    api.socket = ctx.wrap_socket(api.socket, server_side=True)
    control = ThreadingHTTPServer(("127.0.0.1", 0), Control)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    threading.Thread(target=api.serve_forever, daemon=True).start()
    print(json.dumps({"api": api.server_address[1], "control": control.server_address[1]}),
          flush=True)
    sys.stdin.read()  # until the test closes our stdin (or dies)


if __name__ == "__main__":
    main()
