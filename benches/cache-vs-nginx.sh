#!/usr/bin/env bash
# A cached asset from turnout's memory against nginx serving the same file from disk, pinned as
# the shared harness pins: each server alone on CPU 1 with one worker, wrk and the backend on
# CPU 0. turnout is measured twice: the file as an upstream asset under [cache] prefixes (a HIT
# after the first request) and the same file from a [[static]] directory (held in memory).
# Prints a Markdown section on stdout; compare.sh appends it to benches/RESULTS.md.
#
#   benches/cache-vs-nginx.sh path/to/turnout [rounds]
#
# Needs nginx, wrk, curl and taskset; compare.sh installs them. Every process it starts is its
# own child, stopped by pid; only loopback is ever a target.
set -euo pipefail
bin=${1:?usage: cache-vs-nginx.sh path/to/turnout [rounds]}
rounds=${2:-3}
work=$(mktemp -d)
# nginx's workers drop to an unprivileged user when started as root: let them read the files.
chmod 755 "$work"
pids=()
stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT

backend=127.0.0.1:9111
listen=127.0.0.1:8190

# The file: 4 KiB, like a small hashed script or stylesheet of a build.
mkdir -p "$work/www/assets" "$work/www/static"
head -c 4096 /dev/zero | tr '\0' 'x' > "$work/www/assets/app.js"
cp "$work/www/assets/app.js" "$work/www/static/app.js"

# The app's side for turnout's cache: nginx on CPU 0 serving the file with a lifetime.
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

# The servers under test, each on CPU 1 with one worker. Set $server_pid and $path.
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
    tcp_nopush on;
    keepalive_requests 1000000;
    include /etc/nginx/mime.types;
    server { listen $listen; root $work/www; }
}
EOF
    taskset -c 1 nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
    server_pid=$!
    path=/static/app.js
}

start_turnout() {
    cat > "$work/turnout.toml" <<EOF
[server]
listen = "$listen"
admin = "127.0.0.1:9912"
workers = 1
shutdown_delay = "0s"
shutdown_timeout = "2s"
[[static]]
prefix = "/static/"
root = "$work/www/static"
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
start_turnout_cache() { start_turnout; path=/assets/app.js; }
start_turnout_static() { start_turnout; path=/static/app.js; }

wait_ready() {
    for _ in $(seq 100); do
        if curl -fs --max-time 1 "http://$listen$path" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "cache-vs-nginx.sh: $1 did not answer on $listen" >&2
    return 1
}

servers=(nginx turnout_cache turnout_static)
declare -A runs
for round in $(seq "$rounds"); do
    for server in "${servers[@]}"; do
        "start_$server"
        pids=("$backend_pid" "$server_pid")
        wait_ready "$server"
        taskset -c 0 timeout 30 wrk -t1 -c50 -d2s "http://$listen$path" >/dev/null # warm-up
        out=$(taskset -c 0 timeout 60 wrk -t1 -c50 -d10s "http://$listen$path")
        rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' <<<"$out")
        if grep -q "Non-2xx\|Socket errors" <<<"$out"; then
            echo "cache-vs-nginx.sh: $server round $round had errors: $(grep 'Non-2xx\|Socket errors' <<<"$out")" >&2
        fi
        runs[$server]="${runs[$server]:-} ${rps%.*}"
        kill "$server_pid"
        wait "$server_pid" 2>/dev/null || true
    done
done

median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
nginx_rps=$(median "${runs[nginx]}")

echo "## A cached 4 KiB asset vs nginx serving it from disk (benches/cache-vs-nginx.sh)"
echo
echo "wrk -t1 -c50 -d10s (keep-alive) on CPU 0; the server alone on CPU 1 with one worker (nginx: sendfile on); $rounds rounds, interleaved; median."
echo
echo "| server | req/s (median) | vs nginx | runs req/s |"
echo "|---|---:|---:|---|"
for server in "${servers[@]}"; do
    m=$(median "${runs[$server]}")
    echo "| $server | $m | $(awk -v a="$m" -v b="$nginx_rps" 'BEGIN {printf "%.2f", a / b}') | ${runs[$server]# } |"
done
