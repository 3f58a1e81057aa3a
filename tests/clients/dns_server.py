"""A tiny DNS responder for tests: answers A/AAAA queries from a JSON plan, one answer set per A
query in turn (so a name can resolve to a public address first and to loopback next: rebinding).

usage: dns_server.py PORT_FILE PLAN_JSON [QUERY_LOG]
PLAN: {"name.test": [SET, SET, ...], "*.any.test": [...], ...} ("*." answers every name under it;
each name has its own turn), each SET either a list of addresses (["8.8.8.8"]) or an
object with any of
  "ips": [...]         addresses (A for IPv4, AAAA for IPv6), owned by the name asked for
  "cname": "other.test"  a CNAME to another name (its addresses are NOT added: the client must ask)
  "ttl": 60            the TTL of every record (default 0)
  "truncate": true     over UDP, answer with the TC bit and no records (the answer comes over TCP)
  "stray": {"x.test": "127.0.0.2"}  extra address records for names nobody asked about
  "question": "x.test"  answer with this name in the question section instead (a forged reply)
Binds 127.0.0.1:0 for UDP and the same port for TCP, writes the port to PORT_FILE, and appends one
JSON line per query to QUERY_LOG ({"name", "type", "transport"}); serves until killed.
"""
import ipaddress
import json
import os
import socket
import struct
import sys
import threading

TYPES = {1: "A", 28: "AAAA", 5: "CNAME"}


def qname(msg, pos):
    labels = []
    while msg[pos]:
        n = msg[pos]
        labels.append(msg[pos + 1:pos + 1 + n].decode())
        pos += 1 + n
    return ".".join(labels).lower(), pos + 1


def encode_name(name):
    out = b""
    for label in name.strip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def record(owner, rtype, ttl, rdata):
    # The owner is a pointer to the question (offset 12) or a name written out.
    head = struct.pack("!H", 0xC00C) if owner is None else encode_name(owner)
    return head + struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata


class Server:
    def __init__(self, plan, log_path):
        self.plan = plan
        self.turn = {}
        self.lock = threading.Lock()
        self.log = open(log_path, "a", buffering=1) if log_path else None

    def answer(self, msg, transport):
        name, end = qname(msg, 12)
        qtype = struct.unpack("!H", msg[end:end + 2])[0]
        question = msg[12:end + 4]
        with self.lock:
            if self.log:
                self.log.write(json.dumps({"name": name, "type": TYPES.get(qtype, qtype),
                                           "transport": transport}) + "\n")
            current = None
            sets = self.plan.get(name) or next(
                (v for k, v in self.plan.items() if k.startswith("*.") and name.endswith(k[1:])),
                None)
            if sets:
                current = sets[min(self.turn.get(name, 0), len(sets) - 1)]
                if qtype == 1:
                    self.turn[name] = self.turn.get(name, 0) + 1
        if isinstance(current, list):
            current = {"ips": current}
        answers = []
        flags = 0x81  # response, RD
        if current is not None:
            ttl = current.get("ttl", 0)
            if current.get("truncate") and transport == "udp":
                flags |= 0x02
                current = {}
            if "question" in current:
                question = encode_name(current["question"]) + msg[end:end + 4]
            if "cname" in current:
                answers.append(record(None, 5, ttl, encode_name(current["cname"])))
            for ip in current.get("ips", []):
                addr = ipaddress.ip_address(ip)
                if (qtype == 1 and addr.version == 4) or (qtype == 28 and addr.version == 6):
                    answers.append(record(None, qtype, ttl, addr.packed))
            for other, ip in current.get("stray", {}).items():
                addr = ipaddress.ip_address(ip)
                rtype = 1 if addr.version == 4 else 28
                if rtype == qtype:
                    answers.append(record(other, rtype, ttl, addr.packed))
        rcode = 0 if current is not None else 3
        header = msg[:2] + struct.pack("!BBHHHH", flags, 0x80 | rcode, 1, len(answers), 0, 0)
        return header + question + b"".join(answers)

    def serve_udp(self, sock):
        while True:
            msg, peer = sock.recvfrom(4096)
            sock.sendto(self.answer(msg, "udp"), peer)

    def serve_tcp_conn(self, conn):
        with conn:
            while True:
                head = conn.recv(2, socket.MSG_WAITALL)
                if len(head) < 2:
                    return
                msg = conn.recv(struct.unpack("!H", head)[0], socket.MSG_WAITALL)
                reply = self.answer(msg, "tcp")
                conn.sendall(struct.pack("!H", len(reply)) + reply)

    def serve_tcp(self, listener):
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=self.serve_tcp_conn, args=(conn,), daemon=True).start()


def main():
    port_file, plan = sys.argv[1], json.loads(sys.argv[2])
    server = Server(plan, sys.argv[3] if len(sys.argv) > 3 else None)
    while True:  # a UDP port whose TCP twin is free too
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(("127.0.0.1", port))
            break
        except OSError:
            udp.close()
            tcp.close()
    tcp.listen(16)
    threading.Thread(target=server.serve_tcp, args=(tcp,), daemon=True).start()
    with open(port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.rename(port_file + ".tmp", port_file)
    server.serve_udp(udp)


if __name__ == "__main__":
    main()
