#!/usr/bin/env bash
# TLS termination: turnout against nginx, both serving one 4 KiB file over HTTPS (nginx from
# disk, turnout from its cache, so neither pays for an upstream), pinned as the shared harness
# pins: each server alone on CPU 1 with one worker, wrk on CPU 0. Two loads: 50 keep-alive
# connections (the cost of encrypting), and a new connection, so a full handshake, per request.
# The certificate is ECDSA P-256, made here with openssl. Prints a Markdown section on stdout.
#
#   benches/tls-vs-nginx.sh path/to/turnout [rounds]
#
# Needs nginx, wrk, curl, openssl and taskset. Only loopback is ever a target.
set -euo pipefail
bin=${1:?usage: tls-vs-nginx.sh path/to/turnout [rounds]}
rounds=${2:-3}
work=$(mktemp -d)
chmod 755 "$work"
pids=()
stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT

backend=127.0.0.1:9121
listen=127.0.0.1:8443
plain=127.0.0.1:8191

mkdir -p "$work/www/assets"
head -c 4096 /dev/zero | tr '\0' 'x' > "$work/www/assets/app.js"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=bench.test" -addext "subjectAltName=DNS:bench.test" \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
chmod 644 "$work/key.pem"

# The app turnout caches from, on CPU 0.
mkdir -p "$work/backend"
cat > "$work/backend/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $work/backend/nginx.pid;
error_log $work/backend/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen $backend;
        root $work/www;
        location /assets/ { add_header Cache-Control "public, max-age=31536000, immutable"; }
    }
}
EOF
taskset -c 0 nginx -c "$work/backend/nginx.conf" -p "$work/backend" &
backend_pid=$!

start_nginx() {
    mkdir -p "$work/nginx"
    cat > "$work/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {
        listen $listen ssl;
        ssl_certificate $work/cert.pem;
        ssl_certificate_key $work/key.pem;
        root $work/www;
    }
}
EOF
    taskset -c 1 nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
    server_pid=$!
}

start_turnout() {
    cat > "$work/turnout.toml" <<EOF
[server]
listen = "$plain"
admin = "127.0.0.1:9913"
workers = 1
shutdown_delay = "0s"
shutdown_timeout = "2s"
[tls]
listen = "$listen"
[[tls.certs]]
cert = "$work/cert.pem"
key = "$work/key.pem"
[cache]
prefixes = ["/assets/"]
[pools.blue]
servers = ["$backend"]
[routing]
active = "blue"
EOF
    RUST_LOG=warn taskset -c 1 "$bin" serve --config "$work/turnout.toml" >"$work/turnout.log" 2>&1 &
    server_pid=$!
}

url="https://bench.test:${listen##*:}/assets/app.js"
resolve="bench.test:${listen##*:}:127.0.0.1"
wait_ready() {
    for _ in $(seq 100); do
        if curl -kfs --max-time 1 --resolve "$resolve" "$url" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "tls-vs-nginx.sh: $1 did not answer on $listen" >&2
    return 1
}

# wrk connects to the address in the URL; the name only matters for SNI, which both ignore.
target="https://$listen/assets/app.js"
servers=(nginx turnout)
loads=(keepalive handshake)
declare -A runs
for round in $(seq "$rounds"); do
    for server in "${servers[@]}"; do
        "start_$server"
        pids=("$backend_pid" "$server_pid")
        wait_ready "$server"
        for load in "${loads[@]}"; do
            extra=()
            [ "$load" = handshake ] && extra=(-H "Connection: close")
            taskset -c 0 timeout 30 wrk -t1 -c50 -d2s "${extra[@]}" "$target" >/dev/null # warm-up
            out=$(taskset -c 0 timeout 60 wrk -t1 -c50 -d8s "${extra[@]}" "$target")
            rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' <<<"$out")
            if grep -q "Non-2xx" <<<"$out"; then
                echo "tls-vs-nginx.sh: $server $load round $round: $(grep 'Non-2xx' <<<"$out")" >&2
            fi
            runs[$server.$load]="${runs[$server.$load]:-} ${rps%.*}"
        done
        kill "$server_pid"
        wait "$server_pid" 2>/dev/null || true
    done
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "## HTTPS: turnout vs nginx terminating TLS (benches/tls-vs-nginx.sh)"
echo
echo "wrk -t1 -c50 -d8s on CPU 0; the server alone on CPU 1 with one worker; ECDSA P-256; a 4 KiB file (nginx from disk, turnout from its cache); $rounds rounds, interleaved; median."
echo
echo "| load | nginx req/s | turnout req/s | turnout vs nginx | runs (nginx / turnout) |"
echo "|---|---:|---:|---:|---|"
for load in "${loads[@]}"; do
    n=$(median "${runs[nginx.$load]}")
    t=$(median "${runs[turnout.$load]}")
    echo "| $load | $n | $t | $(awk -v a="$t" -v b="$n" 'BEGIN {printf "%.2f", a / b}') | ${runs[nginx.$load]# } / ${runs[turnout.$load]# } |"
done
