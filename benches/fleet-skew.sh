#!/usr/bin/env bash
# The fleet through etcd, measured on loopback: N turnout instances (one worker each) follow
# fleet "bench"; S switches alternate blue and green through `turnout fleet switch --etcd`.
# For each switch: the time from the commit to the last member applied (the members' own
# clocks, the same host's), the store writes it took, and after it every instance asked once
# for its colour (an answer of the old colour counts as wrong). Then the boot of one more
# instance whose config says the old colour: the time from its start to its first answer of
# the fleet's colour. With --etcd-members 3 --kill-etcd-member, the switches run again with
# one etcd member SIGKILLed.
#
#   benches/fleet-skew.sh [--instances N] [--switches S] [--etcd-members 1|3]
#                         [--kill-etcd-member] BIN
#
# Needs etcd (Debian's etcd-server), nginx (the app), curl and python3. Only loopback is ever a target.
set -euo pipefail

n=10
switches=20
members=1
kill_member=no
while [ $# -gt 0 ]; do
    case $1 in
    --instances) n=$2; shift 2 ;;
    --switches) switches=$2; shift 2 ;;
    --etcd-members) members=$2; shift 2 ;;
    --kill-etcd-member) kill_member=yes; shift ;;
    *) break ;;
    esac
done
[ $# -eq 1 ] || { echo "usage: $0 [--instances N] [--switches S] [--etcd-members 1|3] [--kill-etcd-member] BIN" >&2; exit 64; }
case "$n$switches$members" in
*[!0-9]*) echo "$0: --instances, --switches and --etcd-members take whole numbers" >&2; exit 64 ;;
esac
if [ "$n" -lt 1 ] || [ "$switches" -lt 1 ] || { [ "$members" != 1 ] && [ "$members" != 3 ]; }; then
    echo "$0: needs --instances 1+, --switches 1+, --etcd-members 1 or 3" >&2
    exit 64
fi
if [ "$kill_member" = yes ] && [ "$members" != 3 ]; then
    echo "$0: --kill-etcd-member needs --etcd-members 3 (a cluster that survives it)" >&2
    exit 64
fi
bin=$1
[ -x "$bin" ] || { echo "$0: $bin is not an executable" >&2; exit 66; }
for tool in etcd nginx curl python3; do
    command -v "$tool" >/dev/null || { echo "$0: needs $tool" >&2; exit 69; }
done

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# etcd: one member, or three.
cluster=""
declare -a client_ports peer_ports etcd_pids
for i in $(seq 0 $((members - 1))); do
    client_ports[i]=$(free_port)
    peer_ports[i]=$(free_port)
    cluster+="${cluster:+,}e$i=http://127.0.0.1:${peer_ports[i]}"
done
endpoints=""
for i in $(seq 0 $((members - 1))); do
    etcd --name "e$i" --data-dir "$work/e$i" \
        --listen-client-urls "http://127.0.0.1:${client_ports[i]}" \
        --advertise-client-urls "http://127.0.0.1:${client_ports[i]}" \
        --listen-peer-urls "http://127.0.0.1:${peer_ports[i]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${peer_ports[i]}" \
        --initial-cluster "$cluster" --initial-cluster-state new \
        --heartbeat-interval 50 --election-timeout 500 >"$work/e$i.log" 2>&1 &
    etcd_pids[i]=$!
    pids+=("$!")
    endpoints+="${endpoints:+,}http://127.0.0.1:${client_ports[i]}"
done
for i in $(seq 0 $((members - 1))); do
    for _ in $(seq 1 200); do
        curl -fs "http://127.0.0.1:${client_ports[i]}/health" | grep -q true && break
        sleep 0.1
    done
done
toml_endpoints="[\"${endpoints//,/\", \"}\"]"
etcd_args=()
IFS=, read -ra eps <<<"$endpoints"
for e in "${eps[@]}"; do etcd_args+=(--etcd "$e"); done

# The app: blue and green, shared by every instance.
for colour in blue green; do
    mkdir -p "$work/$colour"
    echo "$colour" >"$work/$colour/index.html"
done
blue_port=$(free_port)
green_port=$(free_port)
chmod -R a+rX "$work"
cat >"$work/nginx.conf" <<NGINX
daemon off;
master_process off;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    server { listen 127.0.0.1:$blue_port; location / { root $work/blue; } }
    server { listen 127.0.0.1:$green_port; location / { root $work/green; } }
}
NGINX
nginx -c "$work/nginx.conf" -p "$work" &
pids+=("$!")

for port in "$blue_port" "$green_port"; do
    for _ in $(seq 1 100); do
        curl -fs "http://127.0.0.1:$port/index.html" >/dev/null && break
        sleep 0.05
    done
done

config() { # NAME ACTIVE
    cat <<CONF
[server]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
workers = 1
[pools.blue]
servers = ["127.0.0.1:$blue_port"]
[pools.green]
servers = ["127.0.0.1:$green_port"]
[health]
path = "/index.html"
interval = "2s"
[routing]
active = "$2"
[fleet]
name = "bench"
instance = "$1"
etcd = $toml_endpoints
CONF
}

# Starts instance NAME on ACTIVE; its proxy address lands in $work/NAME.addr once it serves.
start_instance() {
    config "$1" "$2" >"$work/$1.toml"
    RUST_LOG=warn,turnout::app=info "$bin" serve --config "$work/$1.toml" >"$work/$1.log" 2>&1 &
    pids+=("$!")
}
wait_serving() {
    for _ in $(seq 1 600); do
        if grep -q "turnout is serving" "$work/$1.log"; then
            grep -o 'proxy=[0-9.:]*' "$work/$1.log" | head -1 | cut -d= -f2 >"$work/$1.addr"
            return 0
        fi
        sleep 0.05
    done
    echo "$0: instance $1 did not serve within 30s:" >&2
    tail -5 "$work/$1.log" >&2
    exit 1
}

for i in $(seq 1 "$n"); do start_instance "i$i" blue; done
for i in $(seq 1 "$n"); do wait_serving "i$i"; done
echo "fleet-skew: $n instances, etcd members: $members, $switches switches" >&2

median() { sort -n | awk '{ a[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print int((a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
worst() { sort -n | tail -1; }

run_switches() { # LABEL
    local skews=() spreads=() writes=() wrong=0 to out
    for s in $(seq 1 "$switches"); do
        if [ $((s % 2)) -eq 1 ]; then to=green; else to=blue; fi
        out=$("$bin" fleet switch --to "$to" "${etcd_args[@]}" --fleet bench --timeout 10s 2>"$work/switch.err") || {
            cat "$work/switch.err" >&2
            echo "$0: switch $s to $to failed" >&2
            exit 1
        }
        skews+=("$(sed -n 's/.*the last \([0-9]*\) ms after the commit.*/\1/p' <<<"$out")")
        spreads+=("$(sed -n 's/.*, \([0-9]*\) ms after the first.*/\1/p' <<<"$out")")
        writes+=("$(sed -n 's/.*; \([0-9]*\) store writes.*/\1/p' <<<"$out")")
        for i in $(seq 1 "$n"); do
            [ "$(curl -fs "http://$(cat "$work/i$i.addr")/")" = "$to" ] || wrong=$((wrong + 1))
        done
    done
    last=$to
    printf '%s: commit sent to last member applied: median %s ms, worst %s ms; first to last member applied: median %s ms, worst %s ms; store writes per switch: %s; answers of the old colour after the switch: %d of %d\n' \
        "$1" "$(printf '%s\n' "${skews[@]}" | median)" "$(printf '%s\n' "${skews[@]}" | worst)" \
        "$(printf '%s\n' "${spreads[@]}" | median)" "$(printf '%s\n' "${spreads[@]}" | worst)" \
        "$(printf '%s\n' "${writes[@]}" | median)" "$wrong" $((switches * n))
}

run_switches "$n instances"

# Boot: a new instance whose config says the other colour.
other=blue
[ "$last" = blue ] && other=green
t0=$(now_ms)
start_instance boot "$other"
boot_ms=""
for _ in $(seq 1 6000); do
    if [ -s "$work/boot.log" ] && grep -q "turnout is serving" "$work/boot.log"; then
        addr=$(grep -o 'proxy=[0-9.:]*' "$work/boot.log" | head -1 | cut -d= -f2)
        if [ "$(curl -fs "http://$addr/" 2>/dev/null)" = "$last" ]; then
            boot_ms=$(($(now_ms) - t0))
            break
        fi
    fi
    sleep 0.005
done
echo "boot to first answer of the fleet's colour ($last, its config says $other): ${boot_ms:-not within 30s} ms"

if [ "$kill_member" = yes ]; then
    kill -9 "${etcd_pids[0]}"
    echo "fleet-skew: etcd member e0 SIGKILLed" >&2
    sleep 1
    run_switches "$n instances, one of 3 etcd members killed"
fi
