#!/usr/bin/env bash
# Runs every cargo-fuzz target for FUZZ_SECONDS (default 30) each and prints the execution count.
# Needs cargo-fuzz (installed here if missing). cargo-fuzz wants nightly-only compiler flags; on
# the stable toolchain RUSTC_BOOTSTRAP=1 enables them. Exits non-zero on any crash.
#   fuzz/run.sh                    # all targets, 30 s each
#   FUZZ_SECONDS=600 fuzz/run.sh config
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1
seconds="${FUZZ_SECONDS:-30}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(icmp_reply config)
for target in "${targets[@]}"; do
    corpus="fuzz/corpus/$target"
    mkdir -p "$corpus"
    cp -n fuzz/seeds/"$target"/* "$corpus"/ 2>/dev/null || true
    log="$(mktemp)"
    if ! cargo fuzz run -O "$target" "$corpus" -- -max_total_time="$seconds" >"$log" 2>&1; then
        tail -40 "$log"
        echo "fuzz: $target FAILED (crash artifacts in fuzz/artifacts/$target)" >&2
        exit 1
    fi
    runs="$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1)"
    echo "fuzz: $target: ${runs:-no summary}, 0 crashes"
    rm -f "$log"
done
