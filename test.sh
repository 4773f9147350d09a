#!/usr/bin/env bash
# Runs the whole test suite, as root, on a fresh Debian 12 machine with Rust from rustup (no sudo
# needed). See CONTRIBUTING.md for how long it takes.
#
#   1. Installs the Debian packages the tests use, if missing (only those that are missing):
#        iproute2 nftables procps util-linux  namespaces, veths, nftables loss, sysctl, setpriv
#        openssl curl                         TLS and basic-auth tests
#        prometheus                           promtool and a real Prometheus
#        prometheus-blackbox-exporter         the parity test
#        systemd                              systemd-analyze verify/security
#        chromium                             the /mesh page test (headless)
#        python3                              packing the charm
#        gcc libc6-dev                        the linker, and the C code in the `ring` crate
#   2. Checks Rust: edition 2024 needs Rust >= 1.89 (Debian 12's packaged rustc is 1.63; install
#      Rust with rustup, https://rustup.rs).
#   3. Runs `cargo test -- --include-ignored`: the tests that need root, network namespaces or the
#      packages above are #[ignore]d for a plain `cargo test`, and fail here if anything is missing.
#      The charm simulator's large scenarios run at up to MPSIM_SCALE units (default here 100;
#      .ci/run runs the full 200 on the release binary, MESHPROBE_CHARM_BINARY).
#
# Arguments go to `cargo test`, e.g. `./test.sh --test mesh` or `./test.sh --test mesh -- --nocapture`.
# `./test.sh --setup` stops after steps 1 and 2. MESHPROBE_TEST_NO_INSTALL=1 lists missing
# packages instead of installing them.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$HOME/.cargo/bin:$PATH"

fail() {
    echo "test.sh: $*" >&2
    exit 1
}

if [[ $EUID -ne 0 ]]; then
    fail "run me as root: the tests build network namespaces, and I install packages.
Without root, \`cargo test\` runs the tests that need neither and lists the others as ignored."
fi

packages=(iproute2 nftables procps util-linux openssl curl prometheus prometheus-blackbox-exporter
    systemd chromium python3 gcc libc6-dev)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$package")
    fi
done
if ((${#missing[@]})); then
    if [[ -n "${MESHPROBE_TEST_NO_INSTALL:-}" ]]; then
        fail "missing packages: ${missing[*]} (apt-get install --no-install-recommends ${missing[*]})"
    fi
    echo "== installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "== packages: all installed (${packages[*]})"
fi

command -v cargo >/dev/null ||
    fail "no cargo: install Rust >= 1.89 with rustup (https://rustup.rs), then run me again"
rust_version="$(rustc --version | awk '{print $2}')"
IFS=. read -r major minor _ <<<"$rust_version"
if ((major < 1 || (major == 1 && minor < 89))); then
    fail "Rust $rust_version is too old: meshprobe uses edition 2024 and needs Rust >= 1.89 (rustup update stable)"
fi
echo "== rust $rust_version (>= 1.89 needed)"
if [[ "${1:-}" == --setup ]]; then
    exit 0
fi

export MPSIM_SCALE="${MPSIM_SCALE:-100}"
# `--include-ignored` goes after the `--` that starts the test harness's own arguments.
args=("$@")
if [[ " ${args[*]} " == *" -- "* ]]; then
    args+=(--include-ignored)
else
    args+=(-- --include-ignored)
fi
echo "== MPSIM_SCALE=$MPSIM_SCALE cargo test ${args[*]}"
cargo test "${args[@]}"
