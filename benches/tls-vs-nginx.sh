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
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=benches/pinned.sh
. "$here/pinned.sh"

backend=127.0.0.1:9121
listen=127.0.0.1:8443
plain=127.0.0.1:8191

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=bench.test" -addext "subjectAltName=DNS:bench.test" \
    -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
chmod 644 "$work/key.pem"
# The app turnout caches from, on CPU 0.
start_assets_backend "$backend"

start_nginx() {
    nginx_conf nginx <<EOF
    sendfile on;
    keepalive_requests 1000000;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {
        listen $listen ssl;
        ssl_certificate $work/cert.pem;
        ssl_certificate_key $work/key.pem;
        root $work/www;
    }
EOF
    start_nginx_on nginx 1
    server_pid=$started_pid
}

start_turnout() {
    start_turnout_on_cpu1 "$bin" "$plain" 127.0.0.1:9913 "$backend" <<EOF
[tls]
listen = "$listen"
[[tls.certs]]
cert = "$work/cert.pem"
key = "$work/key.pem"
[cache]
prefixes = ["/assets/"]
EOF
    server_pid=$started_pid
}

url="https://bench.test:${listen##*:}/assets/app.js"
resolve="bench.test:${listen##*:}:127.0.0.1"
# wrk connects to the address in the URL; the name only matters for SNI, which both ignore.
target="https://$listen/assets/app.js"
servers=(nginx turnout)
loads=(keepalive handshake)
declare -A runs
for round in $(seq "$rounds"); do
    for server in "${servers[@]}"; do
        "start_$server"
        pids=("$backend_pid" "$server_pid")
        wait_answer "$server" -k --resolve "$resolve" "$url"
        for load in "${loads[@]}"; do
            extra=()
            [ "$load" = handshake ] && extra=(-H "Connection: close")
            taskset -c 0 timeout 30 wrk -t1 -c50 -d2s "${extra[@]}" "$target" >/dev/null # warm-up
            out=$(taskset -c 0 timeout 60 wrk -t1 -c50 -d8s "${extra[@]}" "$target")
            if grep -q "Non-2xx" <<<"$out"; then
                echo "tls-vs-nginx.sh: $server $load round $round: $(grep 'Non-2xx' <<<"$out")" >&2
            fi
            runs[$server.$load]="${runs[$server.$load]:-} $(wrk_rps <<<"$out")"
        done
        kill "$server_pid"
        wait "$server_pid" 2>/dev/null || true
    done
done

echo "## HTTPS: turnout vs nginx terminating TLS (benches/tls-vs-nginx.sh)"
echo
echo "wrk -t1 -c50 -d8s on CPU 0; the server alone on CPU 1 with one worker; ECDSA P-256; a 4 KiB file (nginx from disk, turnout from its cache); $rounds rounds, interleaved; median."
echo
echo "| load | nginx req/s | turnout req/s | turnout vs nginx | runs (nginx / turnout) |"
echo "|---|---:|---:|---:|---|"
for load in "${loads[@]}"; do
    n=$(median "${runs[nginx.$load]}")
    t=$(median "${runs[turnout.$load]}")
    echo "| $load | $n | $t | $(ratio "$t" "$n") | ${runs[nginx.$load]# } / ${runs[turnout.$load]# } |"
done
