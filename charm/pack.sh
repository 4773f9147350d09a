#!/usr/bin/env bash
# Builds meshprobe.charm at the repository root: a zip with dispatch, the metadata and the
# binary, which is what `juju deploy ./meshprobe.charm` takes. charmcraft itself needs LXD, which
# is not available here; this produces the same layout charmcraft's dump plugin does, including
# the metadata.yaml / config.yaml / actions.yaml split out of charmcraft.yaml and the
# manifest.yaml charmcraft writes (Juju computes the charm's bases from it), with the bases of
# charmcraft.yaml's `platforms` after checking that each base's glibc is new enough for the
# binary (the highest GLIBC_ symbol version it needs, from objdump -T).
#   charm/pack.sh                          # release build, writes ./meshprobe.charm
#   MESHPROBE_BINARY=path OUT=file.charm charm/pack.sh   # reuse a built binary (tests)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-$PWD/meshprobe.charm}"
binary="${MESHPROBE_BINARY:-}"
if [[ -z "$binary" ]]; then
    cargo build --release
    binary=target/release/meshprobe
fi
staging="$(mktemp -d)"
trap 'rm -rf "$staging"' EXIT
cp charm/dispatch "$staging/dispatch"
cp "$binary" "$staging/meshprobe"
chmod 755 "$staging/dispatch" "$staging/meshprobe"
cp charm/charmcraft.yaml charm/README.md charm/copyright "$staging/"
# Split the unified charmcraft.yaml by top-level key: config and actions get their own files
# (content of the block, dedented by two spaces); build-only keys are left out of metadata.yaml.
awk -v dir="$staging" '
    /^[^ #]/ { split($0, parts, ":"); key = parts[1] }
    key == "config"  { if ($0 !~ /^config:/)  print substr($0, 3) > (dir "/config.yaml");  next }
    key == "actions" { if ($0 !~ /^actions:/) print substr($0, 3) > (dir "/actions.yaml"); next }
    key == "type" || key == "base" || key == "platforms" || key == "parts" { next }
    { print > (dir "/metadata.yaml") }
' charm/charmcraft.yaml
# glibc of each base the charm may declare (Ubuntu's libc6 in that release).
python3 - charm/charmcraft.yaml "$staging" <<'PY'
import datetime, os, re, subprocess, sys
GLIBC = {"20.04": (2, 31), "22.04": (2, 35), "24.04": (2, 39)}
ARCH = {"i386:x86-64": "amd64", "aarch64": "arm64"}
meta, staging = sys.argv[1], sys.argv[2]
binary = os.path.join(staging, "meshprobe")
symbols = subprocess.run(["objdump", "-T", binary], check=True, capture_output=True, text=True).stdout
needed = max((tuple(map(int, v.split("."))) for v in re.findall(r"GLIBC_([0-9]+(?:\.[0-9]+)+)", symbols)), default=(0,))
header = subprocess.run(["objdump", "-f", binary], check=True, capture_output=True, text=True).stdout
found = re.search(r"architecture: ([^,\s]+)", header)
arch = ARCH.get(found.group(1) if found else "", "unknown")
bases = {}
for line in open(meta):
    m = re.match(r"^  ([a-z]+)@([0-9.]+):([a-z0-9]+):\s*$", line)
    if m:
        bases.setdefault((m.group(1), m.group(2)), []).append(m.group(3))
if not bases:
    sys.exit("charmcraft.yaml declares no platforms")
lines = ["# Written by charm/pack.sh in the layout charmcraft writes; Juju reads `bases`.",
         "charmcraft-started-at: '%s'" % datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
         "analysis:", "  attributes:",
         "  - name: language", "    result: unknown", "  - name: framework", "    result: unknown",
         "bases:"]
for (name, channel), archs in sorted(bases.items()):
    if name != "ubuntu" or channel not in GLIBC:
        sys.exit("unknown base %s@%s: add its glibc to charm/pack.sh" % (name, channel))
    if GLIBC[channel] < needed:
        sys.exit("the binary needs GLIBC_%s; %s@%s has %s" % (".".join(map(str, needed)), name, channel, ".".join(map(str, GLIBC[channel]))))
    if archs != [arch]:
        sys.exit("%s@%s declares %s but the binary is %s" % (name, channel, archs, arch))
    lines += ["- name: %s" % name, "  channel: '%s'" % channel, "  architectures:"] + ["  - %s" % a for a in archs]
with open(os.path.join(staging, "manifest.yaml"), "w") as f:
    f.write("\n".join(lines) + "\n")
PY
rm -f "$out"
python3 - "$staging" "$out" <<'PY'
import os, sys, zipfile
staging, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
    for name in sorted(os.listdir(staging)):
        path = os.path.join(staging, name)
        info = zipfile.ZipInfo(name)
        info.external_attr = (os.stat(path).st_mode & 0o777) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(path, "rb") as f:
            archive.writestr(info, f.read())
print(out)
PY
