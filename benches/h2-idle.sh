#!/usr/bin/env bash
# The two comparisons the shared harness does not make: HTTP/2 throughput (h2c with prior
# knowledge, h2load: 100 000 requests, 10 connections, 10 streams each) and the memory cost of
# 10 000 idle keep-alive client connections, turnout beside nginx, pinned as the harness pins:
# the proxy alone on CPU 1 with one worker, h2load / the idle client and the backend on CPU 0.
# Prints a Markdown section on stdout; compare.sh appends it to benches/RESULTS.md.
#
#   benches/h2-idle.sh path/to/turnout [rounds]
#
# Needs nginx, h2load (nghttp2-client), curl, python3 and taskset; compare.sh installs them.
# Every process it starts is its own child, stopped by pid; only loopback is ever a target.
set -euo pipefail
bin=${1:?usage: h2-idle.sh path/to/turnout [rounds]}
rounds=${2:-3}
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=benches/pinned.sh
. "$here/pinned.sh"

backend=127.0.0.1:9101
listen=127.0.0.1:8180

# The backend: one nginx worker on CPU 0 answering "blue\n".
nginx_conf backend <<EOF
    server { listen $backend; location / { return 200 "blue\n"; } }
EOF

start_backend() {
    start_nginx_on backend 0
    backend_pid=$started_pid
}

# The proxies under test, each on CPU 1 with one worker. Sets $proxy_pid.
start_nginx() {
    printf '        listen %s http2;\n        listen 127.0.0.1:8181;\n' "$listen" |
        nginx_proxy_conf nginx "$backend" 12000 "worker_rlimit_nofile 20000;"
    start_nginx_on nginx 1
    proxy_pid=$started_pid
}

start_turnout() {
    start_turnout_on_cpu1 "$bin" "$listen" 127.0.0.1:9902 "$backend" </dev/null
    proxy_pid=$started_pid
}

start_backend
declare -A runs
for round in $(seq "$rounds"); do
    for proxy in nginx turnout; do
        "start_$proxy"
        pids=("$backend_pid" "$proxy_pid")
        wait_answer "$proxy" --http2-prior-knowledge "http://$listen/"
        taskset -c 0 timeout 60 h2load -n 20000 -c 10 -m 10 "http://$listen/" >/dev/null # warm-up
        out=$(taskset -c 0 timeout 120 h2load -n 100000 -c 10 -m 10 "http://$listen/")
        rps=$(sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
        failed=$(sed -n 's/^requests: .* \([0-9]*\) failed.*/\1/p' <<<"$out")
        runs[$proxy]="${runs[$proxy]:-} ${rps%.*}"
        [ "${failed:-1}" = 0 ] || echo "h2-idle.sh: $proxy round $round: $failed requests failed" >&2
        kill "$proxy_pid"
        wait "$proxy_pid" 2>/dev/null || true
    done
done

nginx_rps=$(median "${runs[nginx]}")

echo "## HTTP/2 (h2c) and idle connections (benches/h2-idle.sh)"
echo
echo "h2load -n 100000 -c 10 -m 10 over h2c (prior knowledge) to the proxy on CPU 1 (one worker), upstream HTTP/1.1 keep-alive to one nginx backend on CPU 0; $rounds rounds, interleaved; median."
echo
echo "| proxy | req/s (median) | vs nginx | runs req/s |"
echo "|---|---:|---:|---|"
for proxy in nginx turnout; do
    m=$(median "${runs[$proxy]}")
    echo "| $proxy | $m | $(ratio "$m" "$nginx_rps") | ${runs[$proxy]# } |"
done
echo
echo "10 000 HTTP/1.1 keep-alive client connections, each after one request, held idle (benches/idle_conns.py on CPU 0); RSS of the proxy's process tree before the first and after the last."
echo
echo "| proxy | connections held | errors | RSS before MB | RSS idle MB | added MB | KiB per connection |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for proxy in nginx turnout; do
    "start_$proxy"
    pids=("$backend_pid" "$proxy_pid")
    wait_answer "$proxy" --http2-prior-knowledge "http://$listen/"
    # nginx's master forks the worker: sum the tree. The h1 port: nginx 8181, turnout the same.
    target=$listen
    [ "$proxy" = nginx ] && target=127.0.0.1:8181
    tree=$({ echo "$proxy_pid"; pgrep -P "$proxy_pid" || true; } | paste -sd, -)
    taskset -c 0 timeout 180 python3 "$here/idle_conns.py" --target "$target" --pids "$tree" \
        --count 10000 --label "$proxy"
    kill "$proxy_pid"
    wait "$proxy_pid" 2>/dev/null || true
done
