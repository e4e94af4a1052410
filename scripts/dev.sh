#!/usr/bin/env bash
# Runs Tollgate's local all-in-one stack: installs tansu if missing, builds the gateway in
# release mode, then runs `tollgate dev` with any arguments given here, e.g.
#   scripts/dev.sh --kafka-listen 127.0.0.1:9092 --admin-listen 127.0.0.1:9080
# `tollgate dev --help` lists the flags; each is also an env var TOLLGATE_<FLAG>.
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

scripts/install-deps.sh tansu
cargo build --release -p tollgate-gateway
exec "${CARGO_TARGET_DIR:-target}/release/tollgate" dev "$@"
