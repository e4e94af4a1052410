#!/usr/bin/env bash
# librdkafka's own consumer-group regression tests, run side by side direct against a tansu
# broker and through a fresh `tollgate dev` stack, so that a group defect can be put on the
# gateway (fails through it only) or on the pool (fails direct too).
#
#   scripts/librdkafka-group-tests.sh                  # 0122 0118 0132, once each way
#   scripts/librdkafka-group-tests.sh --repeat 5 0132  # one test, five runs each way
#
# The tests ship in the rdkafka-sys crate's sources (librdkafka/tests). The first run copies
# those sources into a cache dir and builds librdkafka and its test runner there (plain
# `./configure`, Debian's -dev packages from scripts/install-deps.sh apt; about 2 minutes on 2
# cores); later runs reuse the build. Nothing of librdkafka is kept in this repository.
#
# librdkafka's tests assume a broker that creates a topic when it is first produced to, with 4
# partitions (their default scenario, tests/scenarios/default.json); neither tansu nor the
# gateway does that. The cached copy's test.c is patched so that, with
# TEST_AUTO_CREATE_PARTITIONS=4 set, the test helper that opens a producer topic creates it
# first through the Admin API (TOPIC_ALREADY_EXISTS is fine), the same way direct and through
# the gateway. The tests themselves are unchanged.
#
# Through the gateway the tests authenticate with SASL PLAIN (a token of a fresh tenant and
# cluster as the password); the stack has 3 lanes, as in the e2e suite.
#
# Exit status: 0 when every run passed both ways, 1 otherwise; the table at the end says, per
# test, whether it fails through the gateway only or direct too. Logs are kept on failure.
#
# Environment:
#   TOLLGATE_BIN             the gateway (default: target/release/tollgate; not built here)
#   TANSU_BIN                tansu (default: `tansu` on PATH, else ~/.cargo/bin/tansu)
#   LIBRDKAFKA_TESTS_DIR     the cached build (default: ~/.cache/tollgate/librdkafka-<version>)
#   LIBRDKAFKA_TEST_TIMEOUT  seconds one test run may take (default 600)
#   MAKE_JOBS                parallel jobs for the one-time build (default 2)
#   TEST_DEBUG, SUBTESTS     librdkafka's own (tests/README.md): debug contexts for every client
#                            (e.g. cgrp,protocol), and a sub-test name to run alone
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

log() { echo "librdkafka-group-tests: $*" >&2; }
die() { log "$*"; exit 2; }

# The three tests of issue 11: consuming after a rebalance, a commit that must fail after a
# rebalance, and the assignor chosen from an ordered strategy list.
DEFAULT_TESTS=(0122 0118 0132)
# Partitions a topic gets when a test first produces to it (librdkafka's default scenario).
AUTO_CREATE_PARTITIONS=4
# Nodes the gateway presents, as in tests/e2e/conftest.py.
LANES=3
STARTUP_TIMEOUT=60
SHUTDOWN_TIMEOUT=30

repeat=1
keep=false
tests=()
while [ $# -gt 0 ]; do
    case "$1" in
        --repeat) repeat=${2:?--repeat needs a number}; shift 2 ;;
        --keep) keep=true; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $1 (--repeat N, --keep, test numbers)" ;;
        *) tests+=("$1"); shift ;;
    esac
done
[ ${#tests[@]} -gt 0 ] || tests=("${DEFAULT_TESTS[@]}")
[[ "$repeat" =~ ^[1-9][0-9]*$ ]] || die "--repeat wants a positive number, not $repeat"

TOLLGATE_BIN=${TOLLGATE_BIN:-$REPO/target/release/tollgate}
[ -x "$TOLLGATE_BIN" ] || die "gateway $TOLLGATE_BIN not found: cargo build --release -p tollgate-gateway"
TANSU_BIN=${TANSU_BIN:-$(command -v tansu || true)}
[ -n "$TANSU_BIN" ] && [ -x "$TANSU_BIN" ] || die "tansu not found: scripts/install-deps.sh tansu"
TEST_TIMEOUT=${LIBRDKAFKA_TEST_TIMEOUT:-600}

# ---------------------------------------------------------------------------------------------
# The test runner, built once per librdkafka version and patch.

RDKAFKA_SYS=$(awk '/^name = "rdkafka-sys"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[ -n "$RDKAFKA_SYS" ] || die "rdkafka-sys is not in Cargo.lock"
LIBRDKAFKA_VERSION=${RDKAFKA_SYS#*+}
CACHE=${LIBRDKAFKA_TESTS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tollgate/librdkafka-$LIBRDKAFKA_VERSION}
RUNNER_DIR=$CACHE/tests

# The one change to the cached copy: the auto-creation described above, in
# test_create_producer_topic(), which every produce helper goes through.
patch_test_c() {
    python3 - "$1" <<'EOF'
import pathlib, sys
path = pathlib.Path(sys.argv[1])
text = path.read_text()
anchor = '''        rd_kafka_topic_conf_set(topic_conf, "request.required.acks", "-1",
                                errstr, sizeof(errstr));
'''
addition = '''
        /* Tollgate: the broker-side auto-creation of librdkafka's default
         * scenario, for a pool that has none (TEST_AUTO_CREATE_PARTITIONS). */
        if (atoi(test_getenv("TEST_AUTO_CREATE_PARTITIONS", "0")) > 0)
                test_create_topic_wait_exists(
                    rk, topic,
                    atoi(test_getenv("TEST_AUTO_CREATE_PARTITIONS", "0")), 1,
                    tmout_multip(10000));
'''
if text.count(anchor) != 1:
    sys.exit(f"{path}: test_create_producer_topic() is not as expected; the patch needs updating")
path.write_text(text.replace(anchor, anchor + addition))
EOF
}
PATCH_STAMP="$LIBRDKAFKA_VERSION $(sed -n '/^patch_test_c()/,/^}/p' "$0" | sha256sum | cut -c1-16)"

build_runner() {
    local src
    src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"rdkafka-sys-$RDKAFKA_SYS"/librdkafka 2>/dev/null | head -n 1)
    [ -n "$src" ] || die "rdkafka-sys $RDKAFKA_SYS sources not in the cargo registry: cargo fetch"
    local jobs=${MAKE_JOBS:-2} start=$SECONDS
    log "building librdkafka $LIBRDKAFKA_VERSION and its test runner in $CACHE (once; minutes)"
    rm -rf "$CACHE.tmp"
    mkdir -p "$(dirname "$CACHE")"
    cp -r "$src" "$CACHE.tmp"
    patch_test_c "$CACHE.tmp/tests/test.c"
    (
        cd "$CACHE.tmp"
        nice -n 10 ./configure > build.log 2>&1 &&
            nice -n 10 make -j"$jobs" libs >> build.log 2>&1 &&
            nice -n 10 make -j"$jobs" -C tests build >> build.log 2>&1
    ) || die "build failed; see $CACHE.tmp/build.log"
    echo "$PATCH_STAMP" > "$CACHE.tmp/.tollgate-stamp"
    rm -rf "$CACHE"
    mv "$CACHE.tmp" "$CACHE"
    log "built in $((SECONDS - start))s"
}

if [ ! -x "$RUNNER_DIR/test-runner" ] || [ "$(cat "$CACHE/.tollgate-stamp" 2>/dev/null)" != "$PATCH_STAMP" ]; then
    build_runner
fi

# ---------------------------------------------------------------------------------------------
# The two targets: a bare tansu broker, and a `tollgate dev` stack with its own tansu.

RUN=$(mktemp -d /tmp/librdkafka-group-tests-XXXXXX)
TANSU_PID=""
GATEWAY_PID=""
RUNNER_PID=""

stop() {
    local pid=$1 name=$2
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    local waited=0
    while kill -0 "$pid" 2>/dev/null && [ $waited -lt $((SHUTDOWN_TIMEOUT * 5)) ]; do
        sleep 0.2
        waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name did not exit within ${SHUTDOWN_TIMEOUT}s of SIGTERM; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    stop "$RUNNER_PID" "the test runner"
    stop "$GATEWAY_PID" "tollgate dev"
    stop "$TANSU_PID" "tansu"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free loopback ports: tansu, admin, and a run of LANES for the gateway's nodes.
read -r TANSU_PORT ADMIN_PORT KAFKA_PORT < <(python3 - "$LANES" <<'EOF'
import socket, sys
lanes = int(sys.argv[1])
def free():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
taken = {free(), free()}
while True:
    p = free()
    run = range(p, p + lanes)
    if any(q in taken or q > 65535 for q in run):
        continue
    held = []
    try:
        for q in run:
            s = socket.socket(); held.append(s); s.bind(("127.0.0.1", q))
    except OSError:
        continue
    finally:
        for s in held:
            s.close()
    print(*sorted(taken), p)
    break
EOF
)

accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
    local what=$1 pid=$2 check=$3 logfile=$4
    local deadline=$((SECONDS + STARTUP_TIMEOUT))
    until eval "$check"; do
        kill -0 "$pid" 2>/dev/null || { tail -n 50 "$logfile" >&2; die "$what exited during startup"; }
        [ $SECONDS -lt $deadline ] || { tail -n 50 "$logfile" >&2; die "$what not ready after ${STARTUP_TIMEOUT}s"; }
        sleep 0.2
    done
}

# Direct: one tansu broker on the SQLite engine, started as `tollgate dev` starts its pool.
mkdir -p "$RUN/direct"
(
    cd "$RUN/direct"
    unset LISTENER_URL ADVERTISED_LISTENER_URL STORAGE_ENGINE CLUSTER_ID
    exec env RUST_LOG=warn "$TANSU_BIN" broker \
        --listener-url "tcp://127.0.0.1:$TANSU_PORT" --advertised-listener-url "tcp://127.0.0.1:$TANSU_PORT" \
        --storage-engine sqlite://tansu.db --cluster-id tollgate-dev
) > "$RUN/direct/broker.log" 2>&1 < /dev/null &
TANSU_PID=$!
wait_for "tansu" "$TANSU_PID" "accepts $TANSU_PORT" "$RUN/direct/broker.log"
printf 'bootstrap.servers=127.0.0.1:%s\n' "$TANSU_PORT" > "$RUN/direct/test.conf"

# Through the gateway: a fresh `tollgate dev`, a tenant, a cluster and a token.
mkdir -p "$RUN/gateway"
ADMIN_TOKEN="librdkafka-tests-$(python3 -c 'import uuid; print(uuid.uuid4().hex)')"
"$TOLLGATE_BIN" dev --kafka-listen "127.0.0.1:$KAFKA_PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
    --data-dir "$RUN/gateway/data" --admin-token "$ADMIN_TOKEN" --lanes "$LANES" \
    --tansu "$TANSU_BIN" --brokers 1 \
    > "$RUN/gateway/stdout.log" 2> "$RUN/gateway/stderr.log" < /dev/null &
GATEWAY_PID=$!
wait_for "tollgate dev" "$GATEWAY_PID" \
    "curl -sf -o /dev/null http://127.0.0.1:$ADMIN_PORT/healthz && accepts $KAFKA_PORT" "$RUN/gateway/stderr.log"
TOKEN=$(PYTHONPATH="$REPO/tests/e2e" python3 - "http://127.0.0.1:$ADMIN_PORT" "$ADMIN_TOKEN" <<'EOF'
import sys
from support import Admin, policy
admin = Admin(sys.argv[1], sys.argv[2])
admin.create_tenant("librdkafka", "librdkafka's test suite")
cluster = admin.create_cluster("librdkafka", "groups")
print(admin.create_token(cluster["id"], "librdkafka-tests", policy("librdkafka", "groups"), 6 * 3600)["token"])
EOF
)
cat > "$RUN/gateway/test.conf" <<EOF
bootstrap.servers=127.0.0.1:$KAFKA_PORT
security.protocol=SASL_PLAINTEXT
sasl.mechanisms=PLAIN
sasl.username=librdkafka-tests
sasl.password=$TOKEN
EOF

log "direct: tansu on 127.0.0.1:$TANSU_PORT; gateway: tollgate dev on 127.0.0.1:$KAFKA_PORT (logs in $RUN)"

# ---------------------------------------------------------------------------------------------
# The runs: each test alternates direct and gateway, so both see the same machine load.

mkdir -p "$RUN/logs"
declare -A passed=() durations=()
failures=0
for t in "${tests[@]}"; do
    for target in direct gateway; do
        passed[$t,$target]=0
        durations[$t,$target]=""
    done
    for ((i = 1; i <= repeat; i++)); do
        for target in direct gateway; do
            out="$RUN/logs/$t-$target-$i.log"
            start=$(date +%s.%N)
            rc=0
            # In the background, so that a signal to this script is handled at once (bash runs
            # traps only between foreground commands). A failed test aborts the runner; the
            # redirections keep bash's "Aborted" job notice out of the report (the exit status
            # and the log say it).
            {
                (
                    cd "$RUNNER_DIR"
                    # TESTS matches test names by substring; -L leaves out tests that need no
                    # broker (0113's mock-cluster half, for one).
                    TESTS=$t RDKAFKA_TEST_CONF="$RUN/$target/test.conf" \
                        TEST_AUTO_CREATE_PARTITIONS=$AUTO_CREATE_PARTITIONS \
                        LD_LIBRARY_PATH="$CACHE/src:$CACHE/src-cpp" \
                        exec timeout "$TEST_TIMEOUT" ./test-runner -L
                ) > "$out" 2>&1 &
            } 2>/dev/null
            RUNNER_PID=$!
            wait "$RUNNER_PID" 2>/dev/null || rc=$?
            RUNNER_PID=""
            secs=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$start" "$(date +%s.%N)")
            durations[$t,$target]+="${durations[$t,$target]:+/}${secs}s"
            if [ $rc -eq 0 ]; then
                passed[$t,$target]=$((passed[$t,$target] + 1))
                log "$t $target run $i: passed (${secs}s)"
            else
                failures=$((failures + 1))
                log "$t $target run $i: FAILED (exit $rc, ${secs}s), log $out"
                grep -a -A1 '### Test "' "$out" | grep -av '^--$\|<MAIN>\|thread(s) still active' | sed 's/\x1b\[[0-9;]*m//g; s/^/    /' | head -n 4 >&2 || true
            fi
        done
    done
done

# ---------------------------------------------------------------------------------------------
# Summary.

echo
printf '%-6s  %-14s  %-14s  %-22s  %s\n' test direct gateway "durations (d | gw)" verdict
for t in "${tests[@]}"; do
    d=${passed[$t,direct]} g=${passed[$t,gateway]}
    if [ "$d" -eq "$repeat" ] && [ "$g" -eq "$repeat" ]; then
        verdict="ok"
    elif [ "$d" -eq "$repeat" ]; then
        verdict="FAILS THROUGH THE GATEWAY ONLY"
    elif [ "$g" -eq "$repeat" ]; then
        verdict="fails direct only (pool; flaky?)"
    else
        verdict="fails direct too (pool)"
    fi
    printf '%-6s  %-14s  %-14s  %-22s  %s\n' "$t" "$d/$repeat passed" "$g/$repeat passed" \
        "${durations[$t,direct]} | ${durations[$t,gateway]}" "$verdict"
done
echo

cleanup
trap - EXIT
if [ $failures -eq 0 ] && ! $keep; then
    rm -rf "$RUN"
    exit 0
fi
log "logs kept in $RUN"
[ $failures -eq 0 ]
