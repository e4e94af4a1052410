"""Hostile and careless tenants, and unauthenticated peers, against a real `tollgate dev` stack.

Each attack is followed (or accompanied) by proof that another tenant is served normally: one
tenant, or a peer that never authenticates, must not be able to exhaust the gateway's
connections or memory, or put pool-harming topics on the shared pool.
"""

from __future__ import annotations

import socket
import struct
import time

from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka import KafkaException

from conftest import make_tenant
from support import Admin, RawKafka, consume, create_topic, produce, unique, wait_until

API_DESCRIBE_GROUPS = 15
API_METADATA = 3


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
