"""The DNS-miss mix of bench/instructions.sh: plain-HTTP GETs through the proxy over 4 keep-alive
connections, to names under bench.test that the bench's DNS server resolves to 127.0.0.1. Every
MISS_EVERY-th request of a connection names a host never asked before (a cache miss: a lookup, and
a new upstream connection for the new host); the others name one of three warm hosts. The
sequence is fixed, so two binaries get exactly the same requests.

usage: dns_mix.py PROXY_PORT UPSTREAM_PORT REQUESTS TAG [MISS_EVERY]
TAG keeps the fresh names of one run apart from another's; exits 1 unless every answer is 200.
"""
import http.client
import sys
import threading

CONNECTIONS = 4


def run(proxy_port, up_port, count, tag, miss_every, conn_no, failures):
    conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=60)
    for k in range(count):
        if k % miss_every == 0:
            host = f"m{tag}-{conn_no}-{k}.bench.test"
        else:
            host = f"h{k % 3}.bench.test"
        conn.request("GET", f"http://{host}:{up_port}/small")
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            failures.append(f"{host}: {resp.status}")


def main():
    proxy_port, up_port, total = (int(a) for a in sys.argv[1:4])
    tag = sys.argv[4]
    miss_every = int(sys.argv[5]) if len(sys.argv) > 5 else 10
    failures = []
    threads = [
        threading.Thread(target=run, args=(proxy_port, up_port, total // CONNECTIONS, tag,
                                           miss_every, i, failures))
        for i in range(CONNECTIONS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        print(f"{len(failures)} failed, e.g. {failures[:3]}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
