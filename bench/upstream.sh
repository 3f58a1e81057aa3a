# Shared by the bench scripts (sourced: instructions.sh, order.sh, floor_cost.sh, floor_pgo.sh, ...): a free loopback port, and a local
# nginx upstream answering `{"ok":true}` on HTTP and, when TLS material is made, also on TLS.
# Files in $FILES_DIR (if set) are served under /files/, to a POST too (its body ignored).

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# upstream_tls DIR [BIN]: a throwaway upstream CA (DIR/up-ca.pem) and a leaf for 127.0.0.1
# (DIR/up.pem, DIR/up-key.pem, both in DIR/up-with-key.pem for haproxy) made with openssl, and
# with BIN intentgate's interception CA (DIR/ig/).
upstream_tls() {
    local t=$1
    mkdir -p "$t"
    printf '%s\n' 'basicConstraints=critical,CA:FALSE' 'keyUsage=critical,digitalSignature' \
        'extendedKeyUsage=serverAuth' 'subjectAltName=IP:127.0.0.1,DNS:localhost' >"$t/leaf.ext"
    {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -keyout "$t/up-ca-key.pem" -out "$t/up-ca.pem" -subj "/CN=intentgate bench upstream CA" \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
            -keyout "$t/up-key.pem" -out "$t/up.csr"
        openssl x509 -req -in "$t/up.csr" -CA "$t/up-ca.pem" -CAkey "$t/up-ca-key.pem" \
            -CAcreateserial -days 2 -extfile "$t/leaf.ext" -out "$t/up.pem"
        cat "$t/up.pem" "$t/up-key.pem" >"$t/up-with-key.pem"
        [[ -z "${2:-}" ]] || "$2" ca init --out "$t/ig"
    } >"$t/setup.log" 2>&1 || { cat "$t/setup.log" >&2; return 1; }
}

# floor_ca _ _ _ DIR: upstream_tls's `BIN ca init --out DIR` for a tree without an intentgate
# build (bench/floor's scripts): a P-256 CA, as `intentgate ca init` makes (DIR/ca.pem, ca-key.pem).
floor_ca() {
    mkdir -p "$4"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout "$4/ca-key.pem" -out "$4/ca.pem" -subj "/CN=hyper-floor bench CA" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}

# start_nginx TMP PORT [TLS_PORT TLS_DIR]: nginx in the background; sets nginx_pid. Its connections
# stay open as bench/load.py's nginx keeps them (nginx's default closes one after 1,000 requests,
# so long counts included new upstream connections and, with TLS, their handshakes).
start_nginx() {
    local tmp=$1 port=$2 tls_server=""
    if [[ -n "${3:-}" ]]; then
        tls_server="server { listen 127.0.0.1:$3 ssl; ssl_certificate $4/up.pem;
    ssl_certificate_key $4/up-key.pem; ssl_protocols TLSv1.2 TLSv1.3;
    location / { return 200 '{\"ok\":true}'; }
    location /files/ { alias ${FILES_DIR:-$tmp}/; default_type text/event-stream; error_page 405 =200 \$uri; } }"
    fi
    cat >"$tmp/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $tmp/nginx.pid;
error_log $tmp/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_timeout 300s;
  keepalive_requests 100000000;
  client_body_temp_path $tmp;
  server { listen 127.0.0.1:$port; location / { return 200 '{"ok":true}'; }
    location /files/ { alias ${FILES_DIR:-$tmp}/; default_type text/event-stream; error_page 405 =200 \$uri; } }
  $tls_server
}
NGINX
    nginx -c "$tmp/nginx.conf" &
    nginx_pid=$!
}
