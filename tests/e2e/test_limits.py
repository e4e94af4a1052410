"""Count quotas (issue 13; CONTRACT "Quotas and limits") against a real `tollgate dev` stack:
a cluster's connections (`max_connections`, `connections_per_second`) are counted once they
have authenticated, and one over either is closed without an answer, as Kafka closes a
connection over its quotas, while another tenant on the same gateway connects as before.
"""

from __future__ import annotations

import struct
import time

import pytest
from confluent_kafka.admin import AdminClient

from support import Admin, RawKafka, TenantCluster, create_topic, wait_until


def set_quotas(admin: Admin, tc: TenantCluster, **quotas) -> None:
    status, body = admin.request("PATCH", f"/v1/clusters/{tc.cluster_id}", {"quotas": quotas})
    assert status == 200, body


def connect(tc: TenantCluster) -> RawKafka:
    """An authenticated connection that has answered a Metadata request."""
    raw = RawKafka(tc.bootstrap, tc.token, timeout=10)
    try:
        raw.request(3, 4, struct.pack(">ib", -1, 0))  # Metadata v4, all topics
    except BaseException:
        raw.close()
        raise
    return raw


def refused(tc: TenantCluster) -> bool:
    try:
        connect(tc).close()
    except (ConnectionError, OSError):
        return True
    return False


def test_a_cluster_at_max_connections_has_its_next_connection_closed(stack, admin, new_tenant):
    limited, other = new_tenant(), new_tenant()
    set_quotas(admin, limited, max_connections=3, connections_per_second=None)
    held = [connect(limited) for _ in range(3)]
    try:
        assert refused(limited), "a 4th connection was served"
        # The admin API shows the cluster's connections and the refusal.
        use = admin._ok("GET", f"/v1/clusters/{limited.cluster_id}")["quota_use"]
        assert use["connections"] == 3 and use["refused"]["connections"] >= 1, use
        # Another tenant is not touched, with a real client (several connections) too.
        with RawKafka(other.bootstrap, other.token) as raw:
            raw.request(3, 4, struct.pack(">ib", -1, 0))
        client = AdminClient(other.conn().confluent())
        client.list_topics(timeout=20)
        # A closed connection gives its place back.
        held.pop().close()
        wait_until(lambda: not refused(limited), 10, "a place after a close")
        # Lifting the quota applies at once.
        set_quotas(admin, limited, max_connections=None)
        held.extend(connect(limited) for _ in range(3))
    finally:
        for raw in held:
            raw.close()


def test_a_cluster_over_connections_per_second_is_closed_until_the_second_passes(stack, admin,
                                                                                new_tenant):
    limited = new_tenant()
    set_quotas(admin, limited, max_connections=None, connections_per_second=2)
    # Sleeping past a second boundary of the window is not needed: the window slides.
    time.sleep(1.1)
    start = time.monotonic()
    first = [connect(limited) for _ in range(2)]
    try:
        over = refused(limited)
        if time.monotonic() - start < 1.0:
            assert over, "a 3rd connection within a second was served"
        time.sleep(1.1)
        assert not refused(limited), "no room a second later"
    finally:
        for raw in first:
            raw.close()


def commit_offset(raw: RawKafka, group: str, topic: str) -> int:
    """OffsetCommit v2 of offset 0 of partition 0 by a client outside any generation, as a
    consumer that assigns its own partitions commits: the partition's error code."""
    body = kstring(group) + struct.pack(">i", -1) + kstring("") + struct.pack(">q", -1)
    body += struct.pack(">i", 1) + kstring(topic)
    body += struct.pack(">i", 1) + struct.pack(">iq", 0, 0) + kstring(None)
    answer = raw.request(8, 2, body)
    # topics[1]: name, partitions[1]: partition_index, error_code
    (name_len,) = struct.unpack_from(">h", answer, 4)
    (error,) = struct.unpack_from(">h", answer, 4 + 2 + name_len + 4 + 4)
    return error


def kstring(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    return struct.pack(">h", len(s.encode())) + s.encode()


POLICY_VIOLATION = 44


def test_a_new_group_over_max_consumer_groups_is_refused(stack, admin, new_tenant):
    limited, other = new_tenant(), new_tenant()
    set_quotas(admin, limited, max_consumer_groups=1, max_connections=None)
    create_topic(limited.conn(), "orders")
    create_topic(other.conn(), "orders")
    with RawKafka(limited.bootstrap, limited.token) as raw:
        assert commit_offset(raw, "first", "orders") == 0
        assert commit_offset(raw, "second", "orders") == POLICY_VIOLATION
        # The group the cluster has goes on.
        assert commit_offset(raw, "first", "orders") == 0
        # Still refused once the pool has been asked again.
        time.sleep(5.5)
        assert commit_offset(raw, "third", "orders") == POLICY_VIOLATION
    with RawKafka(other.bootstrap, other.token) as raw:
        assert commit_offset(raw, "first", "orders") == 0
        assert commit_offset(raw, "second", "orders") == 0


def test_partition_quotas_refuse_topics_with_codes_naming_them(stack, admin, new_tenant):
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic

    tc = new_tenant()
    set_quotas(admin, tc, max_partitions=4, partition_mutations_per_5_minutes=3)
    client = AdminClient(tc.conn().confluent())

    def create(name: str, partitions: int):
        topic = NewTopic(name, partitions, 1)
        return client.create_topics([topic], request_timeout=30)[name].result(timeout=30)

    def refusal(name: str, partitions: int):
        try:
            create(name, partitions)
        except KafkaException as e:
            return e.args[0]
        raise AssertionError(f"{name} was created")

    create("first", 2)
    # The cluster's partitions are counted as the pool has them.
    wait_until(lambda: "max_partitions" in refusal("big", 3).str(), 20, "max_partitions binding")
    err = refusal("big", 3)
    assert "max_partitions" in err.str() and "at most 4" in err.str(), err.str()
    # 2 more fit max_partitions but not the 3 mutations per 5 minutes. librdkafka speaks
    # CreateTopics v4, before KIP-599: POLICY_VIOLATION rather than THROTTLING_QUOTA_EXCEEDED.
    err = refusal("second", 2)
    assert err.code() in (POLICY_VIOLATION, 89), err
    assert "partition_mutations_per_5_minutes" in err.str(), err.str()
    # Lifting the quota applies at once.
    set_quotas(admin, tc, partition_mutations_per_5_minutes=None)
    create("second", 2)


def test_max_connections_holds_across_two_gateways_sharing_redis(stack_factory, redis_server, tmp_path):
    """Two `tollgate serve` on one pool and one Redis: a cluster's connections through both
    count against one max_connections (each instance tells the others its count every 100 ms
    through Redis)."""
    from dataclasses import replace

    from conftest import make_tenant, serve_pair
    from test_metering import STACK_ARGS, accepts, pool_broker

    pool = stack_factory(label="tollgate dev as the pool for two serve gateways")
    with serve_pair(pool_broker(pool), redis_server, tmp_path, STACK_ARGS) as (gateways, token):
        a, b = gateways
        admin_a = Admin(a.admin_url, token)
        tc = make_tenant(a, admin_a)
        through_b = replace(tc, bootstrap=b.bootstrap)
        wait_until(lambda: accepts(through_b.conn()), 15, "gateway B to know the cluster")
        set_quotas(admin_a, tc, max_connections=3, connections_per_second=None)
        held = [connect(tc), connect(tc), connect(through_b)]
        try:
            # B holds to the quota once it has the PATCH (its registry follows Redis about once
            # a second) and has heard of A's two (every 100 ms); A, once it hears of B's one.
            wait_until(lambda: refused(through_b), 10, "a 4th connection through B refused")
            wait_until(lambda: refused(tc), 5, "a 4th connection through A refused")
            use = admin_a._ok("GET", f"/v1/clusters/{tc.cluster_id}")["quota_use"]
            assert (use["connections"], use["connections_elsewhere"]) == (2, 1), use
            # A connection closed through A gives a place back through B.
            held.pop(0).close()
            wait_until(lambda: not refused(through_b), 10, "a place through B after a close on A")
        finally:
            for raw in held:
                raw.close()
