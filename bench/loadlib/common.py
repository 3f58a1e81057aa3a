"""Paths, the upstream's response body and small helpers shared by bench/load.py's modules."""
import os
import shlex
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # bench/
ROOT = os.path.dirname(HERE)

# ~100 B JSON body, the size peers were measured with (../shared/bench: 102 B)
BODY = '{"id":"bench-0001","object":"intentgate.bench","allowed":true,"latency_ms":0,"pad":"xxxxxxxxxxxxxxxx"}'


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def cmdline(cmd):
    return " ".join(shlex.quote(c) for c in cmd)
