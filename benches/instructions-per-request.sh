#!/usr/bin/env bash
# Instructions per request of one or more turnout builds, counted by valgrind's callgrind: a
# deterministic A/B of a change on a machine whose clock is shared and noisy (the same binary
# varies by about 1% here, where cpu-per-request.sh's rounds vary by 25%). Each build serves
# N1, then N2, keep-alive requests of a small body from an nginx backend (Python's
# http.client as the client); the difference of the two totals over N2-N1 leaves start-up
# and shutdown out. User space only (callgrind counts no kernel time).
#
#   benches/instructions-per-request.sh [--runs R] [--requests N1,N2] BIN [BIN...]
#
# TURNOUT_LOG=info counts with the access log on (default warn: off); TURNOUT_LOG_FORMAT=json
# writes it as JSON lines ([log] format; default text); CALLGRIND_KEEP=DIR keeps
# each run's callgrind output there (BIN-N.out) for callgrind_annotate.
# Needs valgrind, nginx, curl and python3. Only loopback is ever a target.
set -euo pipefail

runs=3
n1=300
n2=1300
while [ $# -gt 0 ]; do
    case $1 in
    --runs) runs=$2; shift 2 ;;
    --requests) n1=${2%,*}; n2=${2#*,}; shift 2 ;;
    *) break ;;
    esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--runs R] [--requests N1,N2] BIN [BIN...]" >&2; exit 64; }
case "$runs$n1$n2" in
*[!0-9]*) echo "$0: --runs and --requests take whole numbers (--requests N1,N2)" >&2; exit 64 ;;
esac
if [ "$runs" -lt 1 ] || [ "$n2" -le "$n1" ]; then
    echo "$0: needs --runs 1 or more and N2 > N1" >&2
    exit 64
fi
for bin in "$@"; do
    [ -x "$bin" ] || { echo "$0: $bin is not an executable turnout" >&2; exit 66; }
done
for tool in valgrind nginx curl python3; do
    command -v "$tool" >/dev/null || { echo "$0: needs $tool" >&2; exit 69; }
done

work=$(mktemp -d)
chmod 755 "$work"
nginx_pid=
cleanup() {
    [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

backend=127.0.0.1:18181
proxy=127.0.0.1:18182
mkdir -p "$work/nginx"
printf 'hello\n' > "$work/nginx/small"
chmod -R a+rX "$work"
cat > "$work/nginx/nginx.conf" <<NGINX
daemon off;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 1000000;
    server { listen $backend; location / { root $work/nginx; } }
}
NGINX
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" &
nginx_pid=$!

cat > "$work/turnout.toml" <<TOML
[server]
listen = "$proxy"
admin = "127.0.0.1:18183"
workers = 1
shutdown_delay = "0s"
shutdown_timeout = "2s"

[pools.blue]
servers = ["$backend"]

# No active checks: their timers would add instructions by the clock, not by the request, and
# a check timing out under valgrind would turn the pool down.
[health]
enabled = false

[routing]
active = "blue"

[log]
format = "${TURNOUT_LOG_FORMAT:-text}"
TOML

# The total instructions of one run of BIN serving N requests.
total() {
    local bin=$1 n=$2 pid
    RUST_LOG=${TURNOUT_LOG:-warn} valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
        "$bin" serve --config "$work/turnout.toml" 2>"$work/valgrind.log" &
    pid=$!
    for _ in $(seq 150); do
        curl -s -o /dev/null "http://$proxy/small" && break
        sleep 0.2
    done
    python3 - "$proxy" "$n" <<'PY'
import http.client, sys
host, port = sys.argv[1].split(":")
conn = http.client.HTTPConnection(host, int(port))
for _ in range(int(sys.argv[2])):
    conn.request("GET", "/small", headers={"Host": "app"})
    answer = conn.getresponse()
    answer.read()
    assert answer.status == 200, answer.status
PY
    kill -TERM "$pid"
    wait "$pid" || true
    if [ -n "${CALLGRIND_KEEP:-}" ]; then
        cp "$work/callgrind.out" "$CALLGRIND_KEEP/$(basename "$bin")-$n.out"
    fi
    awk '/^(summary|totals):/ { print $2; exit }' "$work/callgrind.out"
}

echo "| build | instructions per request, each run | median |"
echo "|---|---|---:|"
for bin in "$@"; do
    counts=()
    for _ in $(seq "$runs"); do
        a=$(total "$bin" "$n1")
        b=$(total "$bin" "$n2")
        counts+=($(( (b - a) / (n2 - n1) )))
    done
    median=$(printf '%s\n' "${counts[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
    echo "| $bin | ${counts[*]} | $median |"
done
