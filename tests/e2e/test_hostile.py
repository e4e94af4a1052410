"""Hostile and careless tenants, and unauthenticated peers, against a real `tollgate dev` stack.

Each attack is followed (or accompanied) by proof that another tenant is served normally: one
tenant, or a peer that never authenticates, must not be able to exhaust the gateway's
connections or memory, hold the pool's connections with requests the broker parks (long-polling
fetches, held JoinGroups), or put pool-harming topics on the shared pool; and what another
tenant's clients are told when something fails names nothing of the pool.

No test asserts a time: the attacks print the other tenant's produce latency (p50, p99, max)
under attack and in a baseline run without it (`pytest -s` shows them).
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from conftest import Stack, make_tenant
from support import (READ_ONLY_ACTIONS, Admin, Conn, RawKafka, TenantCluster, consume, create_topic,
                     policy, produce, unique, wait_until)

API_DESCRIBE_GROUPS = 15
API_METADATA = 3
API_JOIN_GROUP = 11


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def closed_by_peer(s: socket.socket) -> bool:
    """True once the gateway has closed `s` (EOF or reset), without blocking."""
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def served_normally(tc, label: str) -> None:
    """A tenant creates a topic, produces and consumes in a group, with no error."""
    conn = tc.conn()
    topic = unique(f"{label}-")
    create_topic(conn, topic)
    records = {f"k{i}": f"v{i}" for i in range(20)}
    reports = produce(conn, topic, records)
    assert [e for e, _ in reports if e is not None] == [], f"{label}: produce errors"
    got = consume(conn, topic, unique("g-"), expect=len(records))
    assert len(got) == len(records), f"{label}: consumed {len(got)} of {len(records)}"


def test_unauthenticated_floods_are_closed_at_the_sasl_deadline(stack_factory):
    # Before: 200 silent connections were all still open after 60 s, and 10,000 locked every
    # tenant out. The deadline is absolute, so a frame trickled in halves does not extend it.
    stack = stack_factory(extra_args=("--sasl-timeout-ms", "3000"))
    tenant = make_tenant(stack, Admin(stack.admin_url, stack.admin_token))
    host, port = stack.bootstrap.rsplit(":", 1)
    silent = [socket.create_connection((host, int(port)), timeout=10) for _ in range(200)]
    half = []
    for _ in range(50):
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(struct.pack(">i", 100) + b"\x00\x11")  # a frame of 100 bytes, 2 sent
        half.append(s)
    started = time.monotonic()
    # Another tenant is served while the flood holds its connections.
    served_normally(tenant, "during-flood")
    wait_until(lambda: all(closed_by_peer(s) for s in silent + half), 30,
               "every unauthenticated connection closed")
    elapsed = time.monotonic() - started
    for s in silent + half:
        s.close()
    assert elapsed < 30, elapsed


def describe_groups_v0(ids: int, id_len: int = 0) -> bytes:
    group = struct.pack(">h", id_len) + b"g" * id_len
    return struct.pack(">i", ids) + group * ids


def test_oversized_batched_requests_are_refused_without_growing_the_gateway(stack, admin):
    # Before: one DescribeGroups of 2,000,000 empty ids (4 MB) grew the gateway by 473 MB.
    attacker = make_tenant(stack, admin)
    victim = make_tenant(stack, admin)
    pid = stack.proc.pid
    before = rss_kib(pid)
    for body, why in (
        (describe_groups_v0(2_000_000), "a 4 MB request without records"),
        (describe_groups_v0(10_001), "more array elements than a request may carry"),
        (describe_groups_v0(10_001, 80), "more elements, in under 1 MiB"),
    ):
        with RawKafka(stack.bootstrap, attacker.token) as raw:
            try:
                raw.request(API_DESCRIBE_GROUPS, 0, body)
                raise AssertionError(f"answered {why}")
            except (ConnectionError, OSError):
                pass
    grown = rss_kib(pid) - before
    print(f"gateway RSS growth after the refused requests: {grown} KiB")
    assert grown < 32 * 1024, f"gateway RSS grew by {grown} KiB"
    # A request within the limits is answered.
    with RawKafka(stack.bootstrap, attacker.token) as raw:
        answer = raw.request(API_DESCRIBE_GROUPS, 0, describe_groups_v0(100, 8))
        (count,) = struct.unpack_from(">i", answer)
        assert count == 100
    served_normally(victim, "after-oversized")


def test_pool_harming_topic_configs_and_partition_counts_are_refused(stack, admin):
    tenant = make_tenant(stack, admin)
    client = AdminClient(tenant.conn().confluent())

    def create(topic: NewTopic):
        return client.create_topics([topic], request_timeout=30)[topic.topic]

    bad = [
        (NewTopic(unique("seg-"), 1, 1, config={"segment.bytes": "14"}), "segment.bytes"),
        (NewTopic(unique("ret-"), 1, 1, config={"retention.ms": "10"}), "retention.ms"),
        (NewTopic(unique("many-"), 100_000, 1), "2400"),
    ]
    for topic, named in bad:
        try:
            create(topic).result(timeout=30)
            raise AssertionError(f"{topic.topic} was created")
        except KafkaException as e:
            err = e.args[0]
            assert err.code() in (40, 44), err  # INVALID_CONFIG, POLICY_VIOLATION
            assert named in err.str(), err.str()
            assert "tg-" not in err.str(), err.str()
    # What MSK Serverless lets tenants set is accepted.
    ok = NewTopic(unique("ok-"), 2, 3, config={"retention.ms": "86400000", "cleanup.policy": "compact"})
    create(ok).result(timeout=30)
    names = client.list_topics(timeout=10).topics
    assert ok.topic in names and not any(t.topic in names for t, _ in bad)


# --------------------------------------------------------------------------------------------
# Requests the pool broker holds: long-polling fetches and held JoinGroups
#
# A broker holds a Fetch until it has data or its max wait passes, and a JoinGroup while the
# group rebalances. The gateway sends both on a broker's held-request connections (one per
# request in flight, up to a per-cluster share of a per-broker cap; gateway/src/pool) and probes
# brokers on a connection of their own. Once, 10.5 s into one tenant's 80 parked fetches, the
# gateway declared the pool's only broker down and another tenant's produces were all answered
# NOT_LEADER_OR_FOLLOWER. These tests hold such requests for longer than that while another
# tenant works, and fail on any error that tenant sees or a pool broker declared down.

#: How many of the attacking tenant's connections each hold a request at the pool.
HELD_REQUESTS = 80
#: How long each attack lasts at least: past the 10.5 s after which parked fetches used to get
#: the pool's broker declared down, with room to spare.
ATTACK_SECONDS = 16.0
#: What the attacker asks a Fetch to wait; the gateway lowers it to its cap at the pool.
LONG_POLL_MS = 60_000
#: The other tenant's records in the baseline run and (at least) under attack, produced one at
#: a time at most this often: a steady trickle, like a service writing as events happen.
BASELINE_RECORDS = 100
RECORDS_UNDER_ATTACK = 200
PRODUCE_INTERVAL = 0.05
#: How long the other tenant's group consumer stays in its group at least: through three of
#: librdkafka's heartbeats (heartbeat.interval.ms, 3 s).
GROUP_SECONDS = 10.0
#: What the gateway logs when it stops routing to a pool broker (Pool::mark_down).
BROKER_DOWN = "pool broker is down"

MEMBER_ID_REQUIRED = 79
JOIN_GROUP_VERSION = 5  # the last before flexible versions: group instance ids, no tagged fields


def kstring(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    return struct.pack(">h", len(s.encode())) + s.encode()


def pool_ports(stack: Stack) -> list[int]:
    """The pool brokers' ports: `tollgate dev` logs each broker to broker-<port>.log."""
    ports = sorted(int(m.group(1)) for p in stack.data_dir.rglob("broker-*.log")
                   if (m := re.fullmatch(r"broker-(\d+)\.log", p.name)))
    assert ports, f"no pool broker logs under {stack.data_dir}"
    return ports


def gateway_log(stack: Stack) -> list[str]:
    """The gateway's log lines (tracing writes to stderr), without colour codes."""
    text = stack.stderr_path.read_text(errors="replace")
    return [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in text.splitlines()]


def lines_of_interest(stack: Stack) -> list[str]:
    """The gateway's warnings and errors, and whatever it said about pool brokers."""
    return [line for line in gateway_log(stack)
            if re.search(r"\b(WARN|ERROR)\b", line) or "pool broker" in line]


def pool_connections(port: int) -> int:
    """Established loopback connections to `port` (/proc/net/tcp): the connections the gateway
    holds to that pool broker."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in list(f)[1:]]
    return sum(1 for r in rows if r[3] == "01" and int(r[2].split(":")[1], 16) == port)


def text_of(error) -> str:
    """An error as the tenant's code sees it: a KafkaError's name and text, else the text."""
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        error = error.args[0]
    if isinstance(error, KafkaError):
        return f"{error.name()}: {error.str()}"
    return str(error)


def pool_leaks(texts: list[str], stack: Stack) -> list[str]:
    """The texts that name something of the pool: a physical name (the `tg-` prefix), or a pool
    broker's address or port."""
    ports = "|".join(str(p) for p in pool_ports(stack))
    mark = re.compile(rf"tg-|(?<!\d)({ports})(?!\d)")
    return [t for t in texts if mark.search(t)]


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))]


def print_latency(label: str, latencies: list[float]) -> None:
    ms = sorted(x * 1000 for x in latencies)
    print(f"\nB's produce latency, {label}: {len(ms)} records one at a time (acks=all), "
          f"p50 {percentile(ms, 0.5):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, max {ms[-1]:.1f} ms")


@dataclass
class Produced:
    keys: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def produce_one_by_one(conn: Conn, topic: str, at_least: int, until: float | None = None,
                       interval: float = 0.0) -> Produced:
    """Produces records one at a time, each flushed before the next so that its latency is its
    own: at least `at_least`, and on until `until` (time.monotonic()), one per `interval`
    seconds at most. acks=all and no retries: a retry would hide the error code it retried."""
    producer = Producer(conn.confluent(**{"acks": "all", "linger.ms": 0, "retries": 0,
                                          "enable.idempotence": False,
                                          "message.timeout.ms": 30_000}))
    out = Produced()
    next_at = time.monotonic()
    i = 0
    while i < at_least or (until is not None and time.monotonic() < until):
        key = f"k{i:05d}"
        reports: list = []
        started = time.monotonic()
        producer.produce(topic, key=key, value=f"value-{i}",
                         on_delivery=lambda err, _msg: reports.append(err))
        left = producer.flush(40)
        out.latencies.append(time.monotonic() - started)
        if left or not reports:
            out.errors.append(f"record {key} neither delivered nor failed within 40 s")
            break
        if reports[0] is None:
            out.keys.append(key)
        else:
            out.errors.append(text_of(reports[0]))
        i += 1
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    return out


@dataclass
class Consumed:
    records: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: The partitions of each assignment, in order.
    assignments: list[list[int]] = field(default_factory=list)
    #: Revocations before the consumer was closed (closing revokes too).
    revocations: int = 0
    commits: int = 0
    #: The group's committed offset of partition 0, read back before closing.
    committed: int | None = None
    #: Heartbeats the client sent (librdkafka's statistics, per broker connection).
    heartbeats: int = 0


def consume_in_group(conn: Conn, topic: str, group: str, expect: int, until: float | None = None,
                     stay: float = 0.0, timeout: float = 60) -> Consumed:
    """A confluent-kafka group consumer of `topic` (partition 0) from the earliest offset: polls
    until it has `expect` distinct records, and until `until` (time.monotonic()) if given, and
    for `stay` seconds at least after its first assignment, committing synchronously after every
    batch it gets; librdkafka heartbeats meanwhile. Then it reads the group's committed offset
    back and closes. Records errors rather than raising."""
    out = Consumed()
    closing = False
    assigned_at: list[float] = []

    def assigned(_consumer, partitions):
        out.assignments.append([p.partition for p in partitions])
        assigned_at.append(time.monotonic())

    def revoked(_consumer, _partitions):
        if not closing:
            out.revocations += 1

    def stats(text: str) -> None:
        brokers = json.loads(text).get("brokers", {}).values()
        out.heartbeats = sum(b.get("req", {}).get("Heartbeat", 0) for b in brokers)

    consumer = Consumer(conn.confluent(**{"group.id": group, "auto.offset.reset": "earliest",
                                          "enable.auto.commit": False, "stats_cb": stats,
                                          "statistics.interval.ms": 1000}))
    try:
        consumer.subscribe([topic], on_assign=assigned, on_revoke=revoked)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            if (len(out.records) >= expect and (until is None or now >= until)
                    and assigned_at and now >= assigned_at[0] + stay):
                break
            batch = consumer.consume(num_messages=100, timeout=0.5)
            good = [m for m in batch if not m.error()]
            out.errors += [text_of(m.error()) for m in batch
                           if m.error() and m.error().code() != KafkaError._PARTITION_EOF]
            for m in good:
                out.records[m.key().decode()] = m.value().decode()
            if good:
                try:
                    for tp in consumer.commit(asynchronous=False) or []:
                        if tp.error is not None:
                            out.errors.append(text_of(tp.error))
                    out.commits += 1
                except KafkaException as e:
                    out.errors.append(text_of(e))
        try:
            [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=20)
            out.committed = tp.offset
        except KafkaException as e:
            out.errors.append(text_of(e))
    finally:
        closing = True
        consumer.close()
    return out


class Held:
    """`n` connections of one tenant, each sending `ask(raw, i)` again as soon as it is answered
    (a request the pool broker holds), so that `n` requests stay held for as long as this runs.
    `ask` returns the answer's error code. Used as a context manager: leaving it closes the
    connections, which ends the requests in flight."""

    def __init__(self, tc: TenantCluster, n: int, ask):
        self.ask = ask
        self.lock = threading.Lock()
        self.in_flight = 0
        self.answers: list[tuple[int, float]] = []  # (error code, seconds held)
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.conns = [RawKafka(tc.bootstrap, tc.token, timeout=90) for _ in range(n)]
        self.threads = [threading.Thread(target=self._run, args=(raw, i), daemon=True)
                        for i, raw in enumerate(self.conns)]
        self.started = time.monotonic()
        self.seconds = 0.0
        for t in self.threads:
            t.start()

    def _run(self, raw: RawKafka, i: int) -> None:
        while not self.stopping.is_set():
            with self.lock:
                self.in_flight += 1
            sent = time.monotonic()
            try:
                code = self.ask(raw, i)
            except Exception as e:  # noqa: BLE001 - a failure ends this connection's part
                if not self.stopping.is_set():
                    with self.lock:
                        self.failures.append(f"connection {i}: {e!r}")
                return
            finally:
                with self.lock:
                    self.in_flight -= 1
            with self.lock:
                self.answers.append((code, time.monotonic() - sent))

    def all_held(self) -> bool:
        with self.lock:
            return self.in_flight == len(self.conns)

    def __enter__(self) -> "Held":
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.seconds = time.monotonic() - self.started
        for raw in self.conns:
            try:
                raw.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            raw.close()
        for t in self.threads:
            t.join(10)

    def summary(self, what: str) -> str:
        with self.lock:
            answers = list(self.answers)
        held = sorted(s for _, s in answers) or [0.0]
        codes = dict(Counter(code for code, _ in answers))
        return (f"A's {what}: {len(self.conns)} connections for {self.seconds:.1f} s, "
                f"{len(answers)} answered (error codes {codes}), held p50 {percentile(held, 0.5):.2f} s, "
                f"max {held[-1]:.2f} s; connection failures: {self.failures or 'none'}")


def long_poll(topic: str):
    """`ask` for Held: a Fetch of an empty partition that waits up to LONG_POLL_MS for a byte."""

    def ask(raw: RawKafka, _i: int) -> int:
        error, _, _ = raw.fetch(topic, 0, 0, max_wait_ms=LONG_POLL_MS)
        return error

    return ask


@dataclass
class JoinAnswer:
    error: int
    generation: int
    protocol: str | None
    leader: str | None
    member_id: str | None
    members: int
    seconds: float


def join_group(raw: RawKafka, group: str, topic: str, member_id: str = "",
               instance_id: str | None = None, session_ms: int = 45_000,
               rebalance_ms: int = 300_000) -> JoinAnswer:
    """A consumer's JoinGroup (v5, protocol "range", subscribed to `topic`)."""
    subscription = struct.pack(">hi", 0, 1) + kstring(topic) + struct.pack(">i", -1)
    body = kstring(group) + struct.pack(">ii", session_ms, rebalance_ms) + kstring(member_id)
    body += kstring(instance_id) + kstring("consumer")
    body += struct.pack(">i", 1) + kstring("range") + struct.pack(">i", len(subscription)) + subscription
    sent = time.monotonic()
    data = raw.request(API_JOIN_GROUP, JOIN_GROUP_VERSION, body)
    seconds = time.monotonic() - sent
    _, error, generation = struct.unpack_from(">ihi", data)
    pos = 10
    strings = []
    for _ in range(3):
        (n,) = struct.unpack_from(">h", data, pos)
        pos += 2
        strings.append(None if n < 0 else data[pos:pos + n].decode())
        pos += max(n, 0)
    (members,) = struct.unpack_from(">i", data, pos)
    return JoinAnswer(error, generation, *strings, members, seconds)


def attack_and_victim(stack: Stack) -> tuple[TenantCluster, TenantCluster, Conn, Produced]:
    """Two tenants on `stack`, and the victim's baseline: its produce latency with nothing else
    going on (printed)."""
    admin = Admin(stack.admin_url, stack.admin_token)
    attacker, victim = make_tenant(stack, admin), make_tenant(stack, admin)
    b = victim.conn()
    topic = unique("baseline-")
    create_topic(b, topic)
    baseline = produce_one_by_one(b, topic, BASELINE_RECORDS)
    assert baseline.errors == [], f"B's baseline produce failed: {baseline.errors[:5]}"
    print_latency("baseline, no attack", baseline.latencies)
    return attacker, victim, b, baseline


def assert_victim_served(stack: Stack, b: Conn, produced: Produced, consumed: Consumed,
                         attack: Held) -> None:
    """What the victim saw under attack names nothing of the pool and holds no error; it got
    every record it produced, committed them, and its group settled once; the attack stayed on
    throughout; and the gateway never stopped routing to a pool broker."""
    print_latency(f"under attack ({len(attack.conns)} held requests)", produced.latencies)
    texts = [text_of(e) for e in b.errors] + produced.errors + consumed.errors
    assert pool_leaks(texts, stack) == [], f"B was told of the pool: {pool_leaks(texts, stack)}"
    assert produced.errors == [], \
        f"{len(produced.errors)} of {len(produced.latencies)} of B's produces failed: {produced.errors[:5]}"
    assert consumed.errors == [], f"B's consumer saw errors: {consumed.errors[:10]}"
    assert [text_of(e) for e in b.errors] == [], f"B's clients reported errors: {b.errors[:10]}"
    assert set(consumed.records) == set(produced.keys), \
        f"B consumed {len(consumed.records)} of its {len(produced.keys)} records"
    assert consumed.committed == len(produced.keys), \
        f"B's group committed offset {consumed.committed}, expected {len(produced.keys)}"
    assert consumed.assignments == [[0]] and consumed.revocations == 0, \
        f"B's group did not settle once: assignments {consumed.assignments}, " \
        f"revocations {consumed.revocations}"
    assert attack.failures == [], f"the attack did not stay on: {attack.failures[:5]}"
    down = [line for line in gateway_log(stack) if BROKER_DOWN in line]
    assert down == [], f"the gateway declared a pool broker down: {down}"


def test_parked_long_polls_leave_other_tenants_served(stack_factory):
    stack = stack_factory()
    attacker, victim, b, _ = attack_and_victim(stack)
    empty = unique("empty-")
    create_topic(attacker.conn(), empty)
    topic = unique("during-")
    with Held(attacker, HELD_REQUESTS, long_poll(empty)) as polls:
        wait_until(polls.all_held, 30, f"all {HELD_REQUESTS} of A's fetches parked")
        print(f"\npool connections with A's fetches parked: "
              f"{ {p: pool_connections(p) for p in pool_ports(stack)} }")
        create_topic(b, topic)
        produced = produce_one_by_one(b, topic, RECORDS_UNDER_ATTACK,
                                      until=polls.started + ATTACK_SECONDS, interval=PRODUCE_INTERVAL)
        consumed = consume_in_group(b, topic, unique("g-"), expect=len(produced.keys))
        still_parked = polls.in_flight
    print(polls.summary(f"long-polling fetches (max_wait_ms {LONG_POLL_MS})"))
    print(f"A's fetches in flight when B was done: {still_parked}")
    print("gateway log lines of interest:", *lines_of_interest(stack)[-40:], sep="\n  ")
    assert_victim_served(stack, b, produced, consumed, polls)


def test_held_join_groups_leave_other_tenants_groups_settled(stack_factory):
    # tansu holds a JoinGroup 3 s (PAUSE_MS in its group coordinator) when a follower rejoins a
    # group that has a leader, and when a static member (a group instance id) joins; Apache
    # Kafka holds one until the group has rejoined or the rebalance timeout passed.
    stack = stack_factory()
    attacker, victim, b, _ = attack_and_victim(stack)
    a_topic = unique("a-")
    create_topic(attacker.conn(), a_topic)
    group = unique("held-")
    follower_answers: list[JoinAnswer] = []
    follower_ids: dict[int, str] = {}

    def rejoin_as_follower(raw: RawKafka, i: int) -> int:
        answer = join_group(raw, group, a_topic, member_id=follower_ids.get(i, ""))
        follower_ids[i] = answer.member_id or follower_ids.get(i, "")
        follower_answers.append(answer)
        return answer.error

    def join_as_static_member(raw: RawKafka, i: int) -> int:
        return join_group(raw, f"{group}-static-{i}", a_topic, instance_id=f"static-{i}").error

    topic = unique("during-")
    # A's rebalance: member 1 joins and leads, then never syncs nor heartbeats; member 2 keeps
    # rejoining, and each of its JoinGroups is held. Beside it, static members' JoinGroups,
    # each held, on HELD_REQUESTS connections.
    with RawKafka(stack.bootstrap, attacker.token, timeout=90) as leader:
        first = join_group(leader, group, a_topic, session_ms=120_000)
        assert first.error == MEMBER_ID_REQUIRED, first
        led = join_group(leader, group, a_topic, member_id=first.member_id, session_ms=120_000)
        assert led.error == 0 and led.leader == led.member_id, led
        with Held(attacker, 1, rejoin_as_follower) as follower, \
                Held(attacker, HELD_REQUESTS, join_as_static_member) as static:
            wait_until(lambda: static.all_held() and follower.all_held(), 30,
                       f"{HELD_REQUESTS + 1} of A's JoinGroups held")
            create_topic(b, topic)
            produced = produce_one_by_one(b, topic, RECORDS_UNDER_ATTACK, interval=PRODUCE_INTERVAL)
            consumed = consume_in_group(b, topic, unique("g-"), expect=len(produced.keys),
                                        until=static.started + ATTACK_SECONDS, stay=GROUP_SECONDS)
    print(f"\nA's leader: first JoinGroup {first}\n  then {led}")
    print("A's follower's JoinGroups:", *follower_answers[:6], sep="\n  ")
    print(follower.summary("follower rejoining a group whose leader never syncs"))
    print(static.summary("static members' JoinGroups"))
    print("gateway log lines of interest:", *lines_of_interest(stack)[-40:], sep="\n  ")
    print(f"B's consumer: {consumed.commits} commits, {consumed.heartbeats} heartbeats")
    assert follower.failures == [], f"A's follower's connection failed: {follower.failures}"
    assert_victim_served(stack, b, produced, consumed, static)
    assert consumed.heartbeats > 0, "B's consumer never heartbeated"


def test_error_messages_name_nothing_of_the_pool(stack, admin):
    """What a tenant's clients are told when things fail: Kafka's error codes, and texts that
    name neither a physical topic name (tg-...) nor a pool broker's address or port. (The
    attacks above check what their victim was told the same way, `assert_victim_served`.)"""
    owner = make_tenant(stack, admin)
    tenant = make_tenant(stack, admin)
    b = tenant.conn()
    theirs = unique("theirs-")
    create_topic(owner.conn(), theirs)
    mine = unique("mine-")
    create_topic(b, mine)
    client = AdminClient(b.confluent())
    told: dict[str, list[str]] = {}

    def failure(what: str, future) -> None:
        try:
            future.result(timeout=60)
            told[what] = []
        except KafkaException as e:
            told[what] = [text_of(e)]

    # Produce to a topic it may not see (another tenant's; not created in its own namespace
    # instead), and without WriteData.
    reports = produce(b, theirs, {"k": "v"}, timeout=10, **{"retries": 0, "allow.auto.create.topics": False,
                                                            "topic.metadata.propagation.max.ms": 3000})
    told["produce to another tenant's topic"] = [text_of(e) for e, _ in reports if e is not None]
    reader = tenant.conn(admin.create_token(tenant.cluster_id, "reader",
                                            policy(tenant.tenant, tenant.cluster_name,
                                                   READ_ONLY_ACTIONS))["token"])
    reports = produce(reader, mine, {"k": "v"}, timeout=10, **{"retries": 0})
    told["produce without WriteData"] = [text_of(e) for e, _ in reports if e is not None]
    # Topic administration that fails.
    bad = NewTopic(unique("bad-"), 1, 1, config={"segment.bytes": "14"})
    failure("create a topic with a bad config", client.create_topics([bad], request_timeout=30)[bad.topic])
    again = NewTopic(mine, 1, 1)
    failure("create a topic that exists", client.create_topics([again], request_timeout=30)[mine])
    missing = unique("missing-")
    failure("delete a missing topic", client.delete_topics([missing], request_timeout=30)[missing])
    failure("delete another tenant's topic", client.delete_topics([theirs], request_timeout=30)[theirs])
    resource = ConfigResource(ConfigResource.Type.TOPIC, missing)
    failure("describe a missing topic's configs", client.describe_configs([resource])[resource])
    nogroup = unique("nogroup-")
    failure("delete a missing group", client.delete_consumer_groups([nogroup], request_timeout=30)[nogroup])
    # A consumer of a topic it may not see.
    consumer = Consumer(b.confluent(**{"group.id": unique("g-"), "auto.offset.reset": "earliest"}))
    try:
        consumer.subscribe([theirs])
        seen: list[str] = []
        deadline = time.monotonic() + 20
        while not seen and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error():
                seen.append(text_of(msg.error()))
        told["consume another tenant's topic"] = seen
    finally:
        consumer.close()
    told["client error callbacks"] = [text_of(e) for e in b.errors + reader.errors]

    for what, texts in told.items():
        print(f"{what}: {texts}")
    every = [t for texts in told.values() for t in texts]
    assert pool_leaks(every, stack) == [], f"errors told of the pool: {pool_leaks(every, stack)}"
    silent = [what for what, texts in told.items() if not texts and what != "client error callbacks"]
    assert silent == [], f"no error was reported for: {silent}"
