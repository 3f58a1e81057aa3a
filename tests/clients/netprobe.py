"""Network probes for the `run --isolate` tests.

usage: netprobe.py serve-udp ADDR PORT LOG READY
           Answers every UDP datagram (a DNS query gets a DNS answer: A 192.0.2.1) and logs its
           sender to LOG, one JSON line each; writes READY once bound; serves until killed.
       netprobe.py probe PLAN_JSON
           Runs the steps of PLAN and prints one JSON list of results:
           {"http": URL, "proxy": true|false}  GET through the environment's proxy, or straight to
                                              the host with the proxy variables ignored (as an agent
                                              told to unset them would): {"status", "headers"} or
                                              {"error"}
           {"udp": [HOST, PORT]}              one datagram, then a reply within 3 s: "reply",
                                              "no reply" or {"error"}
           {"dns": [SERVER, PORT, NAME]}      a raw DNS query for NAME's A record: "answer",
                                              "no answer" or {"error"}
           {"set_intent": NAME}               PUT $INTENTGATE_ADMIN_URL/v1/intent: the status
"""
import json
import os
import socket
import struct
import sys
import urllib.error
import urllib.request


def serve_udp(addr, port, log, ready):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, int(port)))
    with open(ready + ".tmp", "w") as f:
        f.write("ready")
    os.rename(ready + ".tmp", ready)
    while True:
        msg, peer = sock.recvfrom(512)
        with open(log, "a") as f:
            f.write(json.dumps({"peer": peer[0], "bytes": len(msg)}) + "\n")
        if len(msg) > 12 and msg[2] & 0x80 == 0:
            # A query: echo the question with one A answer.
            end = msg.index(0, 12) + 5
            header = msg[:2] + struct.pack("!BBHHHH", 0x81, 0x80, 1, 1, 0, 0)
            answer = struct.pack("!HHHIH", 0xC00C, 1, 1, 0, 4) + bytes([192, 0, 2, 1])
            sock.sendto(header + msg[12:end] + answer, peer)
        else:
            sock.sendto(b"pong", peer)


def http(step):
    handlers = [] if step.get("proxy", True) else [urllib.request.ProxyHandler({})]
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(step["http"], timeout=10) as r:
            return {"status": r.status, "headers": {k.lower(): v for k, v in r.headers.items()},
                    "body": r.read().decode(errors="replace")}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": e.read().decode(errors="replace")}
    except Exception as e:  # noqa: BLE001 — the test wants to see how it failed
        reason = getattr(e, "reason", e)
        return {"error": str(reason)}


def datagram(payload, host, port, answer):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(3)
    try:
        sock.sendto(payload, (host, int(port)))
        sock.recvfrom(512)
        return answer
    except socket.timeout:
        return "no " + answer
    except OSError as e:
        return {"error": e.strerror or str(e)}


def dns_query(name):
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


def set_intent(name):
    req = urllib.request.Request(os.environ["INTENTGATE_ADMIN_URL"] + "/v1/intent",
                                 data=json.dumps({"name": name}).encode(), method="PUT")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception as e:  # noqa: BLE001
        return {"error": str(getattr(e, "reason", e))}


def probe(plan):
    out = []
    for step in plan:
        if "http" in step:
            out.append(http(step))
        elif "udp" in step:
            out.append(datagram(b"ping", *step["udp"], "reply"))
        elif "dns" in step:
            server, port, name = step["dns"]
            out.append(datagram(dns_query(name), server, port, "answer"))
        elif "set_intent" in step:
            out.append(set_intent(step["set_intent"]))
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "serve-udp":
        serve_udp(*sys.argv[2:6])
    else:
        probe(json.loads(sys.argv[2]))
