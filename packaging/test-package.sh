#!/usr/bin/env bash
# packaging/test-package.sh: builds turnout's Debian package (cargo deb), installs it with
# dpkg and checks what an operator gets: the binary on PATH, the systemd unit verified by
# systemd-analyze, the unprivileged user, the config as a conffile readable by that user only,
# the packaged config passing `turnout check`, turnout serving it as that user (on loopback
# ports) and reloading on SIGHUP, then removal and purge. Prints the package's and the
# binary's sizes. Run as root (dpkg); .ci/run runs it.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked --version "${CARGO_DEB_VERSION:-3.8.0}"
missing=()
for tool in systemd-analyze:systemd curl:curl runuser:util-linux; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "== cargo deb"
cargo deb --locked
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
deb=$(find target/debian -maxdepth 1 -name "turnout_${version}*.deb" | head -n 1)
[ -n "$deb" ] || { echo "test-package: cargo deb made no target/debian/turnout_${version}*.deb" >&2; exit 1; }
fail() {
    echo "test-package: $*" >&2
    exit 1
}

echo "== what the package holds"
contents=$(dpkg-deb --contents "$deb")
for path in ./usr/bin/turnout ./etc/turnout/turnout.toml ./usr/share/doc/turnout/README.md; do
    grep -q " $path\$" <<<"$contents" || fail "$deb has no $path"
done
grep -Eq ' \./(usr/)?lib/systemd/system/turnout\.service$' <<<"$contents" || fail "$deb has no turnout.service"
if grep -q '/usr/lib/debug/' <<<"$contents"; then fail "$deb holds the debug info"; fi
dbgsym=$(find target/debian -maxdepth 1 -name "turnout-dbgsym_${version}*.ddeb" | head -n 1)
[ -n "$dbgsym" ] || fail "cargo deb made no turnout-dbgsym package"
dpkg-deb --contents "$dbgsym" | grep -q '/usr/lib/debug/\.build-id/.*\.debug$' \
    || fail "$dbgsym has no /usr/lib/debug/.build-id/*.debug"
dpkg-deb --info "$deb" conffiles | grep -qx '/etc/turnout/turnout.toml' || fail "the config is not a conffile"

echo "== dpkg -i"
dpkg -i "$deb"
id turnout >/dev/null || fail "no turnout user after install"
[ "$(stat -c %U:%G:%a /etc/turnout/turnout.toml)" = root:turnout:640 ] \
    || fail "/etc/turnout/turnout.toml is $(stat -c %U:%G:%a /etc/turnout/turnout.toml), not root:turnout:640"
[ "$(command -v turnout)" = /usr/bin/turnout ] || fail "turnout on PATH is $(command -v turnout)"
turnout --version
unit=
for candidate in /lib/systemd/system/turnout.service /usr/lib/systemd/system/turnout.service; do
    [ -e "$candidate" ] && unit=$candidate && break
done
[ -n "$unit" ] || fail "the unit is not installed"
systemd-analyze verify "$unit"
file_bin=$(readlink -f /usr/bin/turnout)
if readelf -S "$file_bin" 2>/dev/null | grep -q '\.debug_info'; then
    fail "/usr/bin/turnout still holds its debug info"
fi

echo "== the packaged config, as the service's user"
# systemd's StateDirectory= makes /var/lib/turnout for the service; without systemd here, by hand.
install -d -o turnout -g turnout -m 0750 /var/lib/turnout
runuser -u turnout -- turnout check --config /etc/turnout/turnout.toml
work=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
chmod 755 "$work"
# The same file on loopback ports of its own (the packaged one listens on 0.0.0.0:8080).
sed -e 's|^listen = "0.0.0.0:8080"|listen = "127.0.0.1:18480"|' \
    -e 's|^admin = "127.0.0.1:9901"|admin = "127.0.0.1:18481"|' \
    /etc/turnout/turnout.toml > "$work/turnout.toml"
grep -q '127.0.0.1:18480' "$work/turnout.toml" || fail "the packaged config's listen line moved"
chown root:turnout "$work/turnout.toml"
chmod 640 "$work/turnout.toml"
runuser -u turnout -- turnout serve --config "$work/turnout.toml" 2>"$work/log" &
pid=$!
for _ in $(seq 100); do
    curl -s -o /dev/null http://127.0.0.1:18481/v1/status && break
    sleep 0.1
done
curl -fsS http://127.0.0.1:18481/v1/status >/dev/null || { cat "$work/log" >&2; fail "turnout did not serve"; }
code=$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18480/health-check)
case $code in 200 | 503) ;; *) cat "$work/log" >&2; fail "the health path answered $code" ;; esac
# What systemctl reload does: SIGHUP, and a new process serves.
kill -HUP "$pid"
new=
for _ in $(seq 100); do
    new=$(curl -s http://127.0.0.1:18481/v1/status | sed -n 's/.*"pid":\([0-9]*\).*/\1/p')
    [ -n "$new" ] && [ "$new" != "$pid" ] && break
    sleep 0.1
done
{ [ -n "$new" ] && [ "$new" != "$pid" ]; } || { cat "$work/log" >&2; fail "SIGHUP did not reload"; }
kill -TERM "$new"
for _ in $(seq 100); do
    kill -0 "$new" 2>/dev/null || break
    sleep 0.1
done
wait "$pid" || true
pid=

echo "== sizes"
deb_size=$(stat -c %s "$deb")
bin_size=$(stat -c %s "$file_bin")
dbgsym_size=$(stat -c %s "$dbgsym")
echo "package $(basename "$deb"): $((deb_size / 1024)) KiB; /usr/bin/turnout: $((bin_size / 1024)) KiB stripped; $(basename "$dbgsym"): $((dbgsym_size / 1024)) KiB"

echo "== dpkg -r, dpkg -P"
dpkg -r turnout
[ ! -e /usr/bin/turnout ] || fail "/usr/bin/turnout left after removal"
[ -e /etc/turnout/turnout.toml ] || fail "removal took the conffile (only purge should)"
dpkg -P turnout
[ ! -e /etc/turnout/turnout.toml ] || fail "purge left /etc/turnout/turnout.toml"
[ ! -e /var/lib/turnout ] || fail "purge left /var/lib/turnout"
echo "test-package: ok"
