"""Real Kafka clients through the gateway: each library creates a topic, produces records with
keys, consumes them all back in a consumer group, commits, lists topics, describes the group and
deletes the topic, authenticating with a tenant's token.

Each flow takes a `Conn` (bootstrap + token) and names, so the same code can be pointed at a
bare broker to check the client side alone.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

from support import FETCH_DRAIN_SECONDS, Conn, let_pending_fetches_finish, wait_until

N = 200
PARTITIONS = 3
CONSUME_TIMEOUT = 90.0
# After the last expected record, keep polling this long to catch duplicates or strays.
SETTLE_POLLS = 3


def expected_records(tag: str, n: int = N) -> dict[str, str]:
    return {f"key-{i:04d}": f"{tag}-value-{i}" for i in range(n)}


def check_no_internal_names(names, conn_label: str = ""):
    leaked = [t for t in names if t.startswith("tg-") or t.startswith("__")]
    assert not leaked, f"{conn_label} sees pool-internal names: {leaked}"


# --------------------------------------------------------------------------------------------
# confluent-kafka


def flow_confluent(conn: Conn, topic: str, group: str, tag: str, mechanism: str = "OAUTHBEARER",
                   idempotent: bool = True) -> None:
    from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(conn.confluent(mechanism))
    futures = admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
                                  operation_timeout=30, request_timeout=60)
    futures[topic].result(timeout=60)

    def topic_ready():
        md = admin.list_topics(topic=topic, timeout=10)
        t = md.topics.get(topic)
        return t is not None and t.error is None and len(t.partitions) == PARTITIONS

    wait_until(topic_ready, 60, f"topic {topic} with {PARTITIONS} partitions in metadata")

    # Produce.
    expected = expected_records(tag)
    reports = []
    producer = Producer(conn.confluent(mechanism, **{"enable.idempotence": idempotent, "linger.ms": 5}))
    for key, value in expected.items():
        producer.produce(topic, key=key, value=value,
                         on_delivery=lambda err, msg: reports.append((err, msg)))
        producer.poll(0)
    left = producer.flush(60)
    assert left == 0, f"{left} records not delivered within 60s; client errors: {conn.errors}"
    assert len(reports) == N
    failed = [(err, msg.key()) for err, msg in reports if err is not None]
    assert not failed, f"delivery failures: {failed[:5]}"
    assert {msg.topic() for _, msg in reports} == {topic}
    assert {msg.partition() for _, msg in reports} <= set(range(PARTITIONS))

    # Consume in a group, from the beginning.
    consumer = Consumer(conn.confluent(mechanism, **{
        "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False,
    }))
    try:
        consumer.subscribe([topic])
        got: list[tuple[str, str, int, int]] = []
        deadline = time.monotonic() + CONSUME_TIMEOUT
        while len(got) < N and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                assert msg.error().code() == KafkaError._PARTITION_EOF, f"consume error: {msg.error()}"
                continue
            got.append((msg.key().decode(), msg.value().decode(), msg.partition(), msg.offset()))
            assert msg.topic() == topic
        for _ in range(SETTLE_POLLS):
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error():
                got.append((msg.key().decode(), msg.value().decode(), msg.partition(), msg.offset()))
        assert len(got) == N, f"consumed {len(got)} records, expected exactly {N}; errors: {conn.errors}"
        assert {k: v for k, v, _, _ in got} == expected

        committed = consumer.commit(asynchronous=False)
        assert all(tp.error is None for tp in committed), committed
        parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        offsets = consumer.committed(parts, timeout=30)
        total = 0
        for tp in offsets:
            assert tp.error is None, tp
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=30)
            assert tp.offset == high, f"partition {tp.partition}: committed {tp.offset}, high watermark {high}"
            total += high - low
        assert total == N
    finally:
        consumer.close()

    # Cluster views: topics, groups, committed offsets, through the admin client.
    md = admin.list_topics(timeout=30)
    assert topic in md.topics
    check_no_internal_names(md.topics, "confluent list_topics")
    for broker in md.brokers.values():
        assert broker.host == conn.bootstrap.rsplit(":", 1)[0], f"metadata shows a broker that is not the gateway: {broker}"

    groups = admin.list_consumer_groups(request_timeout=30).result(timeout=60)
    group_ids = {g.group_id for g in groups.valid}
    assert group in group_ids, f"{group} not in listed groups {group_ids}; errors {groups.errors}"
    check_no_internal_names(group_ids, "confluent list_consumer_groups")

    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                            request_timeout=30)[group].result(timeout=60)
    by_partition = {tp.partition: tp.offset for tp in res.topic_partitions if tp.topic == topic}
    assert {tp.topic for tp in res.topic_partitions} == {topic}
    assert sum(by_partition.values()) == N, res.topic_partitions

    # Delete the topic.
    let_pending_fetches_finish()
    admin.delete_topics([topic], operation_timeout=30, request_timeout=60)[topic].result(timeout=60)
    wait_until(lambda: topic not in admin.list_topics(timeout=10).topics, 30, f"{topic} to disappear")

    # Describe the group last, so that a failure here cannot hide any of the checks above.
    desc = admin.describe_consumer_groups([group], request_timeout=30)[group].result(timeout=60)
    assert desc.group_id == group


def test_confluent_oauthbearer(new_tenant):
    tc = new_tenant()
    flow_confluent(tc.conn(), "orders", "g-confluent", "confluent-oauth", "OAUTHBEARER", idempotent=True)


def test_confluent_plain(new_tenant):
    tc = new_tenant()
    flow_confluent(tc.conn(), "orders", "g-confluent-plain", "confluent-plain", "PLAIN", idempotent=False)


# --------------------------------------------------------------------------------------------
# kafka-python


def flow_kafka_python(conn: Conn, topic: str, group: str, tag: str) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(**conn.kafka_python(request_timeout_ms=60000))
    try:
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        wait_until(lambda: topic in admin.list_topics(), 60, f"{topic} in list_topics")

        expected = expected_records(tag)
        producer = KafkaProducer(**conn.kafka_python(linger_ms=5))
        try:
            futures = [producer.send(topic, key=k.encode(), value=v.encode()) for k, v in expected.items()]
            producer.flush(timeout=60)
            metas = [f.get(timeout=60) for f in futures]
        finally:
            producer.close(timeout=30)
        assert {m.topic for m in metas} == {topic}
        assert len(metas) == N

        # Metadata loaded before subscribing, as a client that checks its topic first does.
        # test_groups.py runs the plain pattern (topic given to the constructor, no metadata
        # loaded), which tansu 0.6.0's coordinator used to starve (vendor/README.md,
        # tansu-broker).
        consumer = KafkaConsumer(**conn.kafka_python(
            group_id=group, auto_offset_reset="earliest", enable_auto_commit=False))
        try:
            wait_until(lambda: consumer.partitions_for_topic(topic), 60,
                       f"kafka-python to know {topic}'s partitions")
            consumer.subscribe([topic])
            got = []
            deadline = time.monotonic() + CONSUME_TIMEOUT
            while len(got) < N and time.monotonic() < deadline:
                for tp, records in consumer.poll(timeout_ms=1000).items():
                    assert tp.topic == topic
                    got.extend((r.key.decode(), r.value.decode()) for r in records)
            for _ in range(SETTLE_POLLS):
                for records in consumer.poll(timeout_ms=1000).values():
                    got.extend((r.key.decode(), r.value.decode()) for r in records)
            assert len(got) == N, f"consumed {len(got)} records, expected exactly {N}"
            assert dict(got) == expected

            consumer.commit()
            parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            ends = consumer.end_offsets(parts)
            for tp in parts:
                assert consumer.committed(tp) == ends[tp], f"{tp}: committed {consumer.committed(tp)}, end {ends[tp]}"
            assert sum(ends.values()) == N
        finally:
            consumer.close()

        topics = admin.list_topics()
        assert topic in topics
        check_no_internal_names(topics, "kafka-python list_topics")

        groups = admin.list_groups()
        group_ids = {g["group_id"] for g in groups}
        assert group in group_ids, groups
        check_no_internal_names(group_ids, "kafka-python list_groups")

        offsets = admin.list_group_offsets({group: None})[group]
        assert {tp.topic for tp in offsets} == {topic}, offsets
        assert sum(o.offset for o in offsets.values()) == N

        let_pending_fetches_finish()
        admin.delete_topics([topic])
        wait_until(lambda: topic not in admin.list_topics(), 30, f"{topic} to disappear")

        # Describe the group last, so that a failure here cannot hide any of the checks above.
        desc = admin.describe_groups([group])
        assert group in desc, desc
        assert desc[group]["group_id"] == group, desc
        assert desc[group]["error"] is None, desc
    finally:
        admin.close()


def test_kafka_python_oauthbearer(new_tenant):
    tc = new_tenant()
    flow_kafka_python(tc.conn(), "orders", "g-kafka-python", "kafka-python")


# --------------------------------------------------------------------------------------------
# aiokafka


async def flow_aiokafka(conn: Conn, topic: str, group: str, tag: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**conn.aiokafka(request_timeout_ms=60000))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])

        async def listed():
            return topic in await admin.list_topics()

        await async_wait_until(listed, 60, f"{topic} in list_topics")

        expected = expected_records(tag)
        producer = AIOKafkaProducer(**conn.aiokafka(linger_ms=5))
        await producer.start()
        try:
            futures = [await producer.send(topic, key=k.encode(), value=v.encode()) for k, v in expected.items()]
            metas = await asyncio.wait_for(asyncio.gather(*futures), 60)
        finally:
            await producer.stop()
        assert len(metas) == N
        assert {m.topic for m in metas} == {topic}

        consumer = AIOKafkaConsumer(topic, **conn.aiokafka(
            group_id=group, auto_offset_reset="earliest", enable_auto_commit=False))
        await consumer.start()
        try:
            got = []
            deadline = time.monotonic() + CONSUME_TIMEOUT
            while len(got) < N and time.monotonic() < deadline:
                batches = await consumer.getmany(timeout_ms=1000)
                for tp, records in batches.items():
                    assert tp.topic == topic
                    got.extend((r.key.decode(), r.value.decode()) for r in records)
            for _ in range(SETTLE_POLLS):
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    got.extend((r.key.decode(), r.value.decode()) for r in records)
            assert len(got) == N, f"consumed {len(got)} records, expected exactly {N}"
            assert dict(got) == expected

            await consumer.commit()
            parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            ends = await consumer.end_offsets(parts)
            for tp in parts:
                committed = await consumer.committed(tp)
                assert committed == ends[tp], f"{tp}: committed {committed}, end {ends[tp]}"
            assert sum(ends.values()) == N
        finally:
            await consumer.stop()

        topics = await admin.list_topics()
        assert topic in topics
        check_no_internal_names(topics, "aiokafka list_topics")

        groups = await admin.list_consumer_groups()
        group_ids = {g[0] for g in groups}
        assert group in group_ids, groups
        check_no_internal_names(group_ids, "aiokafka list_consumer_groups")

        # With explicit partitions: aiokafka's all-partitions form (OffsetFetch v3, null topics)
        # cannot decode tansu 0.6.0's answer even without the gateway in between.
        offsets = await admin.list_consumer_group_offsets(group, partitions=parts)
        assert {tp.topic for tp in offsets} == {topic}, offsets
        assert sum(o.offset for o in offsets.values()) == N

        await asyncio.sleep(FETCH_DRAIN_SECONDS)  # see support.FETCH_DRAIN_SECONDS
        await admin.delete_topics([topic])

        async def gone():
            return topic not in await admin.list_topics()

        await async_wait_until(gone, 30, f"{topic} to disappear")

        # Describe the group last, so that a failure here cannot hide any of the checks above.
        described = await admin.describe_consumer_groups([group])
        found = [g for resp in described for g in resp.groups if g[1] == group]
        assert found, described
        assert found[0][0] == 0, f"describe error code {found[0][0]}"
    finally:
        await admin.close()


async def async_wait_until(predicate, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            if await predicate():
                return
        except Exception as e:  # noqa: BLE001 - reported below
            last_exc = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f"; last error: {last_exc!r}" if last_exc else ""))
        await asyncio.sleep(interval)


def test_aiokafka_oauthbearer(new_tenant):
    tc = new_tenant()
    asyncio.run(asyncio.wait_for(flow_aiokafka(tc.conn(), "orders", "g-aiokafka", "aiokafka"), 240))


# --------------------------------------------------------------------------------------------
# kcat (librdkafka 2.0 from Debian), SASL PLAIN


def kcat(conn: Conn, *args: str, stdin: str | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    cmd = ["kcat", *conn.kcat_args(), *args]
    try:
        return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"kcat {' '.join(args)} did not finish within {timeout}s; "
                             f"stdout: {e.stdout!r} stderr: {e.stderr!r}") from None


def flow_kcat(conn: Conn, topic: str, group: str, tag: str) -> None:
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    # kcat cannot create topics: the confluent admin client does, with the same token.
    admin = AdminClient(conn.confluent("PLAIN"))
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
                        operation_timeout=30, request_timeout=60)[topic].result(timeout=60)

    def topic_ready():
        t = admin.list_topics(topic=topic, timeout=10).topics.get(topic)
        return t is not None and t.error is None and len(t.partitions) == PARTITIONS

    wait_until(topic_ready, 60, f"topic {topic} in metadata")

    expected = expected_records(tag)
    lines = "".join(f"{k}\t{v}\n" for k, v in expected.items())
    p = kcat(conn, "-P", "-t", topic, "-K", "\t", "-X", "linger.ms=5", stdin=lines)
    assert p.returncode == 0, f"kcat produce failed ({p.returncode}): {p.stderr}"

    c = kcat(conn, "-G", group, "-X", "auto.offset.reset=earliest", "-c", str(N),
             "-f", "%k\t%s\t%p\t%o\n", "-q", topic)
    assert c.returncode == 0, f"kcat consume failed ({c.returncode}): {c.stderr}"
    got = [line.split("\t") for line in c.stdout.splitlines() if line]
    assert len(got) == N, f"kcat consumed {len(got)} records, expected exactly {N}: {c.stderr}"
    assert {k: v for k, v, _, _ in got} == expected

    # kcat commits on exit (auto commit); the group's offsets must cover every record.
    checker = Consumer(conn.confluent("PLAIN", **{"group.id": group}))
    try:
        parts = checker.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
        total = 0
        for tp in parts:
            assert tp.error is None, tp
            _, high = checker.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=30)
            assert tp.offset == high, f"partition {tp.partition}: committed {tp.offset}, high {high}"
            total += high
        assert total == N
    finally:
        checker.close()

    md = kcat(conn, "-L", "-J")
    assert md.returncode == 0, f"kcat -L failed: {md.stderr}"
    meta = json.loads(md.stdout)
    names = [t["topic"] for t in meta["topics"]]
    assert topic in names
    check_no_internal_names(names, "kcat -L")

    let_pending_fetches_finish()
    admin.delete_topics([topic], operation_timeout=30, request_timeout=60)[topic].result(timeout=60)
    wait_until(lambda: topic not in admin.list_topics(timeout=10).topics, 30, f"{topic} to disappear")


def test_kcat_plain(new_tenant):
    tc = new_tenant()
    flow_kcat(tc.conn(), "orders", "g-kcat", "kcat")
