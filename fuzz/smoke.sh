#!/usr/bin/env bash
# Builds every cargo-fuzz target of rfs-fs and runs each for a few seconds, starting from the
# checked-in seeds. A short run catches a target that no longer builds or crashes at once; it
# is not a substitute for a long fuzzing session (see README.md).
#
# Usage: fuzz/smoke.sh [SECONDS]     (SECONDS per target, default 10)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). cargo-fuzz passes nightly-only flags to rustc;
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them. CARGO_TARGET_DIR, if set, is used as
# the build directory. Crash inputs land in fuzz/artifacts/<target>/.
set -euo pipefail

seconds=${1:-10}
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: $0 [SECONDS]" >&2
    exit 2
fi
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "smoke.sh: cargo-fuzz is not installed (cargo install cargo-fuzz)" >&2
    exit 2
fi
export RUSTC_BOOTSTRAP=1
target_dir=()
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
    target_dir=(--target-dir "$CARGO_TARGET_DIR")
fi
# lower_merge and image_manifest write temp files on every run; on tmpfs they run ~2x faster.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
    export TMPDIR=/dev/shm
fi

cargo fuzz build "${target_dir[@]}"

passed=0
failed=()
for target in $(cargo fuzz list); do
    mkdir -p "corpus/$target"
    echo "== $target (${seconds}s)"
    dict=()
    if [ -f "dict/$target.dict" ]; then
        dict=(-dict="dict/$target.dict")
    fi
    # Inputs of at most 16 KiB; one run over 10 s is a hang, one allocation over 512 MiB a bug.
    if cargo fuzz run "${target_dir[@]}" "$target" "corpus/$target" "corpus-seeds/$target" -- \
        -max_total_time="$seconds" -max_len=16384 -timeout=10 \
        -malloc_limit_mb=512 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}"; then
        passed=$((passed + 1))
    else
        failed+=("$target")
    fi
done

echo "fuzz: $passed passed, ${#failed[@]} failed"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "failed targets: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
