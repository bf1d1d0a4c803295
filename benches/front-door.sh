#!/usr/bin/env bash
# The front door's cost on the small-body path, turnout beside nginx doing the same, pinned as
# the shared harness pins (each server alone on CPU 1 with one worker, wrk and the backend on
# CPU 0, access logs off on both): plain proxying; a per-client rate that never refuses
# (nginx limit_req / turnout [limits]); basic auth with one bcrypt user, cost 5 (nginx
# auth_basic hashes on every request; turnout remembers a verified credential), and nginx with a
# {SHA} hash, the cheap one its users often keep; gzip of a 16 KiB JSON body at level 1 (nginx
# gzip on / turnout [compression]). Then turnout's memory for 100 000 clients tracked by
# [limits] (distinct X-Forwarded-For behind a trusted proxy). Prints a Markdown section.
#
#   benches/front-door.sh path/to/turnout [rounds]
#
# Needs nginx, wrk, curl, taskset and htpasswd (apache2-utils): installed if missing. Every
# process it starts is its own child, stopped by pid; only loopback is ever a target.
set -euo pipefail
bin=${1:?usage: front-door.sh path/to/turnout [rounds]}
rounds=${2:-3}
secs=${FRONT_DOOR_SECS:-5}
here=$(cd "$(dirname "$0")" && pwd)
missing=""
for tool in nginx wrk curl taskset htpasswd; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    echo "front-door.sh: installing nginx wrk curl util-linux apache2-utils (missing:$missing)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk curl util-linux apache2-utils >/dev/null
fi
# shellcheck source=benches/pinned.sh
. "$here/pinned.sh"

backend=127.0.0.1:9121
listen=127.0.0.1:8191

# The app: "ok" for the small body, a 16 KiB JSON document for compression.
mkdir -p "$work/www"
printf 'ok\n' > "$work/www/small"
python3 - "$work/www/data.json" <<'PY'
import json, sys
rows = [{"id": i, "name": "item-%d" % i, "price": i * 3 % 97, "tags": ["a", "b"]} for i in range(10000)]
text = json.dumps(rows)
open(sys.argv[1], "w").write(text[: 16 * 1024 - 2] + "]\n")
PY
nginx_conf backend <<EOF
    keepalive_requests 1000000;
    server {
        listen $backend;
        root $work/www;
        location = / { return 200 "ok\n"; }
        location = /small { default_type text/plain; }
        location = /data.json { default_type application/json; }
    }
EOF
start_nginx_on backend 0
backend_pid=$started_pid

htpasswd -cbB -C 5 "$work/bcrypt.users" ann 'correct horse' 2>/dev/null
htpasswd -cbs "$work/sha.users" ann 'correct horse' 2>/dev/null
auth="Authorization: Basic $(printf 'ann:correct horse' | base64)"

# nginx as the proxy under test, with the feature's lines ($1) in its server block.
start_nginx_with() {
    nginx_conf nginx <<EOF
    keepalive_requests 1000000;
    limit_req_zone \$binary_remote_addr zone=perip:10m rate=1000000r/s;
    gzip_types application/json;
    gzip_comp_level 1;
    gzip_proxied any;
    gzip_min_length 1024;
    upstream app { server $backend; keepalive 64; }
    server {
        listen $listen;
        $1
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
EOF
    start_nginx_on nginx 1
    server_pid=$started_pid
}

# turnout with the config tables on stdin.
start_turnout_with() {
    start_turnout_on_cpu1 "$bin" "$listen" 127.0.0.1:9913 "$backend"
    server_pid=$started_pid
}

# Each case: a server started, the path, and wrk's extra header.
case_nginx_plain() { start_nginx_with ""; path=/small; header=""; }
case_turnout_plain() { start_turnout_with </dev/null; path=/small; header=""; }
case_nginx_limits() { start_nginx_with "limit_req zone=perip burst=1000000 nodelay;"; path=/small; header=""; }
case_turnout_limits() {
    start_turnout_with <<EOF
[limits]
[[limits.rate]]
name = "per-client"
rate = "1000000/s"
burst = 1000000
EOF
    path=/small; header=""
}
case_nginx_auth_bcrypt() { start_nginx_with "auth_basic \"staff\"; auth_basic_user_file $work/bcrypt.users;"; path=/small; header=$auth; }
case_nginx_auth_sha() { start_nginx_with "auth_basic \"staff\"; auth_basic_user_file $work/sha.users;"; path=/small; header=$auth; }
case_turnout_auth() {
    start_turnout_with <<EOF
[[auth]]
name = "staff"
kind = "basic"
users_file = "$work/bcrypt.users"
EOF
    path=/small; header=$auth
}
case_nginx_gzip() { start_nginx_with "gzip on;"; path=/data.json; header="Accept-Encoding: gzip"; }
case_nginx_json() { start_nginx_with ""; path=/data.json; header=""; }
case_turnout_gzip() {
    start_turnout_with <<EOF
[compression]
encodings = ["gzip"]
EOF
    path=/data.json; header="Accept-Encoding: gzip"
}
case_turnout_json() { start_turnout_with </dev/null; path=/data.json; header=""; }

cases=(nginx_plain turnout_plain nginx_limits turnout_limits nginx_auth_bcrypt nginx_auth_sha
    turnout_auth nginx_json turnout_json nginx_gzip turnout_gzip)
declare -A runs
for round in $(seq "$rounds"); do
    for c in "${cases[@]}"; do
        "case_$c"
        pids=("$backend_pid" "$server_pid")
        hdr=(); [ -n "$header" ] && hdr=(-H "$header")
        wait_answer "$c" "${hdr[@]}" "http://$listen$path"
        taskset -c 0 timeout 30 wrk -t1 -c50 -d2s "${hdr[@]}" "http://$listen$path" >/dev/null
        out=$(taskset -c 0 timeout 60 wrk -t1 -c50 "-d${secs}s" "${hdr[@]}" "http://$listen$path")
        if grep -q "Non-2xx\|Socket errors" <<<"$out"; then
            # A run with failures measures the failures: it is refused, not reported.
            echo "front-door.sh: $c round $round had errors: $(grep 'Non-2xx\|Socket errors' <<<"$out")" >&2
            exit 1
        fi
        runs[$c]="${runs[$c]:-} $(wrk_rps <<<"$out")"
        kill "$server_pid"
        wait "$server_pid" 2>/dev/null || true
    done
done

m() { median "${runs[$1]}"; }
row() { # case, what, baseline of the same server
    echo "| $1 | $2 | $(m "$1") | $(ratio "$(m "$1")" "$(m "$3")") | ${runs[$1]# } |"
}
echo "## The front door on the small-body path (benches/front-door.sh)"
echo
echo "wrk -t1 -c50 -d${secs}s (keep-alive) on CPU 0 with the backend (nginx); the server alone on CPU 1 with one worker; access logs off; $rounds rounds, interleaved; median req/s."
echo
echo "| case | what | req/s | vs the same server plain | runs |"
echo "|---|---|---:|---:|---|"
row nginx_plain "proxy, 3-byte body" nginx_plain
row turnout_plain "proxy, 3-byte body" turnout_plain
row nginx_limits "limit_req (never refusing)" nginx_plain
row turnout_limits "[limits] rate (never refusing)" turnout_plain
row nginx_auth_bcrypt "auth_basic, bcrypt cost 5" nginx_plain
row nginx_auth_sha "auth_basic, {SHA}" nginx_plain
row turnout_auth "[[auth]] basic, bcrypt cost 5" turnout_plain
row nginx_json "proxy, 16 KiB JSON" nginx_json
row turnout_json "proxy, 16 KiB JSON" turnout_json
row nginx_gzip "gzip on, level 1" nginx_json
row turnout_gzip "[compression] gzip (level 1)" turnout_json
echo
echo "| turnout vs nginx | ratio |"
echo "|---|---:|"
echo "| plain | $(ratio "$(m turnout_plain)" "$(m nginx_plain)") |"
echo "| limits | $(ratio "$(m turnout_limits)" "$(m nginx_limits)") |"
echo "| basic auth (bcrypt both) | $(ratio "$(m turnout_auth)" "$(m nginx_auth_bcrypt)") |"
echo "| basic auth (turnout bcrypt, nginx {SHA}) | $(ratio "$(m turnout_auth)" "$(m nginx_auth_sha)") |"
echo "| gzip of 16 KiB JSON | $(ratio "$(m turnout_gzip)" "$(m nginx_gzip)") |"

# Memory for 100 000 tracked clients: each request from another address behind a trusted
# proxy; RSS after a warm-up from one client, then after 100 000 distinct ones. The rate (one an
# hour, a burst of 20) keeps every key: none has refilled when the sweep looks, the worst case.
TURNOUT_ROUTING='trusted_proxies = ["127.0.0.1"]' start_turnout_on_cpu1 "$bin" "$listen" 127.0.0.1:9913 "$backend" <<EOF
[limits]
requests_per_client = 100
[[limits.rate]]
name = "per-client"
rate = "1/h"
burst = 20
EOF
server_pid=$started_pid
pids=("$backend_pid" "$server_pid")
wait_answer turnout "http://$listen/small"
cat > "$work/clients.lua" <<'LUA'
-- Each request from the next of 100 000 addresses (10.x.y.z), then stop.
local n = 0
request = function()
    n = n + 1
    if n > 100000 then wrk.thread:stop() end
    local ip = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
    return wrk.format("GET", "/small", { ["X-Forwarded-For"] = ip })
end
LUA
taskset -c 0 timeout 30 wrk -t1 -c10 -d2s "http://$listen/small" >/dev/null
rss() { awk '/^VmHWM/ {print $2}' "/proc/$server_pid/status"; }
before=$(rss)
taskset -c 0 timeout 120 wrk -t1 -c10 -d60s -s "$work/clients.lua" "http://$listen/small" >"$work/clients.out"
after=$(rss)
sent=$(awk '/requests in/ {print $1}' "$work/clients.out")
# Keyed by each address, none is over its burst: a refusal would mean one shared key.
refused=$(awk '/Non-2xx/ {print $NF}' "$work/clients.out")
echo
echo "Memory for 100 000 tracked clients ([limits] rate + requests_per_client, keyed by the address behind a trusted proxy): $sent requests from distinct addresses, ${refused:-0} refused; peak RSS (VmHWM) $before KiB before, $after KiB after: +$((after - before)) KiB, $(awk -v a="$after" -v b="$before" 'BEGIN {printf "%.0f", (a - b) * 1024 / 100000}') bytes per client."
