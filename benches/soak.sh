#!/usr/bin/env bash
# benches/soak.sh [TURNOUT_BIN] [SECONDS]: a soak of turnout under mixed load, on loopback only.
# For SECONDS (default 1800, 30 minutes), all at once: keep-alive load (wrk), a new connection
# per request (wrk, Connection: close), slowloris clients and slow readers (slowhttptest), and a
# blue/green switch every 2 s through the admin API. Every 10 s it samples turnout's resident
# memory and open file descriptors; at the end it prints the samples and compares the last
# minute with the minute after warm-up: nothing may keep growing. Exit 0 when it holds.
# Installs nginx (the two app servers), wrk and slowhttptest with apt when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/turnout}
secs=${2:-1800}
[ -x "$bin" ] || cargo build --release --locked
missing=()
for tool in nginx wrk slowhttptest curl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The scratch folder, the child processes (stopped on exit), one-worker nginx configs, waits.
# shellcheck source=benches/pinned.sh
. benches/pinned.sh

port=18080 admin=18990 blue=18081 green=18082
nginx_conf apps <<NGINX
    server { listen 127.0.0.1:$blue; location / { return 200 "blue\n"; } }
    server { listen 127.0.0.1:$green; location / { return 200 "green\n"; } }
NGINX
nginx -c "$work/apps/nginx.conf" -p "$work/apps" &
pids+=($!)

cat > "$work/turnout.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin = "127.0.0.1:$admin"
workers = 1
client_header_timeout = "5s"
client_send_timeout = "10s"
[pools.blue]
servers = ["127.0.0.1:$blue"]
[pools.green]
servers = ["127.0.0.1:$green"]
[routing]
active = "blue"
TOML
RUST_LOG=warn "$bin" serve --config "$work/turnout.toml" 2>"$work/turnout.log" &
turnout=$!
pids+=("$turnout")
wait_answer turnout "http://127.0.0.1:$port/"

wrk -t1 -c50 -d"${secs}s" "http://127.0.0.1:$port/" >"$work/wrk-keepalive.txt" 2>&1 &
pids+=($!)
wrk -t1 -c10 -d"${secs}s" -H 'Connection: close' "http://127.0.0.1:$port/" >"$work/wrk-close.txt" 2>&1 &
pids+=($!)
# Slowloris: 300 connections sending a header line every 10 s (turnout cuts them at 5 s).
slowhttptest -H -c 300 -r 50 -i 10 -l "$secs" -u "http://127.0.0.1:$port/" -p 3 >"$work/slowloris.txt" 2>&1 &
pids+=($!)
# Slow readers: 100 connections reading 32 bytes every 3 s of pipelined responses.
slowhttptest -X -c 100 -r 20 -w 512 -y 1024 -n 3 -z 32 -k 3 -l "$secs" -u "http://127.0.0.1:$port/" -p 3 >"$work/slowread.txt" 2>&1 &
pids+=($!)
(
    colour=green
    end=$((SECONDS + secs))
    while [ "$SECONDS" -lt "$end" ]; do
        curl -fsS -o /dev/null --max-time 5 --json "{\"to\":\"$colour\"}" "http://127.0.0.1:$admin/v1/switch" || echo "switch to $colour failed"
        if [ "$colour" = green ]; then colour=blue; else colour=green; fi
        sleep 2
    done
) >"$work/switches.txt" 2>&1 &
pids+=($!)

echo "seconds rss_kib fds"
samples=()
start=$SECONDS
while [ $((SECONDS - start)) -lt "$secs" ]; do
    sleep 10
    kill -0 "$turnout" 2>/dev/null || { echo "turnout exited"; cat "$work/turnout.log"; exit 1; }
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$turnout/status")
    fds=$(find "/proc/$turnout/fd" -mindepth 1 -maxdepth 1 | wc -l)
    echo "$((SECONDS - start)) $rss $fds"
    samples+=("$rss $fds")
done
wait_for_wrk() { for f in "$work"/wrk-*.txt; do echo "== $(basename "$f")"; cat "$f"; done; }
sleep 2
wait_for_wrk
echo "== switches failed: $(grep -c failed "$work/switches.txt" || true)"
echo "== turnout warnings and errors: $(grep -c -E 'WARN|ERROR' "$work/turnout.log" || true)"

# The minute after warm-up (samples 7-12) against the last minute (the last 6 samples).
n=${#samples[@]}
if [ "$n" -lt 18 ]; then
    echo "soak: too short to judge growth ($n samples; 180 s at least)"
    exit 0
fi
early=$(printf '%s\n' "${samples[@]:6:6}" | awk '{r+=$1; f+=$2} END {printf "%d %d", r/NR, f/NR}')
late=$(printf '%s\n' "${samples[@]: -6}" | awk '{r+=$1; f+=$2} END {printf "%d %d", r/NR, f/NR}')
read -r early_rss early_fds <<<"$early"
read -r late_rss late_fds <<<"$late"
echo "== after warm-up: rss ${early_rss} KiB, fds ${early_fds}; last minute: rss ${late_rss} KiB, fds ${late_fds}"
# Growth beyond 25% of the memory, or 25% plus 50 descriptors, is growth without bound here.
if [ "$late_rss" -gt $((early_rss * 125 / 100)) ] || [ "$late_fds" -gt $((early_fds * 125 / 100 + 50)) ]; then
    echo "soak: FAIL (something grew)"
    exit 1
fi
echo "soak: PASS"
