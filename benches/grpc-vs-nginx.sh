#!/usr/bin/env bash
# gRPC unary calls through the proxy, nginx (`grpc_pass`) beside one or more turnout builds
# (`protocol = "h2c"`), pinned as the other pinned benches pin: the proxy alone on CPU 1 with
# one worker; the app (tonic's Echo server) and the load (a tonic client: CONNECTIONS HTTP/2
# connections, CONCURRENCY calls in flight) on CPU 0. Calls per second and the proxy's CPU time
# per call; rounds interleaved, median reported, each build as a ratio to nginx.
#
#   benches/grpc-vs-nginx.sh [--rounds N] [--seconds S] [--log] BIN [BIN...]
#
# Builds the load tool itself (cargo build --release -p turnout-testkit --bin grpc-load).
# Needs nginx (Debian's has the gRPC module). Only loopback is ever a target.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=benches/pinned.sh
. "$here/pinned.sh"
ab_args "$@"
export TURNOUT_LOG=$log
connections=${GRPC_CONNECTIONS:-4}
concurrency=${GRPC_CONCURRENCY:-64}

(cd "$here/.." && cargo build --release --quiet -p turnout-testkit --bin grpc-load)
load="$here/../target/release/grpc-load"

app=127.0.0.1:9301
listen=127.0.0.1:8380
taskset -c 0 "$load" serve "$app" &
backend_pid=$!
pids=("$backend_pid")

start_grpc_target() {
    if [ "$target" = nginx ]; then
        nginx_conf nginx <<NGINX
    http2_max_concurrent_streams 1000;
    keepalive_requests 1000000;
    upstream app { server $app; keepalive 64; }
    server {
        listen $listen http2;
        location / { grpc_pass grpc://app; }
    }
NGINX
        start_nginx_on nginx 1
    else
        TURNOUT_POOL='protocol = "h2c"' start_turnout_on_cpu1 "${bins[${target#t}]}" "$listen" 127.0.0.1:9903 "$app" <<TOML
[health]
enabled = false
TOML
    fi
    proxy_pid=$started_pid
    pids=("$backend_pid" "$proxy_pid")
    # Ready once a one-second load gets answers.
    for _ in $(seq 50); do
        if taskset -c 0 "$load" call "$listen" 1 1 1 2>/dev/null | grep -qv '^calls 0 '; then
            return 0
        fi
        sleep 0.2
    done
    echo "grpc-vs-nginx.sh: $target did not answer gRPC calls on $listen" >&2
    return 1
}

declare -A cps usr sys
for _ in $(seq "$rounds"); do
    for target in "${targets[@]}"; do
        start_grpc_target
        taskset -c 0 "$load" call "$listen" "$connections" "$concurrency" 2 >/dev/null # warm-up
        before=$(cpu_ticks "$proxy_pid")
        out=$(taskset -c 0 "$load" call "$listen" "$connections" "$concurrency" "$seconds")
        after=$(cpu_ticks "$proxy_pid")
        read -r _ n _ failed _ elapsed <<<"$out"
        if [ "$failed" != 0 ]; then
            echo "grpc-vs-nginx.sh: $target: $failed calls failed" >&2
        fi
        cps[$target]="${cps[$target]:-} $(awk -v n="$n" -v s="$elapsed" 'BEGIN {printf "%d", n / s}')"
        read -r u s <<<"$(cpu_per_op "$before" "$after" "$n")"
        usr[$target]="${usr[$target]:-} $u"
        sys[$target]="${sys[$target]:-} $s"
        kill "$proxy_pid"
        wait "$proxy_pid" 2>/dev/null || true
    done
done

echo "## gRPC unary calls, h2c to the app (benches/grpc-vs-nginx.sh)"
echo
echo "A tonic client ($connections connections, $concurrency calls in flight, ${seconds}s) and tonic's Echo server on CPU 0, the proxy on CPU 1 with one worker (nginx: grpc_pass, keepalive 64); $rounds rounds, interleaved; median. CPU = the proxy's user and system time per call, in tenths of a microsecond. turnout's RUST_LOG=$log."
echo
echo "| target | calls/s | vs nginx | CPU/call user | CPU/call sys | CPU/call vs nginx | runs calls/s |"
echo "|---|---:|---:|---:|---:|---:|---|"
base_r=$(median "${cps[nginx]}")
base_c=$(( $(median "${usr[nginx]}") + $(median "${sys[nginx]}") ))
for target in "${targets[@]}"; do
    name=$target
    [ "$target" = nginx ] || name="turnout ${bins[${target#t}]}"
    r=$(median "${cps[$target]}")
    u=$(median "${usr[$target]}")
    s=$(median "${sys[$target]}")
    echo "| $name | $r | $(ratio "$r" "$base_r") | $u | $s | $(ratio $((u + s)) "$base_c") | ${cps[$target]# } |"
done
