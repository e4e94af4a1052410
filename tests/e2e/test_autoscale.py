"""The autoscaled pool on a real `tollgate dev`: real clients' load grows the pool of tansu
brokers, and the pool shrinks back when the load stops (issue 12; CONTRACT, "Pool and
autoscaling").

The policy's per-broker target is tiny (20 kB/s in), so a single idempotent producer is far
over what one broker should carry: the pool grows 1 -> 3, the brokers it starts take requests
while clients keep going, and after the load stops and the scale-down window passes it drains
back to 1. Throughout, the clients see no non-retriable error, and every record acknowledged is
in the topic once and consumed once by the group.

No test asserts a time: the figures (time to scale out and in, records, errors) are printed
(`pytest -s` shows them) for the closing notes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient

from conftest import Stack, find_tansu, free_port, gateway_binary, make_tenant
from support import Admin, Conn, consume, create_topic, produce, unique, wait_until

TANSU_POOL = Path(__file__).resolve().parent / "tansu_pool.py"

POLICY = {
    "min_brokers": 1,
    "max_brokers": 3,
    "interval_seconds": 2,
    "mode": "apply",
    "target_per_broker": {"bytes_in_per_second": 20_000},
    "tolerance": 0.1,
    "scale_up": {"stabilization_seconds": 0, "max_step": 2},
    "scale_down": {"stabilization_seconds": 10, "max_step": 1, "period_seconds": 4},
}
_POLICY_FILE = Path(tempfile.mkdtemp(prefix="tollgate-e2e-autoscale-")) / "policy.json"
_POLICY_FILE.write_text(json.dumps(POLICY))
STACK_ARGS = ("--autoscale-policy", str(_POLICY_FILE))

#: Errors librdkafka reports while a broker leaves or joins, and retries by itself.
RETRIABLE = {KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
             KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
             KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
             KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.REQUEST_TIMED_OUT,
             KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART,
             KafkaError.REBALANCE_IN_PROGRESS}


def pool(admin) -> dict:
    return admin._ok("GET", "/v1/pool")


def live_brokers(admin) -> int:
    return sum(1 for b in pool(admin)["brokers"] if b["state"] == "live")


def not_retriable(errors: list) -> list:
    return [e for e in errors if not e.retriable() and e.code() not in RETRIABLE]


class Load:
    """An idempotent producer sending numbered records as fast as a small budget allows, until
    stopped; records delivery reports and errors."""

    def __init__(self, conn, topic: str, bytes_per_second: int = 200_000):
        self.topic = topic
        self.errors: list = []
        self.acked: list[int] = []
        self.failed: list[tuple[int, KafkaError]] = []
        self.sent = 0
        self._stop = threading.Event()
        self._budget = bytes_per_second
        self._producer = Producer(conn.confluent(**{
            "enable.idempotence": True, "acks": "all", "linger.ms": 20,
            "message.timeout.ms": 120_000, "error_cb": self.errors.append}))
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _delivered(self, err, msg):
        n = int(msg.key())
        if err is None:
            self.acked.append(n)
        else:
            self.failed.append((n, err))

    def _run(self):
        value = b"x" * 1_000
        started = time.monotonic()
        while not self._stop.is_set():
            # Paced: the load must exceed one broker's 20 kB/s target many times over, not take
            # the machine's cores from the pool.
            if self.sent * len(value) > self._budget * (time.monotonic() - started):
                self._producer.poll(0.01)
                continue
            self._producer.produce(self.topic, key=str(self.sent).encode(), value=value,
                                   on_delivery=self._delivered)
            self.sent += 1
            self._producer.poll(0)

    def start(self) -> "Load":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        left = self._producer.flush(150)
        assert left == 0, f"{left} records neither delivered nor failed"


class Group:
    """A consumer group member committing what it consumed after every poll, in a thread."""

    def __init__(self, conn, topic: str, group: str):
        self.errors: list = []
        self.got: list[int] = []
        self._stop = threading.Event()
        self._consumer = Consumer(conn.confluent(**{
            "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "error_cb": self.errors.append}))
        self._consumer.subscribe([topic])
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            msgs = self._consumer.consume(500, 0.5)
            ok = []
            for msg in msgs:
                if msg.error():
                    self.errors.append(msg.error())
                else:
                    ok.append(int(msg.key()))
            if ok:
                # Committed before the records count as consumed: a record counted here is never
                # handed to another member after a rebalance.
                try:
                    self._consumer.commit(asynchronous=False)
                except Exception as e:  # noqa: BLE001 - a failed commit is an error seen
                    self.errors.append(e.args[0] if e.args else e)
                    continue
                self.got.extend(ok)

    def start(self) -> "Group":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._consumer.close()


def test_real_load_grows_the_pool_to_three_and_it_drains_back_to_one(stack, admin):
    assert live_brokers(admin) == 1
    tc = make_tenant(stack, admin)
    conn = tc.conn()
    topic = unique("scale-")
    create_topic(conn, topic, partitions=6)
    group = unique("g-")
    members = [Group(conn, topic, group).start() for _ in range(2)]

    started = time.monotonic()
    load = Load(conn, topic).start()
    wait_until(lambda: live_brokers(admin) == 3, 120, "the pool to reach 3 live brokers")
    scaled_out = time.monotonic() - started
    # Keep the load on the grown pool long enough for every broker to take produces, fetches
    # and group requests.
    at_three = load.sent
    wait_until(lambda: load.sent >= at_three + 4_000, 90, "4,000 more records on 3 brokers")
    # The brokers it started take their share: requests go to every live broker.
    spread = {b["address"]: b["requests_sent"] for b in pool(admin)["brokers"] if b["state"] == "live"}
    assert len(spread) == 3 and all(n > 0 for n in spread.values()), spread
    load.stop()
    stopped = time.monotonic()

    wait_until(lambda: live_brokers(admin) == 1 and len(pool(admin)["brokers"]) == 1, 180,
               "the pool to drain back to 1 broker")
    scaled_in = time.monotonic() - stopped
    wait_until(lambda: len(set(sum((m.got for m in members), []))) >= len(load.acked), 120,
               "the group to consume every acknowledged record")
    for m in members:
        m.stop()

    consumed = sum((m.got for m in members), [])
    print(f"\nautoscale e2e: requests per broker at 3 {spread}; "
          f"1 -> 3 live brokers {scaled_out:.1f} s after the load started; "
          f"back to 1 {scaled_in:.1f} s after it stopped; {len(load.acked)} records acknowledged, "
          f"{len(load.failed)} failed, {len(consumed)} consumed; producer errors "
          f"{[str(e) for e in load.errors]}, consumer errors "
          f"{[str(e) for m in members for e in m.errors]}")

    assert load.failed == [], f"deliveries failed: {load.failed[:5]}"
    assert not_retriable(load.errors) == [], f"producer saw {not_retriable(load.errors)}"
    for m in members:
        assert not_retriable([e for e in m.errors if isinstance(e, KafkaError)]) == [], \
            f"consumer saw {m.errors}"
    # Exactly once: nothing acknowledged lost, nothing consumed twice, nothing unacknowledged.
    assert sorted(consumed) == sorted(load.acked), (
        f"lost {sorted(set(load.acked) - set(consumed))[:10]}, "
        f"duplicated {sorted(n for n in set(consumed) if consumed.count(n) > 1)[:10]}")

    events = admin._ok("GET", "/v1/pool/events")["events"]
    assert events, "no scale events"
    for e in events:
        # Each event says what drove it, with its numbers.
        assert e["applied"] is True, e
        assert e["signal"] == "bytes_in_per_second", e
        assert "bytes_in_per_second" in e["reason"] and any(ch.isdigit() for ch in e["reason"]), e
    ups = [e for e in events if e["to_brokers"] > e["from_brokers"]]
    downs = [e for e in events if e["to_brokers"] < e["from_brokers"]]
    assert ups and ups[0]["from_brokers"] == 1 and max(e["to_brokers"] for e in ups) == 3, events
    assert ups[0]["signal"] == "bytes_in_per_second", ups[0]
    assert downs and downs[-1]["to_brokers"] == 1, events
    # Scale-down one broker at a time, as the policy says.
    assert all(e["from_brokers"] - e["to_brokers"] == 1 for e in downs), downs

    # The history the tuner reads tells the same story (its next sample sees the 1 broker).
    def history() -> list[int]:
        status, csv = admin.request("GET", "/v1/pool/history?format=csv")
        assert status == 200, csv
        lines = csv.strip().splitlines()
        column = lines[0].split(",").index("brokers")
        return [int(row.split(",")[column]) for row in lines[1:]]

    brokers = wait_until(lambda: history()[-1] == 1 and history(), 30, "a history sample at 1 broker")
    assert max(brokers) == 3, brokers


# --------------------------------------------------------------------------------------------
# `tollgate serve` resizing a pool it does not run, through an operator's command


def start_serve(pool_dir: Path, ports: list[int], policy: dict, extra: tuple[str, ...] = (),
                label: str = "tollgate serve", admin_token: str | None = None) -> Stack:
    policy_file = pool_dir / f"policy-{unique('', 6)}.json"
    policy_file.write_text(json.dumps(policy))
    listed = ",".join(f"127.0.0.1:{p}" for p in ports)
    s = Stack(gateway_binary(), mode="serve", pool_bootstrap=f"127.0.0.1:{ports[0]}",
              extra_args=("--pool-kind", "stateless",
                          "--pool-scale-command", f"{sys.executable} {TANSU_POOL} {pool_dir} {{n}}",
                          "--pool-discover", f"list:{listed}",
                          "--autoscale-policy", str(policy_file), *extra),
              label=label, admin_token=admin_token)
    s.start().wait_ready()
    return s


@pytest.fixture
def tansu_pool(request):
    """A directory for `tansu_pool.py`, free ports listed (three, or the test's
    `pool_size` mark), the first broker running; every broker stopped at the end."""
    mark = request.node.get_closest_marker("pool_size")
    directory = Path(tempfile.mkdtemp(prefix="tollgate-e2e-tansu-pool-"))
    ports = [free_port() for _ in range(mark.args[0] if mark else 3)]
    (directory / "ports").write_text("\n".join(map(str, ports)) + "\n")
    env = dict(os.environ, TANSU_BIN=find_tansu())
    ctl = lambda n: subprocess.run([sys.executable, str(TANSU_POOL), str(directory), str(n)],  # noqa: E731
                                   env=env, check=True, timeout=60)
    try:
        ctl(1)
        wait_until(lambda: listening(ports[0]), 30, "the first tansu broker to listen")
        yield directory, ports
    finally:
        ctl(0)
        shutil.rmtree(directory, ignore_errors=True)


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_serve_resizes_a_pool_it_does_not_run_through_the_operators_command(tansu_pool):
    pool_dir, ports = tansu_pool
    os.environ.setdefault("TANSU_BIN", find_tansu())
    policy = {**POLICY, "interval_seconds": 1, "max_brokers": 3,
              "scale_down": {"stabilization_seconds": 3, "max_step": 2, "period_seconds": 1}}
    serve = start_serve(pool_dir, ports, policy)
    ok = False
    try:
        admin = Admin(serve.admin_url, serve.admin_token)
        assert [(b["address"], b["state"]) for b in pool(admin)["brokers"]] == \
            [(f"127.0.0.1:{ports[0]}", "live")]

        # The operator raises the floor: the autoscaler asks the command for 3 brokers, and the
        # gateway routes to each once it answers.
        status, body = admin.request("PUT", "/v1/pool/policy", {**policy, "min_brokers": 3})
        assert status == 200, body
        wait_until(lambda: live_brokers(admin) == 3, 60, "3 live brokers")
        assert all(listening(p) for p in ports)
        tc = make_tenant(serve, admin)
        topic = unique("served-")
        create_topic(tc.conn(), topic, partitions=6)
        records = {f"k{i}": f"v{i}" for i in range(300)}
        reports = produce(tc.conn(), topic, records, **{"enable.idempotence": True})
        assert [e for e, _ in reports if e is not None] == []

        # And lowers it: the two leaving brokers are drained, then stopped by the command.
        status, body = admin.request("PUT", "/v1/pool/policy", policy)
        assert status == 200, body
        wait_until(lambda: len(pool(admin)["brokers"]) == 1 and live_brokers(admin) == 1, 60,
                   "the pool back at 1 broker")
        wait_until(lambda: not any(listening(p) for p in ports[1:]), 20, "the leaving brokers to stop")
        got = consume(tc.conn(), topic, unique("g-"), expect=len(records))
        assert sorted(got) == sorted(records.items()), "records written on 3 brokers, read on 1"

        events = admin._ok("GET", "/v1/pool/events")["events"]
        assert [(e["from_brokers"], e["to_brokers"], e["applied"]) for e in events] == \
            [(1, 3, True), (3, 1, True)], events
        assert "allows 3 to 3" in events[0]["reason"], events[0]
        ok = True
    finally:
        problems = serve.finish(keep=not ok)
        assert not problems, "\n".join(problems) + "\n" + serve.logs()


def test_serve_refuses_a_scale_command_without_its_placeholder(tansu_pool):
    pool_dir, ports = tansu_pool
    proc = subprocess.run([gateway_binary(), "serve", "--pool-bootstrap", f"127.0.0.1:{ports[0]}",
                           "--pool-scale-command", "kubectl scale sts/tansu --replicas=3",
                           "--data-dir", str(pool_dir / "data")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "{n}" in proc.stderr, proc.stderr


@pytest.mark.pool_size(5)
def test_two_instances_on_one_redis_scale_on_their_summed_load(tansu_pool, redis_server, tmp_path):
    """Two `tollgate serve` sharing Redis, each with the same policy and actuator: each carries
    a producer at ~40 kB/s, which alone would want 2 brokers of 20 kB/s; the pool grows to the
    4 their sum wants, decided by one instance, and both show the same events."""
    pool_dir, ports = tansu_pool
    key_file = tmp_path / "token-signing.key"
    key_file.write_text(uuid.uuid4().hex + uuid.uuid4().hex)
    key_file.chmod(0o600)
    token = "e2e-admin-" + unique("", 16)
    policy = {**POLICY, "max_brokers": 5, "scale_up": {"stabilization_seconds": 0, "max_step": 4}}
    shared = ("--redis-url", redis_server, "--token-signing-key-file", str(key_file))
    gateways: list[Stack] = []
    loads: list[Load] = []
    ok = False
    try:
        for name in ("a", "b"):
            gateways.append(start_serve(pool_dir, ports, policy, shared, label=f"tollgate serve {name}",
                                        admin_token=token))
        a, b = gateways
        admin_a, admin_b = Admin(a.admin_url, token), Admin(b.admin_url, token)
        tc = make_tenant(a, admin_a)
        conn_b = Conn(b.bootstrap, tc.token)
        topic = unique("shared-")
        create_topic(tc.conn(), topic, partitions=6)
        # Clusters reach the other instance through Redis about once a second.
        wait_until(lambda: topic in AdminClient(conn_b.confluent()).list_topics(timeout=5).topics, 30,
                   "gateway B to serve the cluster made through A")
        loads = [Load(tc.conn(), topic, bytes_per_second=40_000).start(),
                 Load(conn_b, topic, bytes_per_second=40_000).start()]
        wait_until(lambda: live_brokers(admin_a) >= 4, 120, "the pool to grow to 4 brokers")
        for load in loads:
            load.stop()
        deciding = [pool(x)["deciding"] for x in (admin_a, admin_b)]
        assert deciding[0]["decider"] == deciding[1]["decider"] is not None, deciding
        assert deciding[0]["instance"] != deciding[1]["instance"], deciding
        assert deciding[0]["decider"] in (deciding[0]["instance"], deciding[1]["instance"]), deciding
        events = [admin._ok("GET", "/v1/pool/events")["events"] for admin in (admin_a, admin_b)]
        assert events[0] == events[1] and events[0], events
        assert max(e["to_brokers"] for e in events[0]) >= 4, events[0]
        for load in loads:
            assert load.failed == [] and not_retriable(load.errors) == [], (load.failed[:3], load.errors)
        ok = True
    finally:
        for load in loads:
            if load._thread.is_alive():
                load.stop()
        problems = []
        for g in gateways:
            problems += g.finish(keep=not ok)
        assert not problems, "\n".join(problems) + "\n" + "\n".join(g.logs() for g in gateways)
