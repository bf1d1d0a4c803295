#!/usr/bin/env bash
# tests/run.sh [CARGO TEST ARGS...]: the README's test command. Installs what the tests need
# and is missing (Debian packages, with apt-get: as root, or through sudo), then runs
# `cargo test --workspace --locked` with the arguments given (e.g. `tests/run.sh --test e2e`).
# `tests/run.sh --install-only` installs and stops.
#
# What needs what:
#   protoc (protobuf-compiler)       building: etcd-client compiles etcd's protobuf files
#   cc (gcc)                          building: ring (rustls' crypto) compiles C and assembly
#   etcd, etcdctl (etcd-server, etcd-client)   the fleet's tests run a real etcd on loopback
#   kill, /proc (procps)              the end-to-end tests signal turnout and read /proc
#   curl, jq, python3                 the deploy kit's test runs its scripts; Python's clients
#   systemd-socket-activate, systemd-analyze (systemd)   socket activation; the package's unit
#   chromium, chromedriver (chromium, chromium-driver)   the dashboard's browser test
#   the shellcheck tool               the scripts' lint (.ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /bin/kill ] || [ -x /usr/bin/kill ] || missing+=(procps)
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need curl curl
need jq jq
need python3 python3
need shellcheck shellcheck
need systemd-socket-activate systemd
need systemd-analyze systemd
need chromium chromium
need chromedriver chromium-driver
need cc gcc
need protoc protobuf-compiler
need etcd etcd-server
need etcdctl etcd-client
if [ "${#missing[@]}" -gt 0 ]; then
    # One package may be missed for two tools (systemd): ask for it once.
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    echo "tests/run.sh: installing ${missing[*]}" >&2
    sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ "${1:-}" = --install-only ] && exit 0

# The fuzzing tier (proptest) draws fresh cases on every run unless PROPTEST_RNG_SEED is set
# (.ci/run sets it, so that CI always draws the same ones).
exec cargo test --workspace --locked "$@"
