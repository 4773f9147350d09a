#!/usr/bin/env bash
# Boots a throwaway systemd (systemd-nspawn --volatile=yes: the host's /usr, an empty tmpfs /etc,
# its own network namespace with only loopback) and checks the installed meshprobe.service for
# real: Type=notify start, the dynamic user with CAP_NET_RAW as its only capability, a /probe of
# loopback over the raw socket, watchdog keep-alives, `systemctl reload`, the online security score, and a clean stop.
# Called by packaging/check-deb.sh while the .deb is installed (needs root and systemd-container).
set -euo pipefail
fail() { echo "check-systemd: $*" >&2; exit 1; }
[ -f /usr/lib/systemd/system/meshprobe.service ] || fail "the .deb is not installed"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/system/multi-user.target.wants" "$work/out"
cat >"$work/system/meshprobe-check.service" <<'UNIT'
[Unit]
Description=Checks meshprobe.service from inside the container
Wants=meshprobe.service
After=meshprobe.service

[Service]
Type=oneshot
ExecStart=/bin/sh /etc/meshprobe-check/check.sh
ExecStopPost=/bin/systemctl poweroff --no-block
UNIT
# A 1 s watchdog instead of the shipped 30 s: three quiet seconds without a restart prove the
# keep-alives get through the sandbox (NotifyAccess=main, AF_UNIX allowed).
mkdir -p "$work/system/meshprobe.service.d"
printf '[Service]\nWatchdogSec=1s\n' >"$work/system/meshprobe.service.d/watchdog.conf"
mkdir -p "$work/check"
cat >"$work/check/check.sh" <<'SCRIPT'
out=/out/result
exec >"$out" 2>&1
sleep 3
echo "active=$(systemctl is-active meshprobe)"
systemctl show meshprobe -p Type -p StatusText -p NRestarts -p WatchdogUSec
pid="$(systemctl show -p MainPID --value meshprobe)"
sed -nE 's/^(Uid|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):\s+([^[:space:]]+).*/\1=\2/p' "/proc/$pid/status"
echo "probe=$(curl -fsS 'http://127.0.0.1:9115/probe?target=127.0.0.1&module=icmp' | grep '^probe_success')"
echo "probe6=$(curl -fsS 'http://127.0.0.1:9115/probe?target=::1&module=icmp' | grep '^probe_success')"
systemctl reload meshprobe
echo "after_reload=$(systemctl show -p StatusText --value meshprobe)"
echo "security=$(systemd-analyze security --no-pager meshprobe.service | tail -1)"
systemctl stop meshprobe
echo "stop_result=$(systemctl show -p Result --value meshprobe)"
echo "done=yes"
SCRIPT
ln -s ../meshprobe-check.service "$work/system/multi-user.target.wants/"
ln -s /usr/lib/systemd/system/meshprobe.service "$work/system/multi-user.target.wants/"

timeout 120 systemd-nspawn --quiet --directory=/ --volatile=yes --private-network \
  --machine="mpn-$$" --register=no --keep-unit \
  --bind-ro="$work/system:/etc/systemd/system" --bind-ro="$work/check:/etc/meshprobe-check" \
  --bind-ro=/etc/meshprobe --bind-ro=/etc/default/meshprobe --bind="$work/out:/out" \
  --boot systemd.firstboot=off >"$work/boot.log" 2>&1 || { cat "$work/boot.log"; fail "container failed"; }

result="$(cat "$work/out/result" 2>/dev/null || true)"
echo "$result"
expect() { grep -qxE "$1" <<<"$result" || { sed 's/\x1b\[[0-9;]*m//g' "$work/boot.log" | tail -40; fail "expected a line matching: $1"; }; }
expect 'active=active'
expect 'Type=notify'
expect 'StatusText=Serving on .*:9115'
expect 'NRestarts=0'
expect 'WatchdogUSec=1s'
expect 'Uid=[1-9][0-9]*'
expect 'CapEff=0000000000002000'
expect 'CapBnd=0000000000002000'
expect 'CapAmb=0000000000002000'
expect 'NoNewPrivs=1'
expect 'Seccomp=2'
expect 'probe=probe_success 1'
expect 'probe6=probe_success 1'
expect 'after_reload=Reloaded configuration'
expect 'security=.*exposure level for meshprobe.service: 1\.[0-9] .*'
expect 'stop_result=success'
expect 'done=yes'
echo "check-systemd: ok"
