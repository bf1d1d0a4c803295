#!/usr/bin/env bash
# HTTP/1.1 keep-alive throughput and CPU time per request of the proxy's core, nginx beside one
# or more turnout builds (an A/B of a change), pinned as the shared harness pins: the proxy
# alone on CPU 1 with one worker, wrk (-t1 -c50) and the nginx backend on CPU 0. Rounds are
# interleaved; the median is reported, with each build's ratio to nginx. The user/system split
# shows where a gap is (user space or the kernel).
#
#   benches/cpu-per-request.sh [--rounds N] [--seconds S] [--log] BIN [BIN...]
#
# --log runs turnout with its access log on (RUST_LOG=info, as shipped) to a file; without it
# RUST_LOG=warn. Only loopback is ever a target.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=benches/pinned.sh
. "$here/pinned.sh"
ab_args "$@"
export TURNOUT_LOG=$log

backend=127.0.0.1:9201
listen=127.0.0.1:8280
mkdir -p "$work/www"
head -c 16384 /dev/zero | tr '\0' 'x' > "$work/www/16k"
nginx_conf backend <<EOF
    keepalive_requests 1000000;
    server {
        listen $backend;
        root $work/www;
        location = /16k { }
        location / { return 200 "blue\n"; }
    }
EOF
start_nginx_on backend 0
backend_pid=$started_pid



declare -A rps usr sys
for _ in $(seq "$rounds"); do
    for target in "${targets[@]}"; do
        start_target 127.0.0.1:9903
        for body in small 16k; do
            path=/
            [ "$body" = 16k ] && path=/16k
            taskset -c 0 wrk -t1 -c50 -d2s "http://$listen$path" >/dev/null # warm-up
            before=$(cpu_ticks "$proxy_pid")
            out=$(taskset -c 0 wrk -t1 -c50 -d"${seconds}s" "http://$listen$path")
            after=$(cpu_ticks "$proxy_pid")
            r=$(wrk_rps <<<"$out")
            n=$(sed -n 's/^ *\([0-9]*\) requests in .*/\1/p' <<<"$out")
            read -r u s <<<"$(cpu_per_op "$before" "$after" "$n")"
            rps[$target/$body]="${rps[$target/$body]:-} $r"
            usr[$target/$body]="${usr[$target/$body]:-} $u"
            sys[$target/$body]="${sys[$target/$body]:-} $s"
        done
        kill "$proxy_pid"
        wait "$proxy_pid" 2>/dev/null || true
    done
done

echo "## HTTP/1.1 keep-alive, CPU per request (benches/cpu-per-request.sh)"
echo
echo "wrk -t1 -c50 -d${seconds}s on CPU 0 (with the nginx backend), the proxy on CPU 1 with one worker; $rounds rounds, interleaved; median. CPU = the proxy's user and system time per request, in tenths of a microsecond. turnout's RUST_LOG=$log."
echo
echo "| target | body | req/s | vs nginx | CPU/req user | CPU/req sys | CPU/req vs nginx | runs req/s |"
echo "|---|---|---:|---:|---:|---:|---:|---|"
for body in small 16k; do
    base_r=$(median "${rps[nginx/$body]}")
    base_c=$(( $(median "${usr[nginx/$body]}") + $(median "${sys[nginx/$body]}") ))
    for target in "${targets[@]}"; do
        name=$target
        [ "$target" = nginx ] || name="turnout ${bins[${target#t}]}"
        r=$(median "${rps[$target/$body]}")
        u=$(median "${usr[$target/$body]}")
        s=$(median "${sys[$target/$body]}")
        echo "| $name | $body | $r | $(ratio "$r" "$base_r") | $u | $s | $(ratio $((u + s)) "$base_c") | ${rps[$target/$body]# } |"
    done
done
