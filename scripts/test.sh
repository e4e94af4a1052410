#!/usr/bin/env bash
# Tollgate's whole check, as CI runs it: dependencies, format, lints, unit tests, the release
# build, the deploy manifests' checks, and the end-to-end suite against a real `tollgate dev`
# stack.
# Every step runs even when an earlier one failed (except the end-to-end suite, which needs the
# release build), so one run reports everything; the exit status is non-zero if any step failed.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k isolation -x`.
set -uo pipefail

cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if [ "${CI:-}" = "true" ]; then
    # Incremental compilation only costs time and disk in a fresh clone.
    export CARGO_INCREMENTAL=0
fi

failed=()
step() {
    local name=$1
    shift
    echo
    echo "==> $name: $*"
    local start=$SECONDS
    if "$@"; then
        echo "==> $name: ok ($((SECONDS - start))s)"
        return 0
    else
        local rc=$?
        echo "==> $name: FAILED with exit code $rc ($((SECONDS - start))s)"
        failed+=("$name")
        return "$rc"
    fi
}

step install-deps scripts/install-deps.sh || { echo "cannot continue without dependencies"; exit 1; }
step fmt cargo fmt --all --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
step unit-tests cargo test --workspace
if step release-build cargo build --release -p tollgate-gateway; then
    export TOLLGATE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/tollgate"
    # Seconds, no cluster: the Kubernetes manifests in deploy/ (some checks use the binary).
    step deploy python3 -m pytest tests/deploy -v -ra
    step e2e python3 -m pytest tests/e2e -v -ra --durations=15 "$@"
else
    echo "==> deploy, e2e: skipped, the release build failed"
    failed+=("deploy (not run)" "e2e (not run)")
fi

echo
if [ ${#failed[@]} -ne 0 ]; then
    echo "FAILED steps: ${failed[*]}"
    exit 1
fi
echo "all steps passed"
