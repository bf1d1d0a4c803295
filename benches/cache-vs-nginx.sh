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
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=benches/pinned.sh
. "$here/pinned.sh"

backend=127.0.0.1:9111
listen=127.0.0.1:8190

start_assets_backend "$backend"
mkdir -p "$work/www/static"
cp "$work/www/assets/app.js" "$work/www/static/app.js"

# The servers under test, each on CPU 1 with one worker. Set $server_pid and $path.
start_nginx() {
    nginx_conf nginx <<EOF
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    include /etc/nginx/mime.types;
    server { listen $listen; root $work/www; }
EOF
    start_nginx_on nginx 1
    server_pid=$started_pid
    path=/static/app.js
}

start_turnout() {
    start_turnout_on_cpu1 "$bin" "$listen" 127.0.0.1:9912 "$backend" <<EOF
[[static]]
prefix = "/static/"
root = "$work/www/static"
[cache]
prefixes = ["/assets/"]
EOF
    server_pid=$started_pid
}
start_turnout_cache() { start_turnout; path=/assets/app.js; }
start_turnout_static() { start_turnout; path=/static/app.js; }

servers=(nginx turnout_cache turnout_static)
declare -A runs
for round in $(seq "$rounds"); do
    for server in "${servers[@]}"; do
        "start_$server"
        pids=("$backend_pid" "$server_pid")
        wait_answer "$server" "http://$listen$path"
        taskset -c 0 timeout 30 wrk -t1 -c50 -d2s "http://$listen$path" >/dev/null # warm-up
        out=$(taskset -c 0 timeout 60 wrk -t1 -c50 -d10s "http://$listen$path")
        if grep -q "Non-2xx\|Socket errors" <<<"$out"; then
            echo "cache-vs-nginx.sh: $server round $round had errors: $(grep 'Non-2xx\|Socket errors' <<<"$out")" >&2
        fi
        runs[$server]="${runs[$server]:-} $(wrk_rps <<<"$out")"
        kill "$server_pid"
        wait "$server_pid" 2>/dev/null || true
    done
done

nginx_rps=$(median "${runs[nginx]}")

echo "## A cached 4 KiB asset vs nginx serving it from disk (benches/cache-vs-nginx.sh)"
echo
echo "wrk -t1 -c50 -d10s (keep-alive) on CPU 0; the server alone on CPU 1 with one worker (nginx: sendfile on); $rounds rounds, interleaved; median."
echo
echo "| server | req/s (median) | vs nginx | runs req/s |"
echo "|---|---:|---:|---|"
for server in "${servers[@]}"; do
    m=$(median "${runs[$server]}")
    echo "| $server | $m | $(ratio "$m" "$nginx_rps") | ${runs[$server]# } |"
done
