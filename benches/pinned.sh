# What the pinned comparison scripts (cache-vs-nginx.sh, tls-vs-nginx.sh, h2-idle.sh) share:
# a scratch folder, the processes they start (each its own child, stopped by pid on exit),
# one-worker nginx configs, the 4 KiB asset and the nginx that serves it on CPU 0, readiness
# waits and medians. Sourced, not run. Only loopback is ever a target.
# shellcheck shell=bash

work=$(mktemp -d)
# nginx's workers drop to an unprivileged user when started as root: let them read the files.
chmod 755 "$work"
pids=()
stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT

# Writes $work/$1/nginx.conf for one worker: the `http { }` body from stdin, after access_log off.
# $2 is the worker_connections (default 4096), $3 extra main-context lines (default none).
nginx_conf() {
    local name=$1 connections=${2:-4096} main=${3:-}
    mkdir -p "$work/$name"
    {
        echo "daemon off;"
        echo "worker_processes 1;"
        [ -n "$main" ] && echo "$main"
        echo "pid $work/$name/nginx.pid;"
        echo "error_log $work/$name/error.log;"
        echo "events { worker_connections $connections; }"
        echo "http {"
        echo "    access_log off;"
        cat
        echo "}"
    } > "$work/$name/nginx.conf"
}

# Writes $work/$1/nginx.conf for nginx as the proxy under test: one worker passing everything to
# the backend $2 over pooled HTTP/1.1 keep-alive connections, with the `listen` lines on stdin.
# $3 and $4 are nginx_conf's $2 and $3.
nginx_proxy_conf() {
    local listens
    listens=$(cat)
    nginx_conf "$1" "${3:-4096}" "${4:-}" <<EOF
    keepalive_requests 1000000;
    upstream blue { server $2; keepalive 64; }
    server {
$listens
        location / {
            proxy_pass http://blue;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
EOF
}

# Starts the nginx configured as $work/NAME on CPU $2; its pid in $started_pid.
start_nginx_on() {
    taskset -c "$2" nginx -c "$work/$1/nginx.conf" -p "$work/$1" &
    started_pid=$!
}

# Starts the turnout binary $1 on CPU 1 with one worker, listening on $2, its admin API on $3,
# one pool "blue" of the server $4 ($TURNOUT_POOL: more lines for it), and the config tables on
# stdin ($TURNOUT_ROUTING: lines for [routing]); its pid in $started_pid.
# Logs at RUST_LOG=$TURNOUT_LOG (default warn: no access log) to $work/turnout.log.
start_turnout_on_cpu1() {
    {
        echo "[server]"
        echo "listen = \"$2\""
        echo "admin = \"$3\""
        echo "workers = 1"
        echo "shutdown_delay = \"0s\""
        echo "shutdown_timeout = \"2s\""
        cat
        echo "[pools.blue]"
        echo "servers = [\"$4\"]"
        if [ -n "${TURNOUT_POOL:-}" ]; then echo "$TURNOUT_POOL"; fi
        echo "[routing]"
        echo "active = \"blue\""
        if [ -n "${TURNOUT_ROUTING:-}" ]; then echo "$TURNOUT_ROUTING"; fi
    } > "$work/turnout.toml"
    RUST_LOG=${TURNOUT_LOG:-warn} taskset -c 1 "$1" serve --config "$work/turnout.toml" >"$work/turnout.log" 2>&1 &
    started_pid=$!
}

# The 4 KiB file (like a small hashed script of a build) at $work/www/assets/app.js, and the
# app's side for turnout's cache: nginx on CPU 0 at $1 serving it with a year's lifetime.
# Sets $backend_pid.
start_assets_backend() {
    mkdir -p "$work/www/assets"
    head -c 4096 /dev/zero | tr '\0' 'x' > "$work/www/assets/app.js"
    nginx_conf backend <<EOF
    server {
        listen $1;
        root $work/www;
        location /assets/ { add_header Cache-Control "public, max-age=31536000, immutable"; }
    }
EOF
    start_nginx_on backend 0
    # shellcheck disable=SC2034 # read by the script that sources this file
    backend_pid=$started_pid
}

# Waits (at most 10 s) until curl, given the arguments after the first, succeeds; the first
# names what is awaited in the error.
wait_answer() {
    local what=$1
    shift
    for _ in $(seq 100); do
        if curl -fs --max-time 1 "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "$(basename "$0"): $what did not answer ($*)" >&2
    return 1
}

# wrk's requests per second, whole, from its report on stdin.
wrk_rps() {
    local rps
    rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
    echo "${rps%.*}"
}

# The median of the whole numbers in $1 (space separated).
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# $1 / $2 with two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

# The CPU time per operation, in tenths of a microsecond: clock ticks $1 before and $2 after,
# $3 operations (requests, calls).
per_op() {
    awk -v a="$1" -v b="$2" -v n="$3" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%d", (b - a) / hz * 1e7 / n}'
}

# The user and system CPU per operation: `cpu_ticks` output $1 before and $2 after, $3
# operations; "user system".
cpu_per_op() {
    echo "$(per_op "${1% *}" "${2% *}" "$3") $(per_op "${1#* }" "${2#* }" "$3")"
}

# The CPU time (user and system, in clock ticks) the process $1 and its children have used:
# "user system" from /proc.
cpu_ticks() {
    local u=0 s=0 p f
    for p in $1 $(pgrep -P "$1" || true); do
        f=$(cut -d' ' -f14,15 "/proc/$p/stat" 2>/dev/null) || continue
        u=$((u + ${f% *}))
        s=$((s + ${f#* }))
    done
    echo "$u $s"
}

# The arguments of an A/B script (cpu-per-request.sh, latency.sh):
# [--rounds N] [--seconds S] [--log] BIN [BIN...]. Sets rounds (default 3), seconds (8), log
# (info with --log, else warn), the array bins, and targets: nginx, then t0, t1... a build each.
# shellcheck disable=SC2034 # read by the script that sources this file
ab_args() {
    rounds=3 seconds=8 log=warn
    bins=()
    while [ $# -gt 0 ]; do
        case $1 in
            --rounds) rounds=$2; shift 2 ;;
            --seconds) seconds=$2; shift 2 ;;
            --log) log=info; shift ;;
            *) bins+=("$1"); shift ;;
        esac
    done
    if [ ${#bins[@]} -eq 0 ]; then
        echo "usage: $(basename "$0") [--rounds N] [--seconds S] [--log] BIN [BIN...]" >&2
        exit 2
    fi
    targets=(nginx)
    for i in "${!bins[@]}"; do targets+=("t$i"); done
}

# One round's target started and answering: "nginx" as the proxy under test on CPU 1, or "tN"
# for the turnout build ${bins[N]} (admin API on $1); listening on $listen, proxying to
# $backend (the sourcing script's); its pid in $proxy_pid, and pids set to stop both.
# shellcheck disable=SC2034,SC2154
start_target() {
    if [ "$target" = nginx ]; then
        echo "        listen $listen;" | nginx_proxy_conf nginx "$backend"
        start_nginx_on nginx 1
    else
        start_turnout_on_cpu1 "${bins[${target#t}]}" "$listen" "$1" "$backend" </dev/null
    fi
    proxy_pid=$started_pid
    pids=("$backend_pid" "$proxy_pid")
    wait_answer "$target" "http://$listen/"
}
