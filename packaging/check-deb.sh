#!/usr/bin/env bash
# Builds the .deb with cargo-deb, installs it with dpkg -i on this machine (CI only: it changes
# the system), and checks that every file lands where README says, that the conffiles are
# conffiles, that installing without a running systemd starts nothing, that the installed unit
# verifies, that the installed service command line runs with the installed config (inside a
# network namespace of its own), that the unit works under a real systemd (check-systemd.sh),
# and that remove/purge clean up.
# Usage (as root): packaging/check-deb.sh   (expects target/release/meshprobe to be built)
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "check-deb: $*" >&2; exit 1; }

cargo deb --no-build --output target/debian/meshprobe.deb >/dev/null
deb=target/debian/meshprobe.deb
echo "built $deb ($(stat -c %s "$deb") bytes)"
# Debian policy checks: errors fail; warnings (e.g. no manual page) are printed.
lintian_status=0
lintian --fail-on error --tag-display-limit 0 "$deb" >/tmp/meshprobe-lintian.txt 2>&1 || lintian_status=$?
grep -v 'running with root privileges' /tmp/meshprobe-lintian.txt || true
((lintian_status == 0)) || fail "lintian found errors"

[ -d /run/systemd/system ] && fail "systemd is running here; this check wants a machine without it"
before="$(pgrep -x meshprobe || true)"
dpkg -i "$deb"
after="$(pgrep -x meshprobe || true)"
[ "$before" = "$after" ] || fail "dpkg -i started a meshprobe process without systemd"

declare -A shipped=(
  [/usr/bin/meshprobe]=""
  [/usr/lib/systemd/system/meshprobe.service]=config/meshprobe.service
  [/etc/meshprobe/meshprobe.yml]=config/meshprobe.yml
  [/etc/meshprobe/peers.json]=packaging/deb/peers.json
  [/etc/default/meshprobe]=packaging/deb/meshprobe.default
  [/usr/share/doc/meshprobe/README.md]=README.md
  [/usr/share/doc/meshprobe/examples/prometheus.yml]=config/prometheus.yml
  [/usr/share/doc/meshprobe/examples/meshprobe-rules.yml]=config/meshprobe-rules.yml
  [/usr/share/doc/meshprobe/examples/meshprobe-rules.test.yml]=config/meshprobe-rules.test.yml
  [/usr/share/doc/meshprobe/examples/grafana-dashboard.json]=config/grafana-dashboard.json
  [/usr/share/doc/meshprobe/examples/grafana-mesh-matrix-panel.json]=config/grafana-mesh-matrix-panel.json
  [/usr/share/doc/meshprobe/examples/peers.example.json]=config/peers.example.json
)
for installed in "${!shipped[@]}"; do
  [ -f "$installed" ] || fail "$installed missing"
  source_file="${shipped[$installed]}"
  if [ -n "$source_file" ]; then cmp -s "$installed" "$source_file" || fail "$installed differs from $source_file"; fi
done
[ -x /usr/bin/meshprobe ] || fail "/usr/bin/meshprobe not executable"
conffiles="$(dpkg-query -W -f='${Conffiles}' meshprobe)"
for conffile in /etc/meshprobe/meshprobe.yml /etc/meshprobe/peers.json /etc/default/meshprobe; do
  grep -q "$conffile" <<<"$conffiles" || fail "$conffile is not a conffile"
done
[ -L /etc/systemd/system/multi-user.target.wants/meshprobe.service ] || fail "unit not enabled"
echo "files, conffiles and enablement ok"

/usr/bin/meshprobe --version
/usr/bin/meshprobe --config.file=/etc/meshprobe/meshprobe.yml --config.check
systemd-analyze verify /usr/lib/systemd/system/meshprobe.service
systemd-analyze security --offline=true --threshold=20 --no-pager /usr/lib/systemd/system/meshprobe.service | tail -1
(cd /usr/share/doc/meshprobe/examples && promtool check config prometheus.yml && promtool test rules meshprobe-rules.test.yml)

# The unit's command line with /etc/default/meshprobe's ARGS, in a namespace of its own.
namespace="mpd-$$"
ip netns add "$namespace"
trap 'ip netns del "$namespace" 2>/dev/null || true' EXIT
ip -n "$namespace" link set lo up
# shellcheck disable=SC1091
ARGS="$(. /etc/default/meshprobe; echo "$ARGS")"
# shellcheck disable=SC2086
ip netns exec "$namespace" /usr/bin/meshprobe --config.file=/etc/meshprobe/meshprobe.yml $ARGS \
  --web.listen-address=127.0.0.1:9115 2>/tmp/meshprobe-deb.log &
service_pid=$!
metrics=""
for _ in $(seq 50); do
  metrics="$(ip netns exec "$namespace" curl -fsS http://127.0.0.1:9115/metrics 2>/dev/null)" && break
  sleep 0.1
done
kill "$service_pid"; wait "$service_pid" || true
grep -q '^meshprobe_mesh_targets 0$' <<<"$metrics" || { cat /tmp/meshprobe-deb.log; fail "installed config: mesh not running with the empty peers file"; }
grep -q '^meshprobe_mesh_peer_source_errors 0$' <<<"$metrics" || { cat /tmp/meshprobe-deb.log; fail "installed peers file not readable"; }
grep -q '^meshprobe_config_last_reload_successful 1$' <<<"$metrics" || fail "config not loaded"
echo "installed service command line runs with the installed config"

# The installed unit under a real systemd, in a throwaway container.
packaging/check-systemd.sh

dpkg -r meshprobe
[ ! -e /usr/bin/meshprobe ] || fail "dpkg -r left /usr/bin/meshprobe"
[ -f /etc/meshprobe/meshprobe.yml ] || fail "dpkg -r removed a conffile"
dpkg -P meshprobe
[ ! -e /etc/meshprobe/meshprobe.yml ] || fail "dpkg -P left /etc/meshprobe/meshprobe.yml"
[ ! -e /etc/systemd/system/multi-user.target.wants/meshprobe.service ] || fail "purge left the enablement symlink"
echo "check-deb: ok"
