"""A tiny DNS responder for tests: answers A/AAAA queries from a JSON plan, one answer set per A
query in turn (so a name can resolve to a public address first and to loopback next: rebinding).

usage: dns_server.py PORT_FILE PLAN_JSON     PLAN: {"name.test": [["8.8.8.8"], ["127.0.0.1"]], ...}
Binds 127.0.0.1:0 (UDP), writes the port to PORT_FILE, serves until killed.
"""
import ipaddress
import json
import socket
import struct
import sys


def qname(msg, pos):
    labels = []
    while msg[pos]:
        n = msg[pos]
        labels.append(msg[pos + 1:pos + 1 + n].decode())
        pos += 1 + n
    return ".".join(labels).lower(), pos + 1


def main():
    port_file, plan = sys.argv[1], json.loads(sys.argv[2])
    turn = {name: 0 for name in plan}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    with open(port_file + ".tmp", "w") as f:
        f.write(str(sock.getsockname()[1]))
    import os
    os.rename(port_file + ".tmp", port_file)
    while True:
        msg, peer = sock.recvfrom(512)
        name, end = qname(msg, 12)
        qtype = struct.unpack("!H", msg[end:end + 2])[0]
        question = msg[12:end + 4]
        answers = []
        if name in plan:
            sets = plan[name]
            current = sets[min(turn[name], len(sets) - 1)]
            if qtype == 1:
                turn[name] += 1
            for ip in current:
                addr = ipaddress.ip_address(ip)
                if (qtype == 1 and addr.version == 4) or (qtype == 28 and addr.version == 6):
                    answers.append(struct.pack("!HHHIH", 0xC00C, qtype, 1, 0, len(addr.packed)) + addr.packed)
        rcode = 0 if name in plan else 3
        header = msg[:2] + struct.pack("!BBHHHH", 0x81, 0x80 | rcode, 1, len(answers), 0, 0)
        sock.sendto(header + question + b"".join(answers), peer)


if __name__ == "__main__":
    main()
