#!/usr/bin/env bash
# Installs what Tollgate's run and test commands need, and only what is missing:
#   apt     redis-server, kcat, prometheus (with promtool), and librdkafka's build tools and
#           headers, from Debian (by package)
#   tansu   the broker the dev stack runs, with vendor/tansu-storage and vendor/tansu-broker patched in
#           (cargo install, ~15 minutes on 2 cores)
#   python  the end-to-end suite's Python packages (tests/requirements.txt)
#   node    Node.js and npm from Debian, and the suite's npm packages (tests/e2e/node, npm ci)
# Usage: scripts/install-deps.sh [apt] [tansu] [python] [node]   (no argument: all of them)
# Idempotent: a second run installs nothing and takes about a second.
set -euo pipefail

cd "$(dirname "$0")/.."

TANSU_VERSION=0.6.0
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

log() { echo "install-deps: $*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages, by name: checked with `dpkg -s`, never by whether some command exists (a
# command can be present while the headers a build needs are not).
APT_PACKAGES=(
    redis-server          # the meter's and ledger's shared store in the e2e suite
    kcat                  # one of the e2e suite's client stacks
    openssl               # the CA and certificates the TLS tests make (unit and e2e)
    # prometheus and promtool: tests/deploy checks deploy/prometheus and the dashboard's PromQL
    # with promtool; tests/e2e/test_prometheus.py runs its own prometheus process against a
    # stack, on free ports. The package's own service (on :9090, where systemd runs it) is not
    # used by either.
    prometheus
    # librdkafka, built from source by the rdkafka crate (load-tests, gateway tests): its CMake
    # build needs these headers and tools.
    cmake g++ make pkg-config
    libcurl4-openssl-dev libssl-dev libsasl2-dev zlib1g-dev libzstd-dev
    # tansu's build (cargo install): OpenSSL headers and a C toolchain, listed above.
)

install_apt() {
    local missing=()
    local pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$pkg")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        log "apt: ${APT_PACKAGES[*]} installed"
        return
    fi
    log "apt: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
    for pkg in "${missing[@]}"; do
        dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed' \
            || { log "apt: $pkg still not installed"; exit 1; }
    done
}

# tansu is installed with vendor/tansu-storage and vendor/tansu-broker patched in (vendor/README.md
# says what and why).
# A stock tansu 0.6.0 reports the same version, so the version alone cannot tell them apart:
# after a successful install, a marker beside the binary records the patch's hash and the
# binary's own hash. Any other tansu (no marker, another patch, or the binary replaced since,
# e.g. by a plain `cargo install tansu`) is reinstalled.
TANSU_VENDOR="$PWD/vendor"
TANSU_PATCHED=(tansu-storage tansu-broker)
TANSU_MARKER="${CARGO_HOME:-$HOME/.cargo}/bin/.tansu-tollgate-patch"

tansu_patch_hash() {
    local crate
    for crate in "${TANSU_PATCHED[@]}"; do
        [ -d "$TANSU_VENDOR/$crate" ] || { log "$TANSU_VENDOR/$crate is missing: it is part of the checkout"; exit 1; }
    done
    # Every file of the patched crates, by path relative to vendor/, in a fixed order.
    (cd "$TANSU_VENDOR" && find "${TANSU_PATCHED[@]}" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) \
        | sha256sum | cut -d' ' -f1
}

tansu_marker_text() {
    local bin
    bin=$(command -v tansu) || return 1
    echo "patch $(tansu_patch_hash)"
    echo "binary $(sha256sum "$bin" | cut -d' ' -f1)"
}

tansu_ok() {
    command -v tansu >/dev/null 2>&1 || return 1
    # `tansu --version` prints e.g. "tansu 0.6.0".
    tansu --version 2>/dev/null | grep -qw "$TANSU_VERSION" || return 1
    [ -f "$TANSU_MARKER" ] || return 1
    [ "$(cat "$TANSU_MARKER")" = "$(tansu_marker_text)" ]
}

install_tansu() {
    if tansu_ok; then
        log "tansu $TANSU_VERSION with the Tollgate patch present at $(command -v tansu)"
        return
    fi
    if command -v tansu >/dev/null 2>&1; then
        log "tansu at $(command -v tansu) is not tansu $TANSU_VERSION with this checkout's patch; reinstalling"
    fi
    log "tansu: installing $TANSU_VERSION with vendor/tansu-storage and vendor/tansu-broker (about 15 minutes on 2 cores)"
    rm -f "$TANSU_MARKER"
    # --locked: without it the crate does not compile. dynostore: without it the memory engine
    # refuses to start. libsql: the SQLite engine the dev stack's shared pool uses. --force: a
    # stock tansu 0.6.0 counts as installed for cargo, which does not track the patch.
    cargo install tansu --version "$TANSU_VERSION" --locked --force \
        --features "dynostore libsql postgres" \
        --config "patch.crates-io.tansu-storage.path=\"$TANSU_VENDOR/tansu-storage\"" \
        --config "patch.crates-io.tansu-broker.path=\"$TANSU_VENDOR/tansu-broker\""
    command -v tansu >/dev/null 2>&1 || { log "tansu still not on PATH after install"; exit 1; }
    tansu_marker_text >"$TANSU_MARKER"
    tansu_ok || { log "tansu $TANSU_VERSION not found as installed after install"; exit 1; }
}

install_python() {
    local python=${PYTHON:-python3}
    local missing=()
    local module spec
    # module to import, and the requirement line that provides it
    while read -r module spec; do
        if ! "$python" -c "import $module" >/dev/null 2>&1; then
            missing+=("$(grep -i "^$spec==" tests/requirements.txt)")
        fi
    done <<'LIST'
confluent_kafka confluent-kafka
kafka kafka-python
aiokafka aiokafka
aws_msk_iam_sasl_signer aws-msk-iam-sasl-signer-python
botocore botocore
boto3 boto3
moto.server moto\[server\]
pytest pytest
pytest_timeout pytest-timeout
kubernetes_validate kubernetes-validate
jsonschema jsonschema
yaml PyYAML
opentelemetry.proto opentelemetry-proto
google.protobuf protobuf
LIST
    if [ ${#missing[@]} -eq 0 ]; then
        log "python: packages present"
        return
    fi
    log "python: installing ${missing[*]}"
    "$python" -m pip install --disable-pip-version-check --root-user-action=ignore -q "${missing[@]}"
}

# kafkajs and the AWS_MSK_IAM mechanism for it (tests/e2e/test_msk_iam.py), pinned by
# tests/e2e/node/package-lock.json. Node.js is Debian's `nodejs` unless some other package of
# that name is installed (NodeSource's, which carries its own npm); Debian's `npm` is added
# only where no npm came with it.
install_node() {
    local missing=()
    dpkg -s nodejs 2>/dev/null | grep -q '^Status: install ok installed' || missing+=(nodejs)
    if [ ${#missing[@]} -ne 0 ] || ! command -v npm >/dev/null 2>&1; then
        dpkg -s npm 2>/dev/null | grep -q '^Status: install ok installed' || missing+=(npm)
    fi
    if [ ${#missing[@]} -ne 0 ]; then
        log "node: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        as_root apt-get update -q
        as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
        || { log "node: node or npm still not on PATH"; exit 1; }
    local dir=tests/e2e/node
    # The lock file's copy under node_modules says whether the tree matches the lock.
    if cmp -s "$dir/package-lock.json" "$dir/node_modules/.package-lock.json.installed" 2>/dev/null; then
        log "node: $dir packages present"
        return
    fi
    log "node: npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$dir/package-lock.json" "$dir/node_modules/.package-lock.json.installed"
}

what=("$@")
[ ${#what[@]} -eq 0 ] && what=(apt tansu python node)
for w in "${what[@]}"; do
    case "$w" in
        apt) install_apt ;;
        tansu) install_tansu ;;
        python) install_python ;;
        node) install_node ;;
        *) log "unknown component '$w' (expected apt, tansu, python or node)"; exit 2 ;;
    esac
done
