#!/usr/bin/env bash
# Builds meshprobe.charm at the repository root: a zip with dispatch, the metadata and the
# binary, which is what `juju deploy ./meshprobe.charm` takes. charmcraft itself needs LXD, which
# is not available here; this produces the same layout charmcraft's dump plugin does, including
# the metadata.yaml / config.yaml / actions.yaml split out of charmcraft.yaml.
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
