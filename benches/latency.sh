#!/usr/bin/env bash
# Latency under a moderate load, nginx beside one or more turnout builds, pinned as the shared
# harness pins (the proxy alone on CPU 1 with one worker, wrk and the nginx backend on CPU 0):
#   - "think": 50 keep-alive connections, each waiting THINK_MS (default 5) between its
#     answer and its next request (wrk's delay()), so the proxy is far from saturated;
#   - "closed": 10 keep-alive connections, each sending its next request as soon as its answer
#     arrives.
# Small body. Rounds interleaved; p50 and p99 (wrk --latency) in microseconds, median over the
# rounds, with each build's ratio to nginx (below 1: faster than nginx).
#
#   benches/latency.sh [--rounds N] [--seconds S] [--log] BIN [BIN...]
#
# --log runs turnout with its access log on (RUST_LOG=info, as shipped) to a file; without it
# RUST_LOG=warn. nginx's access log is off in both (as the shared harness runs it). Needs nginx,
# wrk, curl and taskset: installed if missing. Only loopback is ever a target.
set -euo pipefail
think_ms=${THINK_MS:-5}
missing=""
for tool in nginx wrk curl taskset; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    echo "latency.sh: installing nginx wrk curl util-linux (missing:$missing)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk curl util-linux >/dev/null
fi
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=benches/pinned.sh
. "$here/pinned.sh"
ab_args "$@"
export TURNOUT_LOG=$log

backend=127.0.0.1:9231
listen=127.0.0.1:8290
nginx_conf backend <<EOF
    keepalive_requests 1000000;
    server {
        listen $backend;
        location / { return 200 "blue\n"; }
    }
EOF
start_nginx_on backend 0
backend_pid=$started_pid
printf 'function delay()\n    return %s\nend\n' "$think_ms" > "$work/think.lua"


# wrk's latency percentile $1 ("50%", "99%") in whole microseconds, from its report on stdin.
percentile() {
    awk -v p="$1" '$1 == p {
        v = $2
        if (v ~ /us$/) { sub(/us$/, "", v); us = v }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); us = v * 1000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); us = v * 1000000 }
        printf "%d", us
    }'
}

declare -A p50 p99 rps
for _ in $(seq "$rounds"); do
    for target in "${targets[@]}"; do
        start_target 127.0.0.1:9904
        taskset -c 0 wrk -t1 -c50 -d2s "http://$listen/" >/dev/null # warm-up
        for load in think closed; do
            if [ "$load" = think ]; then
                out=$(taskset -c 0 wrk -t1 -c50 -d"${seconds}s" --latency -s "$work/think.lua" "http://$listen/")
            else
                out=$(taskset -c 0 wrk -t1 -c10 -d"${seconds}s" --latency "http://$listen/")
            fi
            p50[$target/$load]="${p50[$target/$load]:-} $(percentile 50% <<<"$out")"
            p99[$target/$load]="${p99[$target/$load]:-} $(percentile 99% <<<"$out")"
            rps[$target/$load]="${rps[$target/$load]:-} $(wrk_rps <<<"$out")"
        done
        kill "$proxy_pid"
        wait "$proxy_pid" 2>/dev/null || true
    done
done

echo "## Latency under a moderate load (benches/latency.sh)"
echo
echo "The proxy on CPU 1 with one worker, wrk -t1 and the nginx backend on CPU 0; think = 50 connections each waiting ${think_ms} ms between requests, closed = 10 connections back to back; ${seconds} s each, $rounds rounds interleaved, median. Microseconds. turnout's RUST_LOG=$log."
echo
echo "| target | load | req/s | p50 | p50 vs nginx | p99 | p99 vs nginx | runs p50 | runs p99 |"
echo "|---|---|---:|---:|---:|---:|---:|---|---|"
for load in think closed; do
    base50=$(median "${p50[nginx/$load]}")
    base99=$(median "${p99[nginx/$load]}")
    for target in "${targets[@]}"; do
        name=$target
        [ "$target" = nginx ] || name="turnout ${bins[${target#t}]}"
        a=$(median "${p50[$target/$load]}")
        b=$(median "${p99[$target/$load]}")
        echo "| $name | $load | $(median "${rps[$target/$load]}") | $a | $(ratio "$a" "$base50") | $b | $(ratio "$b" "$base99") | ${p50[$target/$load]# } | ${p99[$target/$load]# } |"
    done
done
