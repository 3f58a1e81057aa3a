"""The systems under test: the nginx upstream, TLS material, intentgate variants, peer proxies, checks."""
import json
import os
import re
import socket
import subprocess
import time

from .common import BODY, HERE, cmdline, log
from .procs import STARTED, pinned


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, timeout=20):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def http_check(proxy, upstream, path, timeout=5):
    """One GET (absolute-form through `proxy`, or origin-form direct); returns (ok, detail)."""
    host, port = (proxy or upstream).rsplit(":", 1)
    target = f"http://{upstream}{path}" if proxy else path
    req = f"GET {target} HTTP/1.1\r\nHost: {upstream}\r\nConnection: close\r\n\r\n".encode()
    try:
        with socket.create_connection((host, int(port)), timeout) as s:
            s.settimeout(timeout)
            s.sendall(req)
            buf = read_until_closed(s, timeout)
    except OSError as e:
        return False, f"socket error: {e}"
    ok, status, body = judge(buf)
    return ok, status + ("" if ok else f" body={body[:200]!r}")


def read_until_closed(s, timeout):
    """What `s` sends until it closes (or `timeout` seconds pass)."""
    buf = b""
    t0 = time.time()
    while time.time() - t0 < timeout:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def judge(buf):
    """(ok, status line, body) of a check response: ok is a 200 carrying the upstream's body."""
    head, _, body = buf.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    return status.split(" ")[1:2] == ["200"] and BODY.encode() in body, status, body


def https_check(proxy, upstream, path, cafile, timeout=5):
    """One GET over TLS to `upstream` (through a CONNECT tunnel when `proxy`), verifying the
    server certificate against `cafile`; returns (ok, detail)."""
    import ssl
    host, port = (proxy or upstream).rsplit(":", 1)
    try:
        ctx = ssl.create_default_context(cafile=cafile)
        with socket.create_connection((host, int(port)), timeout) as raw_s:
            raw_s.settimeout(timeout)
            if proxy:
                raw_s.sendall(f"CONNECT {upstream} HTTP/1.1\r\nHost: {upstream}\r\n\r\n".encode())
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    chunk = raw_s.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                status = head.split(b"\r\n", 1)[0].decode(errors="replace")
                if status.split(" ")[1:2] != ["200"]:
                    return False, "CONNECT: " + status
            with ctx.wrap_socket(raw_s, server_hostname=upstream.rsplit(":", 1)[0]) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: {upstream}\r\nConnection: close\r\n\r\n".encode())
                buf = read_until_closed(s, timeout)
    except (OSError, ValueError) as e:
        return False, f"TLS/socket error: {e}"
    ok, status, body = judge(buf)
    return ok, status + " over TLS" + ("" if ok else f" body={body[:200]!r}")


def make_tls_material(run, binary):
    """--https: a small upstream CA + a leaf for 127.0.0.1/localhost (openssl), and intentgate's
    interception CA (`intentgate ca init`). Returns the paths."""
    d = os.path.join(run, "tls")
    os.makedirs(d, exist_ok=True)
    ext = os.path.join(d, "leaf.ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    steps = [
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", f"{d}/upstream-ca-key.pem", "-out", f"{d}/upstream-ca.pem", "-days", "2",
         "-subj", "/CN=intentgate bench upstream CA",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", f"{d}/upstream-key.pem", "-out", f"{d}/upstream.csr", "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", f"{d}/upstream.csr", "-CA", f"{d}/upstream-ca.pem",
         "-CAkey", f"{d}/upstream-ca-key.pem", "-CAcreateserial", "-days", "2", "-extfile", ext,
         "-out", f"{d}/upstream.pem"],
        [binary, "ca", "init", "--out", f"{d}/ig-ca"],
    ]
    for cmd in steps:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"TLS setup failed: {cmdline(cmd)}: {(r.stderr or r.stdout)[-500:]}")
    with open(f"{d}/upstream-with-key.pem", "w") as out:  # haproxy-tls wants leaf and key in one file
        for part in ("upstream.pem", "upstream-key.pem"):
            with open(f"{d}/{part}") as f:
                out.write(f.read())
    return dict(upstream_ca=f"{d}/upstream-ca.pem", upstream_cert=f"{d}/upstream.pem",
                upstream_key=f"{d}/upstream-key.pem", upstream_pem=f"{d}/upstream-with-key.pem",
                ig_ca=f"{d}/ig-ca/ca.pem", ig_ca_key=f"{d}/ig-ca/ca-key.pem")


def start_nginx(run, tls=None):
    port = free_port()
    tls_port = free_port() if tls else None
    tls_server = "" if not tls else f"""
    server {{
        listen 127.0.0.1:{tls_port} ssl backlog=2048;
        ssl_certificate {tls['upstream_cert']};
        ssl_certificate_key {tls['upstream_key']};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:1m;
        location = /small {{ return 200 '{BODY}'; }}
        location /mix/ {{ return 200 '{BODY}'; }}
        location / {{ return 404 '{{"error":"not found"}}'; }}
    }}"""
    conf = os.path.join(run, "nginx.conf")
    tmp = os.path.join(run, "nginx-tmp")
    os.makedirs(tmp, exist_ok=True)
    user = "user www-data;\n" if os.geteuid() == 0 else ""
    with open(conf, "w") as f:
        f.write(f"""# upstream origin for bench/load.py
{user}daemon off;
master_process on;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/nginx-error.log warn;
events {{ worker_connections 2048; }}
http {{
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    tcp_nodelay on;
    default_type application/json;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=2048;
        location = /small {{ return 200 '{BODY}'; }}
        location /mix/ {{ return 200 '{BODY}'; }}
        location / {{ return 404 '{{"error":"not found"}}'; }}
    }}{tls_server}
}}
""")
    p = STARTED.spawn("nginx", pinned(["nginx", "-c", conf, "-e", f"{run}/nginx-error.log"], "load"),
                      os.path.join(run, "nginx.log"))
    if not wait_port(port, p) or (tls_port and not wait_port(tls_port, p)):
        raise RuntimeError(f"nginx did not listen on {port}; see {run}/nginx.log and nginx-error.log")
    log(f"upstream nginx pid={p.pid} on 127.0.0.1:{port}" + (f", TLS on 127.0.0.1:{tls_port}" if tls_port else ""))
    return p.pid, f"127.0.0.1:{port}", (f"127.0.0.1:{tls_port}" if tls_port else None)


def top_keys(yaml_text):
    return set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:", yaml_text, re.M))


def intentgate_config(extra_text, run_dir="@RUN@", upstream="127.0.0.1:@UPSTREAM_PORT@"):
    """Base config + the variant's top-level sections. In the variant, @RUN@ is its temp dir,
    @UPSTREAM@ the upstream's host:port and @UPSTREAM_PORT@ its port."""
    extra_text = ((extra_text or "").replace("@RUN@", run_dir).replace("@UPSTREAM@", upstream)
                  .replace("@UPSTREAM_PORT@", upstream.rsplit(":", 1)[1]))
    base = {
        # the admin listener only serves /metrics (decision cache hits and misses per run)
        "listen": "listen:\n  proxy: 127.0.0.1:0\n  admin: 127.0.0.1:0\n",
        "audit": "audit:\n  path: \"off\"\n",
        # the upstream is on loopback: keep it reachable once private destinations are refused
        "egress": "egress:\n  allow_cidrs: [\"127.0.0.0/8\"]\n",
        # an agent with an owner (agents without one are refused)
        "agent": "agent:\n  id: bench-agent\n  owner: bench\n",
        # policy off: one passthrough rule instead of the builtin catalog policy
        "policy": f"policy:\n  builtin: false\n  paths: [\"{HERE}/variants/allow-all.rego\"]\n",
    }
    drop = top_keys(extra_text)
    out = "# written by bench/load.py\n" + "".join(v for k, v in base.items() if k not in drop)
    if extra_text:
        out += "\n# --- variant extra ---\n" + extra_text.rstrip("\n") + "\n"
    return out


def start_intentgate(name, binary, extra_text, run, log_level, upstream):
    d = os.path.join(run, name)
    os.makedirs(d, exist_ok=True)
    conf, ready = os.path.join(d, "config.yaml"), os.path.join(d, "ready.json")
    with open(conf, "w") as f:
        f.write(intentgate_config(extra_text, d, upstream))
    env = dict(os.environ, INTENTGATE_LOG=log_level)
    # As deployed: no inherited config, and no backtraces captured for the errors that regorus's
    # parser backtracks through (RUST_BACKTRACE=1 in a shell costs ~1 MiB idle and start-up time).
    for k in ("INTENTGATE_CONFIG", "RUST_BACKTRACE", "RUST_LIB_BACKTRACE"):
        env.pop(k, None)
    cmd = [binary, "serve", "--config", conf, "--ready-file", ready]
    p = STARTED.spawn(name, pinned(cmd, "proxy"), os.path.join(d, "intentgate.log"), env=env)
    t0 = time.time()
    while not os.path.exists(ready):
        if p.poll() is not None:
            raise RuntimeError(f"{name} exited rc={p.returncode} before ready; log: "
                               + open(os.path.join(d, "intentgate.log")).read()[-2000:])
        if time.time() - t0 > 30:
            raise RuntimeError(f"{name}: no ready file after 30 s ({ready})")
        time.sleep(0.02)
    with open(ready) as f:
        info = json.load(f)
    log(f"{name} pid={info['pid']} on {info['proxy']} (ready after {time.time() - t0:.2f} s)")
    return dict(name=name, proxy=info["proxy"], pid=int(info["pid"]), admin=info.get("admin"), cmd=cmdline(cmd),
                env=f"INTENTGATE_LOG={log_level}", config=conf, log=os.path.join(d, "intentgate.log"))


PEERS = {
    # squid 5: no cache, no access log; -N keeps it in the foreground without kid processes
    "squid": lambda run, port, up: (["squid", "-N", "-f", f"{run}/squid.conf"], "squid.conf", f"""
http_port 127.0.0.1:{port}
acl localhost_src src 127.0.0.1/32
http_access allow localhost_src
http_access deny all
cache deny all
access_log none
cache_store_log none
cache_log {run}/squid-cache.log
pid_filename {run}/squid.pid
coredump_dir {run}
shutdown_lifetime 1 seconds
pinger_enable off
max_filedescriptors 8192
"""),
    "tinyproxy": lambda run, port, up: (["tinyproxy", "-d", "-c", f"{run}/tinyproxy.conf"], "tinyproxy.conf", f"""
User nobody
Group nogroup
Listen 127.0.0.1
Port {port}
Timeout 600
MaxClients 1024
LogLevel Critical
LogFile "{run}/tinyproxy.log"
Allow 127.0.0.1
"""),
    # mitmproxy (PyPI; bench/load.sh installs it in a venv): mitmdump, no flow output. Plain HTTP is
    # forwarded; CONNECT tunnels are intercepted with its own CA (used by `mitmproxy-tls`, --https).
    "mitmproxy": lambda run, port, up: (
        ["mitmdump", "--set", f"confdir={run}/mitmproxy-{port}"], f"mitmproxy-{port}/config.yaml", f"""
listen_host: 127.0.0.1
listen_port: {port}
flow_detail: 0
termlog_verbosity: error
""" + (f"ssl_verify_upstream_trusted_ca: {run}/tls/upstream-ca.pem\n" if os.path.exists(f"{run}/tls") else "")),
    # haproxy is a *reverse* proxy here, a reference rather than a peer: oha sends its requests
    # straight to haproxy's listener (no CONNECT, no absolute-form) and haproxy forwards them to
    # nginx over kept connections, one thread (as intentgate's default one worker), no policy.
    # `haproxy-tls` (--https) terminates TLS with nginx's bench leaf and re-originates TLS to
    # nginx's TLS listener, verified against the bench CA: interception's crypto work without
    # CONNECT, leaf minting or policy.
    "haproxy": lambda run, port, up: (["haproxy", "-db", "-f", f"{run}/haproxy-{port}.cfg"], f"haproxy-{port}.cfg", f"""
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    http-reuse always
frontend bench
    bind 127.0.0.1:{port}""" + (f" ssl crt {up['tls']['upstream_pem']}" if up.get("tls") else "") + f"""
    default_backend nginx
backend nginx
    server nginx """ + (f"{up['tls_upstream']} ssl verify required ca-file {up['tls']['upstream_ca']} sni str(127.0.0.1)"
                        if up.get("tls") else up["upstream"]) + "\n"),
    # hyper-floor (bench/floor, built on demand): a bare hyper/tokio forward proxy with intentgate's
    # stack, versions and server setup, and nothing of its work (no policy, audit or limits): the
    # least this stack costs per request, the floor of issue 26's targets 1-2. No config file.
    # `hyper-floor-tls` (--https): --tls, intercepting the CONNECT tunnels as intentgate-tls does, with
    # a leaf for 127.0.0.1 signed at start by the same CA (intentgate's `ca init`), upstream TLS
    # verified against the bench's upstream CA.
    "hyper-floor": lambda run, port, up: floor_cmd(floor_bin(), port, up),
    # hyper-floor-pgo (and -tls): the same built as intentgate's release is, with a profile of how it
    # runs (bench/floor_pgo.sh: its own training, -Cprofile-use), so both compare in one build mode.
    "hyper-floor-pgo": lambda run, port, up: floor_cmd(floor_pgo_bin(), port, up),
    # Without default-server-timeout privoxy does not reuse its upstream connections (nginx
    # announces no keep-alive timeout): a new connection per request (as ../shared/bench sets it).
    "privoxy": lambda run, port, up: (["privoxy", "--no-daemon", f"{run}/privoxy.conf"], "privoxy.conf", f"""
confdir {run}
logdir {run}
listen-address 127.0.0.1:{port}
enable-remote-toggle 0
enable-edit-actions 0
keep-alive-timeout 300
default-server-timeout 60
socket-timeout 300
max-client-connections 1024
"""),
}
# tinyproxy 1.11 closes the client connection after each response without `Connection: close`,
# so keep-alive clients race against the close; it is driven with one connection per request.
NO_KEEPALIVE = {"tinyproxy"}


PEER_BIN = {"mitmproxy": "mitmdump"}
# Peers built from this tree rather than installed: name -> a function returning the binary.
BUILT = {"hyper-floor": lambda: floor_bin(), "hyper-floor-pgo": lambda: floor_pgo_bin()}


def floor_cmd(path, port, up):
    """A hyper-floor command line (--tls with the bench's CAs when `up` has TLS material)."""
    return ([path, "--listen", f"127.0.0.1:{port}"]
            + (["--tls", "--ca-cert", up["tls"]["ig_ca"], "--ca-key", up["tls"]["ig_ca_key"],
                "--upstream-ca", up["tls"]["upstream_ca"]] if up.get("tls") else []),
            f"hyper-floor-{port}.txt", "hyper-floor: no config file, flags only\n")


def floor_bin():
    """bench/floor's release binary, built (cargo --offline, its own workspace) when missing."""
    manifest = os.path.join(HERE, "floor", "Cargo.toml")
    path = os.path.join(HERE, "floor", "target", "release", "hyper-floor")
    if not os.access(path, os.X_OK):
        log("building bench/floor (hyper-floor)")
        # cwd inside the tree: the repository's .cargo/config.toml (jemalloc's and aws-lc's build
        # settings) applies by the working directory, not by the manifest's. Without intentgate's
        # profile (layout/pgo.profdata is intentgate's, not the floor's): the floor as measured.
        r = subprocess.run(["cargo", "build", "--release", "--offline", "--locked", "--manifest-path", manifest],
                           capture_output=True, text=True, timeout=1800, cwd=os.path.dirname(manifest),
                           env=dict(os.environ, INTENTGATE_NO_PGO="1"))
        if r.returncode != 0 or not os.access(path, os.X_OK):
            raise RuntimeError(f"cannot build bench/floor: {(r.stderr or r.stdout)[-1000:]}")
    return path


def floor_pgo_bin():
    """bench/floor built with its own profile (bench/floor_pgo.sh: an instrumented build, its
    training, then the optimized build: two builds of the floor), when missing."""
    path = os.path.join(HERE, "floor", "target-pgo", "release", "hyper-floor")
    if not os.access(path, os.X_OK):
        log("building bench/floor with its profile (bench/floor_pgo.sh)")
        r = subprocess.run([os.path.join(HERE, "floor_pgo.sh")], capture_output=True, text=True, timeout=3600)
        if r.returncode != 0 or not os.access(path, os.X_OK):
            raise RuntimeError(f"bench/floor_pgo.sh failed: {(r.stderr or r.stdout)[-1000:]}")
    return path
# Reverse proxies: oha addresses them as the origin (their `target`), not through -x.
REVERSE = {"haproxy"}


def start_peer(name, run, label=None, up=None):
    """Starts peer `name` (shown as `label`) on a free port; `up`: upstream addresses (and `tls`
    material for a TLS-terminating reverse proxy)."""
    label = label or name
    port = free_port()
    cmd, conf_name, text = PEERS[name](run, port, up or {})
    os.makedirs(os.path.dirname(os.path.join(run, conf_name)), exist_ok=True)
    with open(os.path.join(run, conf_name), "w") as f:
        f.write(text.lstrip())
    p = STARTED.spawn(label, pinned(cmd, "proxy"), os.path.join(run, f"{label}.log"))
    if not wait_port(port, p):
        raise RuntimeError(f"{label} did not listen on {port}; see {run}/{label}.log")
    log(f"peer {label} pid={p.pid} on 127.0.0.1:{port}")
    addr = {"target": f"127.0.0.1:{port}"} if name in REVERSE else {"proxy": f"127.0.0.1:{port}"}
    return dict(name=label, pid=p.pid, cmd=cmdline(cmd), **addr,
                no_keepalive=name in NO_KEEPALIVE, confdir=os.path.join(run, f"{name}-{port}"))
