#!/usr/bin/env bash
# TLS termination: turnout against nginx, both serving one 4 KiB file over HTTPS (nginx from
# disk, turnout from its cache, so neither pays for an upstream), pinned as the shared harness
# pins: each server alone on CPU 1 with one worker, wrk on CPU 0. Three loads: 50 keep-alive
# connections (the cost of encrypting); a new connection, so a full handshake, per request
# (wrk, whose OpenSSL client never resumes: a first visit); and a returning client resuming
# its session (`openssl s_time -reuse`: one client, a connection at a time, as a browser that
# comes back does; both servers issue TLS 1.3 tickets, nginx by default). Each with an ECDSA
# P-256 and an RSA 2048 certificate, made here with openssl. Prints a Markdown section.
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
    -keyout "$work/ecdsa-key.pem" -out "$work/ecdsa-cert.pem" 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -days 2 \
    -subj "/CN=bench.test" -addext "subjectAltName=DNS:bench.test" \
    -keyout "$work/rsa-key.pem" -out "$work/rsa-cert.pem" 2>/dev/null
chmod 644 "$work/ecdsa-key.pem" "$work/rsa-key.pem"
# The app turnout caches from, on CPU 0.
start_assets_backend "$backend"

start_nginx() {
    nginx_conf nginx <<EOF
    sendfile on;
    keepalive_requests 1000000;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {
        listen $listen ssl;
        ssl_certificate $work/$cert-cert.pem;
        ssl_certificate_key $work/$cert-key.pem;
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
cert = "$work/$cert-cert.pem"
key = "$work/$cert-key.pem"
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
certs=(ecdsa rsa)
loads=(keepalive handshake resumed)
declare -A runs
for round in $(seq "$rounds"); do
    for cert in "${certs[@]}"; do
        for server in "${servers[@]}"; do
            "start_$server"
            pids=("$backend_pid" "$server_pid")
            wait_answer "$server" -k --resolve "$resolve" "$url"
            for load in "${loads[@]}"; do
                if [ "$load" = resumed ]; then
                    # Connections per real second, each after the first resuming its session.
                    out=$(taskset -c 0 timeout 60 openssl s_time -connect "$listen" -www /assets/app.js -reuse -time 8 2>/dev/null)
                    rate=$(awk '/connections in [0-9]+ real seconds/ { printf "%d", $1 / $4 }' <<<"$out")
                else
                    extra=()
                    [ "$load" = handshake ] && extra=(-H "Connection: close")
                    taskset -c 0 timeout 30 wrk -t1 -c50 -d2s "${extra[@]}" "$target" >/dev/null # warm-up
                    out=$(taskset -c 0 timeout 60 wrk -t1 -c50 -d8s "${extra[@]}" "$target")
                    if grep -q "Non-2xx" <<<"$out"; then
                        echo "tls-vs-nginx.sh: $server $cert $load round $round: $(grep 'Non-2xx' <<<"$out")" >&2
                    fi
                    rate=$(wrk_rps <<<"$out")
                fi
                runs[$server.$cert.$load]="${runs[$server.$cert.$load]:-} ${rate:-0}"
            done
            kill "$server_pid"
            wait "$server_pid" 2>/dev/null || true
        done
    done
done

echo "## HTTPS: turnout vs nginx terminating TLS (benches/tls-vs-nginx.sh)"
echo
echo "The server alone on CPU 1 with one worker, the client on CPU 0; a 4 KiB file (nginx from disk, turnout from its cache). keepalive: wrk -t1 -c50 -d8s; handshake: the same with Connection: close (a full handshake per request: wrk's client never resumes); resumed: openssl s_time -reuse -time 8 (one client, a connection at a time, each resuming the first's session), connections per second. $rounds rounds, interleaved; median."
echo
echo "| certificate | load | nginx | turnout | turnout vs nginx | runs (nginx / turnout) |"
echo "|---|---|---:|---:|---:|---|"
for cert in "${certs[@]}"; do
    for load in "${loads[@]}"; do
        n=$(median "${runs[nginx.$cert.$load]}")
        t=$(median "${runs[turnout.$cert.$load]}")
        echo "| $cert | $load | $n | $t | $(ratio "$t" "$n") | ${runs[nginx.$cert.$load]# } / ${runs[turnout.$cert.$load]# } |"
    done
done
