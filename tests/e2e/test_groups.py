"""Consumer groups through the gateway, the way users write them.

`flow_kafka_python_plain` is kafka-python's plain group consumer: an admin client creates the
topic, a producer writes records, and a `KafkaConsumer(topic, group_id=...)` that has never seen
the topic's metadata consumes them all. It takes a `Conn`, so the same code can be pointed at a
bare tansu broker to compare (`Conn(bootstrap, None)`).
"""

from __future__ import annotations

import time

from support import Conn, wait_until

N = 500
PARTITIONS = 3
CONSUME_TIMEOUT = 60.0


def flow_kafka_python_plain(conn: Conn, topic: str, group: str, describe=None) -> float:
    """Returns the seconds from the consumer's creation to its last expected record.
    `describe(consumer)`, if given, runs while the consumer is still in the group."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(**conn.kafka_python(request_timeout_ms=60000))
    try:
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        wait_until(lambda: topic in admin.list_topics(), 60, f"{topic} in list_topics")
    finally:
        admin.close()

    expected = {f"key-{i:04d}": f"plain-value-{i}" for i in range(N)}
    producer = KafkaProducer(**conn.kafka_python(linger_ms=5))
    try:
        futures = [producer.send(topic, key=k.encode(), value=v.encode()) for k, v in expected.items()]
        producer.flush(timeout=60)
        assert len([f.get(timeout=60) for f in futures]) == N
    finally:
        producer.close(timeout=30)

    # Exactly what a user writes: no metadata loaded first, the topic given to the constructor.
    started = time.monotonic()
    consumer = KafkaConsumer(topic, **conn.kafka_python(
        group_id=group, auto_offset_reset="earliest", enable_auto_commit=False))
    got: list[tuple[str, str]] = []
    try:
        deadline = started + CONSUME_TIMEOUT
        while len(got) < N and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=500).items():
                assert tp.topic == topic
                got.extend((r.key.decode(), r.value.decode()) for r in records)
        took = time.monotonic() - started
        assert len(got) == N, (f"kafka-python's plain group consumer got {len(got)} of {N} "
                               f"records in {CONSUME_TIMEOUT:.0f}s")
        # Strays and duplicates: one more poll must bring nothing.
        extra = consumer.poll(timeout_ms=1000)
        assert not extra, f"records after all {N}: {extra}"
        assert dict(got) == expected
        if describe is not None:
            describe(consumer)
    finally:
        consumer.close()
    return took


def test_kafka_python_plain_group_consumer(new_tenant):
    tc = new_tenant()
    took = flow_kafka_python_plain(tc.conn(), "plain-orders", "g-plain")
    print(f"kafka-python plain consumer: {N} records in {took:.2f}s")


def test_describe_groups_members_carry_their_assignment(new_tenant):
    """DescribeGroups on a live group: the member is described with its assignment (every
    partition of the tenant's topic, by the tenant's name) and the group with its protocol."""
    from confluent_kafka.admin import AdminClient

    tc = new_tenant()
    conn = tc.conn()
    topic, group = "described", "g-described"

    def describe(_consumer):
        admin = AdminClient(conn.confluent())

        def described():
            desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
            members = desc.members
            if len(members) != 1 or members[0].assignment is None:
                return None
            if not members[0].assignment.topic_partitions:
                return None
            return desc

        desc = wait_until(described, 30, f"{group} described with its member's assignment")
        assert desc.group_id == group
        assert desc.partition_assignor in ("range", "roundrobin"), desc.partition_assignor
        parts = {(tp.topic, tp.partition) for tp in desc.members[0].assignment.topic_partitions}
        assert parts == {(topic, p) for p in range(PARTITIONS)}, parts
        m = desc.members[0]
        for field in (m.member_id, m.client_id, m.host):
            assert "tg-" not in (field or ""), (m.member_id, m.client_id, m.host)

    flow_kafka_python_plain(conn, topic, group, describe=describe)
