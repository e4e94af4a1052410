"""Rate quotas (issue 13; CONTRACT "Quotas and limits") against a real `tollgate dev` stack, one
gateway instance: a client pushing well over its cluster's byte-rate quota is held to it
within 10% (the gateway says `throttle_time_ms` and stops reading the client's connection for
that long, as Kafka mutes a throttled channel), while another tenant on the same pool keeps
its own rate. `pytest -s` prints the measured rates.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer

from support import Admin, TenantCluster, create_topic, unique, wait_until

#: The quota under test: low enough that a single librdkafka producer on loopback goes far
#: over it, high enough that batches of `VALUE_BYTES` make a steady stream.
QUOTA = 200_000
VALUE_BYTES = 10_000
#: The first seconds go to the burst allowance (one second of quota) and the client's
#: start-up; the rate is measured after them, over `MEASURE` seconds.
WARM_UP = 3.0
MEASURE = 24.0
#: What the other tenant asks for: above the throttled tenant's quota, well within its own.
OTHER_RATE = 300_000


def set_quotas(admin: Admin, tc: TenantCluster, **quotas) -> dict:
    status, body = admin.request("PATCH", f"/v1/clusters/{tc.cluster_id}", {"quotas": quotas})
    assert status == 200, body
    return body


def quota_use(admin: Admin, tc: TenantCluster) -> dict:
    status, body = admin.request("GET", f"/v1/clusters/{tc.cluster_id}")
    assert status == 200, body
    return body["quota_use"]


class Rate:
    """Bytes delivered in the measurement window [start, start + MEASURE)."""

    def __init__(self, start: float):
        self.start, self.end = start, start + MEASURE
        self.bytes = 0
        self.errors: list = []

    def on_delivery(self, err, msg) -> None:
        now = time.monotonic()
        if err is not None:
            # What is still queued when the window ends is purged: not a failure.
            if now < self.end:
                self.errors.append(err)
        elif self.start <= now < self.end:
            self.bytes += len(msg.value())

    @property
    def per_second(self) -> float:
        return self.bytes / MEASURE


def produce_until(tc: TenantCluster, topic: str, rate: Rate, paced: float | None,
                  partition: int = -1) -> None:
    """Produces `VALUE_BYTES` records until the window ends: as fast as the client may
    (`paced=None`), or at `paced` bytes a second; to `partition`, or as the partitioner says."""
    producer = Producer(tc.conn().confluent(**{
        "acks": "1", "linger.ms": 5, "enable.idempotence": False,
        # A small queue: what waits in it when the quota holds the client is not in flight.
        "queue.buffering.max.kbytes": 1024, "message.timeout.ms": 120_000,
        # Requests of a few records (librdkafka's default is up to 1 MB, five seconds of the
        # quota), so that deliveries arrive as a stream and the window's edges cut little.
        "batch.size": 32 * 1024}))
    value = b"x" * VALUE_BYTES
    begun = time.monotonic()
    sent = 0
    while time.monotonic() < rate.end:
        if paced is not None:
            ahead = sent - (time.monotonic() - begun) * paced
            if ahead > 0:
                producer.poll(ahead / paced)
                continue
        try:
            producer.produce(topic, value=value, partition=partition, on_delivery=rate.on_delivery)
            sent += VALUE_BYTES
        except BufferError:
            producer.poll(0.05)
            continue
        producer.poll(0)
    producer.purge()
    producer.flush(5)


def test_a_producer_over_its_ingress_quota_is_held_to_it_and_another_tenant_keeps_its_rate(
        admin: Admin, new_tenant):
    throttled, other = new_tenant(), new_tenant()
    set_quotas(admin, throttled, ingress_bytes_per_second=QUOTA)
    topic, other_topic = unique("q-"), unique("q-")
    create_topic(throttled.conn(), topic)
    create_topic(other.conn(), other_topic)

    start = time.monotonic() + WARM_UP
    rates = {"throttled": Rate(start), "other": Rate(start)}
    threads = [
        threading.Thread(target=produce_until, args=(throttled, topic, rates["throttled"], None)),
        threading.Thread(target=produce_until, args=(other, other_topic, rates["other"], OTHER_RATE)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    held, kept = rates["throttled"].per_second, rates["other"].per_second
    print(f"\ningress quota {QUOTA} B/s: over-quota producer {held:.0f} B/s ({held / QUOTA:.3f} x quota); "
          f"other tenant asked {OTHER_RATE} B/s, got {kept:.0f} B/s ({kept / OTHER_RATE:.3f})")
    assert not rates["throttled"].errors and not rates["other"].errors, rates
    assert abs(held - QUOTA) <= 0.10 * QUOTA, f"held at {held:.0f} B/s, quota {QUOTA}"
    assert kept >= 0.9 * OTHER_RATE, f"the other tenant got {kept:.0f} of {OTHER_RATE} B/s"
    use = quota_use(admin, throttled)
    print(f"quota_use of the throttled cluster: {use}")
    assert use["throttles"]["ingress"] > 0
    assert quota_use(admin, other)["throttles"]["ingress"] == 0


def test_a_producer_over_its_partition_ingress_quota_is_held_to_it_on_that_partition(
        admin: Admin, new_tenant):
    tc = new_tenant()
    # The cluster's own ingress quota stays far above: only the partition's binds.
    set_quotas(admin, tc, partition_ingress_bytes_per_second=QUOTA)
    topic = unique("q-")
    create_topic(tc.conn(), topic, partitions=2)
    start = time.monotonic() + WARM_UP
    hot, cool = Rate(start), Rate(start)
    threads = [
        threading.Thread(target=produce_until, args=(tc, topic, hot, None, 0)),
        threading.Thread(target=produce_until, args=(tc, topic, cool, QUOTA / 2, 1)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    held, kept = hot.per_second, cool.per_second
    print(f"\npartition ingress quota {QUOTA} B/s: partition 0 pushed over it {held:.0f} B/s "
          f"({held / QUOTA:.3f} x quota); partition 1 asked {QUOTA / 2:.0f} B/s, got {kept:.0f} B/s "
          f"({kept / (QUOTA / 2):.3f}); quota_use {quota_use(admin, tc)}")
    assert not hot.errors and not cool.errors
    assert abs(held - QUOTA) <= 0.10 * QUOTA, f"held at {held:.0f} B/s, quota {QUOTA}"
    assert kept >= 0.9 * QUOTA / 2
    use = quota_use(admin, tc)
    assert use["throttles"]["partition_ingress"] > 0 and use["throttles"]["ingress"] == 0


def fill(tc: TenantCluster, topic: str, records: int, partition: int = -1) -> None:
    """Produces `records` values of VALUE_BYTES to `partition` (or as the partitioner says),
    for consumers to read back; all must be delivered."""
    producer = Producer(tc.conn().confluent(**{"acks": "1", "linger.ms": 20,
                                               "enable.idempotence": False}))
    value = b"y" * VALUE_BYTES
    for _ in range(records):
        while True:
            try:
                producer.produce(topic, value=value, partition=partition)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(60) == 0


@pytest.mark.parametrize("quota", ["egress", "partition_egress"])
def test_a_consumer_over_its_egress_quota_is_held_to_it(admin: Admin, new_tenant, quota: str):
    """The cluster's egress quota, or its one partition's (the other left far above): a
    partition's is charged as the answer goes through (relayed answers are cut through, their
    partitions known only then), so it mutes the connection from then and the next answer
    says so."""
    tc = new_tenant()
    topic = unique("q-")
    create_topic(tc.conn(), topic)
    # More than the window can take at the quota, so the consumer never runs dry.
    fill(tc, topic, int(QUOTA * (WARM_UP + MEASURE) * 1.3) // VALUE_BYTES)
    set_quotas(admin, tc, **{f"{quota}_bytes_per_second": QUOTA})

    consumer = Consumer(tc.conn().confluent(**{
        "group.id": unique("g-"), "auto.offset.reset": "earliest", "enable.auto.commit": False,
        # Small fetches, as a steady consumer makes; the quota, not the batch, sets the pace.
        "fetch.max.bytes": 256 * 1024, "max.partition.fetch.bytes": 256 * 1024,
        "message.max.bytes": 64 * 1024,
        "queued.max.messages.kbytes": 256}))
    consumer.subscribe([topic])
    wait_until(lambda: consumer.poll(1.0) is not None, 30, "the first record")
    rate = Rate(time.monotonic() + WARM_UP)
    while time.monotonic() < rate.end:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None and time.monotonic() >= rate.start:
            rate.bytes += len(msg.value())
    consumer.close()
    got = rate.per_second
    print(f"\n{quota} quota {QUOTA} B/s: consumer {got:.0f} B/s ({got / QUOTA:.3f} x quota); "
          f"quota_use {quota_use(admin, tc)}")
    assert abs(got - QUOTA) <= 0.10 * QUOTA, f"held at {got:.0f} B/s, quota {QUOTA}"
    throttles = quota_use(admin, tc)["throttles"]
    other = {"egress": "partition_egress", "partition_egress": "egress"}[quota]
    assert throttles[quota] > 0 and throttles[other] == 0, throttles


def held_together(what: str, start: float, measure: float, clients) -> dict[str, Rate]:
    """Runs `clients` ({gateway name: function of its Rate}) at once, each measured over
    [start, start + measure); prints each gateway's rate and the sum, and checks that both
    carried the cluster's traffic and together were held to QUOTA within 10%."""
    rates = {n: Rate(start) for n in clients}
    for r in rates.values():
        r.end = start + measure
    threads = [threading.Thread(target=run, args=(rates[n],)) for n, run in clients.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    per_second = {n: r.bytes / measure for n, r in rates.items()}
    together = sum(per_second.values())
    print(f"\n{what}, quota {QUOTA} B/s, over {measure:.0f} s: "
          + ", ".join(f"through {n.upper()} {v:.0f} B/s" for n, v in per_second.items())
          + f", together {together:.0f} B/s ({together / QUOTA:.3f} x quota)")
    assert all(not r.errors for r in rates.values()), {n: r.errors[:3] for n, r in rates.items()}
    assert min(per_second.values()) > 0.25 * QUOTA, per_second
    assert abs(together - QUOTA) <= 0.10 * QUOTA, f"held at {together:.0f} B/s together, quota {QUOTA}"
    return rates


def test_two_gateways_sharing_redis_hold_a_cluster_to_one_quota(stack_factory, redis_server, tmp_path):
    """Two `tollgate serve` on one pool and one Redis (as test_metering's
    test_two_gateways_sharing_redis_add_up starts them), one producer of the same cluster
    through each, both far over its ingress quota: together they are held to the quota (each
    instance leases slices of it from Redis), not to twice it. Each gateway advertises only
    itself, so each producer's requests go through the gateway it bootstrapped from."""
    from dataclasses import replace

    from conftest import make_tenant, serve_pair
    from test_metering import STACK_ARGS, accepts, pool_broker

    measure = 12.0
    pool = stack_factory(label="tollgate dev as the pool for two serve gateways")
    # Each advertises only its own node, so each producer's requests go through its own.
    with serve_pair(pool_broker(pool), redis_server, tmp_path, STACK_ARGS) as (gateways, token):
        a, b = gateways
        admin_a = Admin(a.admin_url, token)
        tc = make_tenant(a, admin_a)
        set_quotas(admin_a, tc, ingress_bytes_per_second=QUOTA)
        topic = unique("q-")
        create_topic(tc.conn(), topic, partitions=2)
        through_b = replace(tc, bootstrap=b.bootstrap)
        # The cluster, its quota and the topic reach B through Redis about once a second.
        wait_until(lambda: accepts(through_b.conn(), topic), 15, "gateway B to show the topic")

        held_together("ingress shared by two gateways", time.monotonic() + WARM_UP, measure, {
            "a": lambda rate: produce_until(tc, topic, rate, None),
            "b": lambda rate: produce_until(through_b, topic, rate, None)})
        # Both instances carried traffic of the cluster and held it.
        print(f"quota_use on A {quota_use(admin_a, tc)}")
        assert quota_use(admin_a, tc)["throttles"]["ingress"] > 0


def redis_command(url: str, *args: str) -> bytes:
    """One command to the Redis at `url` (RESP, no client library); its raw answer."""
    import socket
    from urllib.parse import urlparse

    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=5) as c:
        c.sendall(f"*{len(args)}\r\n".encode() + b"".join(
            f"${len(a)}\r\n{a}\r\n".encode() for a in args))
        return c.recv(256)


def test_two_gateways_hold_one_egress_quota_and_their_shares_while_redis_is_away(
        stack_factory, redis_server, tmp_path):
    """Two `tollgate serve` on one pool and one Redis, a consumer of the same cluster through
    each (one partition each), both far over its egress quota: together they are held to the
    quota. Then Redis stops answering (CLIENT PAUSE: every command waits, as on a Redis that
    hangs) while two producers push far over the cluster's ingress quota: each instance holds
    its share (the quota over the two instances it last saw spending it), so together they are
    still held to the quota, and each says so in its log."""
    from dataclasses import replace

    from conftest import make_tenant, serve_pair
    from test_metering import STACK_ARGS, accepts, pool_broker

    measure = 10.0
    pool = stack_factory(label="tollgate dev as the pool for two serve gateways")
    with serve_pair(pool_broker(pool), redis_server, tmp_path, STACK_ARGS) as (gateways, token):
        a, b = gateways
        admin_a = Admin(a.admin_url, token)
        tc = make_tenant(a, admin_a)
        topic = unique("q-")
        create_topic(tc.conn(), topic, partitions=2)
        through_b = replace(tc, bootstrap=b.bootstrap)
        wait_until(lambda: accepts(through_b.conn(), topic), 15, "gateway B to show the topic")

        # Egress: enough records on each partition that neither consumer runs dry at the quota.
        per_partition = int(QUOTA * (WARM_UP + measure) * 1.3) // VALUE_BYTES
        for p in (0, 1):
            fill(tc, topic, per_partition, p)
        set_quotas(admin_a, tc, egress_bytes_per_second=QUOTA)

        def consume(t: TenantCluster, partition: int, rate: Rate) -> None:
            from confluent_kafka import TopicPartition
            # Answers of at most 64 kB: a third of a second of each instance's share, as a
            # production answer (50 MB at most) is of a production quota (400 MB/s).
            consumer = Consumer(t.conn().confluent(**{
                "group.id": unique("g-"), "enable.auto.commit": False,
                "fetch.max.bytes": 64 * 1024, "max.partition.fetch.bytes": 64 * 1024,
                "message.max.bytes": 64 * 1024, "queued.max.messages.kbytes": 128}))
            consumer.assign([TopicPartition(topic, partition, 0)])
            while time.monotonic() < rate.end:
                msg = consumer.poll(0.2)
                if msg is not None and msg.error() is None and time.monotonic() >= rate.start:
                    rate.bytes += len(msg.value())
            consumer.close()

        held_together("egress shared by two gateways", time.monotonic() + WARM_UP, measure, {
            "a": lambda rate: consume(tc, 0, rate),
            "b": lambda rate: consume(through_b, 1, rate)})

        # Ingress with Redis away: both instances were seen spending, so each holds half.
        set_quotas(admin_a, tc, egress_bytes_per_second=None, ingress_bytes_per_second=QUOTA)
        # Both spend through Redis for WARM_UP seconds (so each has seen the other), then
        # Redis stops answering; the window starts once both have noticed (1 s timeout).
        pause_after, noticed = WARM_UP, 2.0
        pause_s = pause_after + noticed + measure + 4
        start = time.monotonic() + pause_after + noticed

        paused: list[bytes] = []

        def pause_redis() -> None:
            time.sleep(pause_after)
            paused.append(redis_command(redis_server, "CLIENT", "PAUSE", str(int(pause_s * 1000)), "ALL"))

        pauser = threading.Thread(target=pause_redis)
        pauser.start()
        held_together("ingress with Redis paused", start, measure, {
            "a": lambda rate: produce_until(tc, topic, rate, None, 0),
            "b": lambda rate: produce_until(through_b, topic, rate, None, 1)})
        pauser.join()
        assert paused == [b"+OK\r\n"], paused
        for g in gateways:
            assert "Redis unreachable: each instance holds rate quotas to its share" in g.logs(400), g.label
        # Redis answers again (the pause ends), and the instances share through it again.
        wait_until(lambda: all("Redis answers again" in g.logs(400) for g in gateways), pause_s + 10,
                   "both gateways to share quotas through Redis again")
