#!/usr/bin/env bash
# The side-by-side comparison: turnout beside nginx and HAProxy (and, with --peers, Caddy or
# sozu) on the same pinned cores, through the shared harness (../shared/bench/peers.sh: wrk and
# the nginx backends on CPU 0, each proxy alone on CPU 1 with one worker). Installs what it needs
# (Debian packages), builds turnout in release mode, runs the harness and then benches/h2-idle.sh
# (HTTP/2 with h2load, 10 000 idle connections), cache-vs-nginx.sh, tls-vs-nginx.sh,
# front-door.sh, cpu-per-request.sh (access log on and off), latency.sh and grpc-vs-nginx.sh
# (gRPC unary calls against nginx's grpc_pass), and writes the report to benches/RESULTS.md.
#
#   benches/compare.sh            # full run: 3 interleaved rounds (about 40 minutes)
#   benches/compare.sh --quick    # smoke run: 1 short round (about 3 minutes)
#
# Any other arguments go to the harness (see its --help). Only loopback is ever a target.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
harness=${BENCH_HARNESS:-$root/../shared/bench/peers.sh}
if [ ! -x "$harness" ]; then
    echo "compare.sh: no harness at $harness (set BENCH_HARNESS to peers.sh)" >&2
    exit 2
fi

missing=""
for tool in nginx haproxy wrk socat curl taskset h2load python3 openssl; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    echo "compare.sh: installing nginx haproxy wrk socat curl nghttp2-client python3 openssl (missing:$missing)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx haproxy wrk socat curl util-linux \
        nghttp2-client python3 openssl >/dev/null
fi
# Packages may start their services; the harness needs their ports.
for svc in nginx haproxy; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
done

(cd "$root" && cargo build --release --locked)
bin="$root/target/release/turnout"
version=$("$bin" --version)

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# The proxy under test, as the harness starts it: one worker (as the peers get), the access log
# on as shipped (RUST_LOG=info), to a file.
cat > "$scratch/start.sh" <<START
#!/usr/bin/env bash
cat > "\$BENCH_STATE/turnout.toml" <<CONF
[server]
listen = "\$BENCH_LISTEN"
admin = "127.0.0.1:9900"
workers = 1
shutdown_delay = "0s"
shutdown_timeout = "2s"
[pools.blue]
servers = ["\$BENCH_BLUE"]
[pools.green]
servers = ["\$BENCH_GREEN"]
[routing]
active = "blue"
CONF
RUST_LOG=info exec "$bin" serve --config "\$BENCH_STATE/turnout.toml" 2>"\$BENCH_STATE/turnout.log"
START
chmod +x "$scratch/start.sh"

peers="direct,direct1,nginx,haproxy,custom"
# The switch command is single-quoted on purpose: the harness expands $COLOR when it runs it.
# shellcheck disable=SC2016
PROXY_VERSION="$version" "$harness" --peers "$peers" "$@" \
    --proxy-name turnout \
    --proxy-cmd "exec $scratch/start.sh" \
    --switch-cmd 'curl -fsS --max-time 2 -o /dev/null -H "Content-Type: application/json" -X POST http://127.0.0.1:9900/v1/switch -d "{\"to\":\"$COLOR\"}"' \
    --results "$scratch/results" >/dev/null

# What the harness does not measure: HTTP/2 with h2load, and 10 000 idle connections.
"$here/h2-idle.sh" "$bin" 3 > "$scratch/h2-idle.md"
# And a cached asset against nginx serving the same file from disk.
"$here/cache-vs-nginx.sh" "$bin" 3 > "$scratch/cache.md"
# And TLS termination against nginx's.
"$here/tls-vs-nginx.sh" "$bin" 3 > "$scratch/tls.md"
# And the front door: limits, basic auth, gzip against nginx's; memory for 100 000 clients.
"$here/front-door.sh" "$bin" 3 > "$scratch/front-door.md"
# And CPU per request with the access log on and off (the same binary, RUST_LOG=warn through a
# wrapper), and latency under a moderate load.
printf '#!/bin/sh\nRUST_LOG=warn exec %s "$@"\n' "$bin" > "$scratch/turnout-log-off"
chmod +x "$scratch/turnout-log-off"
"$here/cpu-per-request.sh" --log --rounds 3 --seconds 5 "$bin" "$scratch/turnout-log-off" > "$scratch/cpu.md"
"$here/latency.sh" --log --rounds 3 --seconds 5 "$bin" > "$scratch/latency.md"
# And gRPC: unary calls through nginx's grpc_pass and turnout's h2c pools, access log on.
"$here/grpc-vs-nginx.sh" --log --rounds 3 --seconds 8 "$bin" > "$scratch/grpc.md"

{
    echo "<!-- Written by benches/compare.sh $* on $(date -u +%Y-%m-%dT%H:%M:%SZ); do not edit by hand. -->"
    echo
    cat "$scratch/results/latest.md"
    echo
    cat "$scratch/h2-idle.md"
    echo
    cat "$scratch/cache.md"
    echo
    cat "$scratch/tls.md"
    echo
    cat "$scratch/front-door.md"
    echo
    cat "$scratch/cpu.md"
    echo
    cat "$scratch/latency.md"
    echo
    cat "$scratch/grpc.md"
} > "$here/RESULTS.md"
echo "compare.sh: wrote $here/RESULTS.md" >&2
