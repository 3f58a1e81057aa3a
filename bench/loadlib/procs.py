"""Processes the benchmark starts and stops, and /proc sampling: process trees, CPU, RSS, host load."""
import os
import signal
import subprocess
import threading
import time

from .common import log

TICK = os.sysconf("SC_CLK_TCK")


# CPU sets from --pin (set by main): "proxy" for the proxies, "load" for nginx and oha.
PIN = {}


def pinned(cmd, role):
    """cmd run under `taskset -c` when --pin gave `role` a CPU set (children inherit it)."""
    cpus = PIN.get(role)
    return ["taskset", "-c", cpus, *cmd] if cpus else cmd


class Started:
    """Processes this benchmark started; each runs in its own process group."""

    def __init__(self):
        self.procs = []  # (name, Popen)

    def spawn(self, name, cmd, logpath, env=None):
        f = open(logpath, "w")
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=env, start_new_session=True)
        f.close()
        self.procs.append((name, p))
        return p

    def stop_all(self):
        for name, p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 8
        for name, p in reversed(self.procs):
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                log(f"{name} pid={p.pid} ignored SIGTERM for 8 s: SIGKILL")
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    log(f"{name} pid={p.pid} did not exit after SIGKILL")
            # squid/nginx workers live in the same group; make sure none survive
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            log(f"stopped {name} pid={p.pid} rc={p.returncode}")
        self.procs.clear()


STARTED = Started()


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def proc_table():
    """{pid: (ppid, utime+stime ticks)} for every process."""
    t = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fl = s[s.rindex(")") + 2:].split()
        t[int(d)] = (int(fl[1]), int(fl[11]) + int(fl[12]))
    return t


def tree(pid, table=None):
    if not pid:
        return []
    table = table or proc_table()
    kids = {}
    for p, (pp, _) in table.items():
        kids.setdefault(pp, []).append(p)
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_ticks(pids):
    tot = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
            fl = s[s.rindex(")") + 2:].split()
            tot += int(fl[11]) + int(fl[12])  # utime + stime
        except (OSError, ValueError):
            pass
    return tot


def status_kb(pids, key):
    tot = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        tot += int(line.split()[1])
                        break
        except OSError:
            pass
    return tot


def host_cpu():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3] + v[4]  # total, idle+iowait


def busy_pct(a, b):
    """Host busy between two host_cpu() samples, in % of ONE core."""
    tot, idle = b[0] - a[0], b[1] - a[1]
    return 100.0 * os.cpu_count() * (tot - idle) / tot if tot else 0.0


def wait_quiet(thresh, max_wait):
    """Wait (bounded) until the host is quieter than thresh % of one core over 1 s."""
    t0 = time.time()
    while True:
        a = host_cpu()
        time.sleep(1.0)
        b = busy_pct(a, host_cpu())
        if b <= thresh or time.time() - t0 >= max_wait:
            return round(b), round(time.time() - t0, 1)


class RssSampler(threading.Thread):
    def __init__(self, pid, every=0.25):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak = pid, every, 0
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            self.peak = max(self.peak, status_kb(tree(self.pid), "VmRSS"))
            self.stop_ev.wait(self.every)

    def finish(self):
        self.stop_ev.set()
        self.join(5)
        self.peak = max(self.peak, status_kb(tree(self.pid), "VmRSS"))
        return self.peak


def wait_ready(path, proc, seconds=30):
    """Wait until intentgate (`proc`, started with `serve --ready-file PATH`) has written its ready
    file; exit the bench if it exits first or never does."""
    deadline = time.monotonic() + seconds
    while not (os.path.exists(path) and os.path.getsize(path) > 0):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("intentgate never became ready")
        time.sleep(0.05)


def terminate_all(*procs):
    """Terminate the processes (None is skipped), then wait for each."""
    procs = [p for p in procs if p is not None]
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait()
