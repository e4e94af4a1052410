"""Metering and billing through real clients (CONTRACT.md, "Usage" and "Billing"):

- bytes in and out are the record batches as on the wire, to the byte;
- cluster-seconds and partition-seconds follow the test's own clock;
- bytes are attributed to the principal whose token moved them;
- a graceful stop loses nothing, a kill -9 at most the last flush interval;
- two gateways sharing Redis add up;
- the billing report's shape, rounding and quantities against /v1/usage, exactly.

Exact byte counts rely on a producer that puts every record in its own batch, uncompressed
(`EXACT_PRODUCER`), so the batch size of each record follows from the v2 batch format
(`batch_size`).
"""

from __future__ import annotations

import calendar
import csv
import io
import re
import signal
import threading
import time
import uuid
from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from conftest import Stack, gateway_binary, make_tenant, serve_pair
from support import (Admin, Conn, RawKafka, TenantCluster, batch_records, create_topic, let_pending_fetches_finish,
                     split_batches, unique, wait_until)

# The gateway flushes counted usage this often (`--flush-interval-ms`, default 1000); the
# module's stack is started with it explicitly so the tolerances below are tied to it.
FLUSH_INTERVAL = 1.0
STACK_ARGS = ("--flush-interval-ms", str(int(FLUSH_INTERVAL * 1000)))
# The gateway re-reads the pool's partition counts at least this often (metering.rs
# RECONCILE_EVERY), and at once after a tenant creates or deletes topics.
RECONCILE_EVERY = 10.0

# Every record its own batch, uncompressed, no producer id: sizes follow `batch_size` exactly.
EXACT_PRODUCER = {
    "acks": "all",
    "linger.ms": 0,
    "batch.num.messages": 1,
    "compression.type": "none",
    "enable.idempotence": False,
}

GB = 2 ** 30
DEFAULT_RATES = {
    "cluster_hours": Decimal("0.75"),
    "partition_hours": Decimal("0.0015"),
    "storage_gb_months": Decimal("0.10"),
    "data_in_gb": Decimal("0.10"),
    "data_out_gb": Decimal("0.05"),
}
DIMENSIONS = list(DEFAULT_RATES)
CSV_HEADER = "cluster,cluster_name,dimension,quantity,unit,rate,amount"


# --------------------------------------------------------------------------------------------
# The record batch format (v2, KIP-98), for a batch holding one record


def zigzag_varint_len(n: int) -> int:
    """Bytes of a zigzag varint (Kafka's varint/varlong in records)."""
    z = (n << 1) ^ (n >> 63)
    length = 1
    while z >= 0x80:
        z >>= 7
        length += 1
    return length


# baseOffset 8, batchLength 4, partitionLeaderEpoch 4, magic 1, crc 4, attributes 2,
# lastOffsetDelta 4, baseTimestamp 8, maxTimestamp 8, producerId 8, producerEpoch 2,
# baseSequence 4, records count 4.
BATCH_HEADER = 8 + 4 + 4 + 1 + 4 + 2 + 4 + 8 + 8 + 8 + 2 + 4 + 4
assert BATCH_HEADER == 61


def batch_size(key: bytes | None, value: bytes | None) -> int:
    """Size on the wire of a v2 record batch holding exactly this one record, no headers."""
    body = 1  # record attributes (int8)
    body += zigzag_varint_len(0)  # timestampDelta: the only record is the batch's first
    body += zigzag_varint_len(0)  # offsetDelta
    for field in (key, value):
        if field is None:
            body += zigzag_varint_len(-1)
        else:
            body += zigzag_varint_len(len(field)) + len(field)
    body += zigzag_varint_len(0)  # headers count
    return BATCH_HEADER + zigzag_varint_len(body) + body


# --------------------------------------------------------------------------------------------
# Usage and time helpers


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(int(t), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def hour_of(t: float) -> int:
    return int(t) // 3600 * 3600


def usage_period(tc: TenantCluster) -> tuple[str, str]:
    """From the hour the cluster was created to an hour from now: every row it can have."""
    created = parse_rfc3339(tc.cluster["created_at"])
    return rfc3339(hour_of(created)), rfc3339(hour_of(time.time()) + 7200)


def get_usage(admin: Admin, tc: TenantCluster) -> dict:
    frm, to = usage_period(tc)
    status, body = admin.request("GET", f"/v1/usage?cluster={tc.cluster_id}&from={frm}&to={to}")
    assert status == 200, (status, body)
    assert body["cluster"] == tc.cluster_id, body
    for row in body["hours"]:
        assert set(row) == {"hour", "cluster_seconds", "partition_seconds", "bytes_in", "bytes_out",
                            "storage_byte_seconds"}, row
        assert all(isinstance(row[k], int) and row[k] >= 0 for k in row if k != "hour"), row
        assert parse_rfc3339(row["hour"]) % 3600 == 0, row
    hours = [r["hour"] for r in body["hours"]]
    assert hours == sorted(set(hours)), f"hours not unique and ascending: {hours}"
    return body


def totals(body: dict) -> dict[str, int]:
    keys = ("cluster_seconds", "partition_seconds", "bytes_in", "bytes_out", "storage_byte_seconds")
    return {k: sum(r[k] for r in body["hours"]) for k in keys}


def get_principals(admin: Admin, tc: TenantCluster) -> dict[str, dict[str, int]]:
    frm, to = usage_period(tc)
    status, body = admin.request("GET", f"/v1/usage/principals?cluster={tc.cluster_id}&from={frm}&to={to}")
    assert status == 200, (status, body)
    assert body["cluster"] == tc.cluster_id, body
    out: dict[str, dict[str, int]] = {}
    for row in body["principals"]:
        assert set(row) == {"principal", "hour", "bytes_in", "bytes_out"}, row
        p = out.setdefault(row["principal"], {"bytes_in": 0, "bytes_out": 0})
        p["bytes_in"] += row["bytes_in"]
        p["bytes_out"] += row["bytes_out"]
    return out


def settled_usage(admin: Admin, tc: TenantCluster, key: str, at_least: int, timeout: float = 20) -> int:
    """Waits until usage[key] reaches `at_least`, then two more flush intervals so that anything
    still on its way lands too; returns the settled total."""
    try:
        wait_until(lambda: totals(get_usage(admin, tc))[key] >= at_least, timeout,
                   f"{key} to reach {at_least}")
    except AssertionError:
        pass  # the caller's exact assertion reports the value
    time.sleep(2 * FLUSH_INTERVAL + 0.5)
    return totals(get_usage(admin, tc))[key]


# --------------------------------------------------------------------------------------------
# Clients


def produce_exact(conn: Conn, topic: str, records: list[tuple[bytes | None, bytes | None, int]],
                  timeout: float = 60) -> int:
    """Produces (key, value, partition) records, one batch each, acks=all; all must be
    acknowledged. Returns the bytes of their batches."""
    producer = Producer(conn.confluent(**EXACT_PRODUCER, **{"message.timeout.ms": int(timeout * 1000)}))
    reports: list = []
    for key, value, partition in records:
        producer.produce(topic, key=key, value=value, partition=partition,
                         on_delivery=lambda err, msg: reports.append(err))
        producer.poll(0)
    left = producer.flush(timeout + 10)
    assert left == 0, f"{left} records neither delivered nor failed"
    failed = [e for e in reports if e is not None]
    assert not failed and len(reports) == len(records), f"delivery failures: {failed[:5]}; client errors {conn.errors}"
    return sum(batch_size(k, v) for k, v, _ in records)


def consume_all(conn: Conn, topic: str, partitions: int, expect: int, timeout: float = 60) -> list:
    """Reads every partition once from offset 0 without a group subscription (so nothing is
    fetched twice by a rebalance) until `expect` records arrived."""
    consumer = Consumer(conn.confluent(**{"group.id": unique("g-meter-"), "enable.auto.commit": False,
                                          "enable.partition.eof": False}))
    got = []
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        deadline = time.monotonic() + timeout
        while len(got) < expect and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert not msg.error(), f"consume error: {msg.error()}"
            got.append((msg.key(), msg.value(), msg.partition(), msg.offset()))
        # Let any fetch already on its way complete, so that what is delivered is settled.
        for _ in range(2):
            msg = consumer.poll(1.0)
            assert msg is None or msg.error(), f"a record beyond the {expect} produced: {msg.key()!r}"
    finally:
        consumer.close()
    assert len(got) == expect, f"consumed {len(got)} of {expect} records; client errors {conn.errors}"
    return got


def varied_records(tag: str, partitions: int) -> list[tuple[bytes | None, bytes | None, int]]:
    """Keys and values whose lengths cross the varint size steps (63/64, 8191/8192 bytes) and
    include null and empty fields."""
    out = []
    sizes = [0, 1, 10, 62, 63, 64, 65, 200, 1000, 8185, 8192, 10000, 70000]
    for i, n in enumerate(sizes):
        key = f"{tag}-{i:03d}".encode()
        value = bytes((i + j) % 251 for j in range(n))
        out.append((key, value, i % partitions))
    out.append((None, b"value with a null key", 0))
    out.append((b"key-with-null-value", None, partitions - 1))
    out.append((b"", b"", 0))
    return out


# --------------------------------------------------------------------------------------------
# Bytes


def test_batch_size_formula():
    """The formula against batches worked out by hand from the v2 format."""
    # key "k" (1 byte), value "v" (1 byte): body = attr 1 + ts 1 + off 1 + klen 1 + 1 + vlen 1
    # + 1 + headers 1 = 8; length varint 1; 61 + 1 + 8 = 70 (Kafka's DefaultRecordBatch
    # sizeInBytes for one such record is 70 as well).
    assert batch_size(b"k", b"v") == 70
    # Null key: keyLength -1 is one byte; no key bytes.
    assert batch_size(None, b"v") == 69
    # A 64-byte value needs a two-byte length (zigzag 128), and the body (73 bytes) a
    # two-byte record length too.
    assert batch_size(b"k", b"x" * 64) == 61 + 2 + (1 + 1 + 1 + 1 + 1 + 2 + 64 + 1)


def test_bytes_in_and_out_are_the_record_batches(new_tenant, admin):
    tc = new_tenant()
    conn = tc.conn()
    partitions = 2
    create_topic(conn, "metered", partitions=partitions)
    records = varied_records("bytes", partitions)
    expected = produce_exact(conn, "metered", records)

    bytes_in = settled_usage(admin, tc, "bytes_in", expected)
    assert bytes_in == expected, (
        f"bytes_in {bytes_in}, expected {expected}: the sum of the {len(records)} single-record "
        f"batches ({[batch_size(k, v) for k, v, _ in records]})")

    # Read everything back with one Fetch per partition, through the gateway, and count the
    # complete batches those responses carried. The pool decides how records come back in
    # batches: tansu's SQLite engine (the dev pool) stores records one by one and answers a
    # Fetch with a single batch of everything from the fetch offset on, so bytes_out equals
    # bytes_in only on a pool that returns batches as produced (tansu's memory engine, Kafka).
    # What the contract meters is the batches delivered, so that is what is checked.
    delivered = 0
    with RawKafka(tc.bootstrap, tc.token) as raw:
        for p in range(partitions):
            error, high, data = raw.fetch("metered", p, 0)
            assert error == 0, f"Fetch of partition {p}: error {error}"
            batches = split_batches(data)
            assert sum(len(b) for b in batches) == len(data), f"partition {p}: a partial batch in one Fetch"
            got = [(k, v) for b in batches for _, k, v in batch_records(b)]
            assert got == [(k, v) for k, v, part in records if part == p], f"partition {p} read back differs"
            assert high == len(got), (high, len(got))
            delivered += len(data)
    bytes_out = settled_usage(admin, tc, "bytes_out", delivered)
    assert bytes_out == delivered, f"bytes_out {bytes_out}, the Fetch responses carried {delivered} bytes of batches"

    # A regular client reading everything counts too, and nothing else changed.
    consumed = consume_all(conn, "metered", partitions, len(records))
    assert sorted(((k, v) for k, v, _, _ in consumed), key=repr) == sorted(((k, v) for k, v, _ in records), key=repr)
    wait_until(lambda: totals(get_usage(admin, tc))["bytes_out"] > delivered, 20, "the consumer's bytes to be counted")
    assert totals(get_usage(admin, tc))["bytes_in"] == expected


def test_bytes_are_attributed_to_principals(new_tenant, mint_token, admin):
    tc = new_tenant()
    create_topic(tc.conn(), "shared", partitions=1)
    alice, bob = unique("alice-", 6), unique("bob-", 6)
    alice_conn = tc.conn(mint_token(tc, principal=alice))
    bob_conn = tc.conn(mint_token(tc, principal=bob))

    alice_records = [(f"a{i}".encode(), b"A" * (10 * i), 0) for i in range(20)]
    bob_records = [(f"b{i}".encode(), b"B" * (300 + i), 0) for i in range(7)]
    alice_in = produce_exact(alice_conn, "shared", alice_records)
    bob_in = produce_exact(bob_conn, "shared", bob_records)
    settled_usage(admin, tc, "bytes_in", alice_in + bob_in)
    # Alice reads everything; Bob reads nothing.
    consume_all(alice_conn, "shared", 1, len(alice_records) + len(bob_records))
    # (How many bytes of batches that is depends on how the pool batches its answers; see
    # test_bytes_in_and_out_are_the_record_batches.)
    wait_until(lambda: totals(get_usage(admin, tc))["bytes_out"] > 0, 20, "bytes_out to be counted")
    time.sleep(2 * FLUSH_INTERVAL + 0.5)

    usage = totals(get_usage(admin, tc))
    by_principal = get_principals(admin, tc)
    assert by_principal.get(alice) == {"bytes_in": alice_in, "bytes_out": usage["bytes_out"]}, by_principal
    assert by_principal.get(bob, {"bytes_in": 0, "bytes_out": 0}) == {"bytes_in": bob_in, "bytes_out": 0}, by_principal
    # The token that created the topic moved no record bytes.
    assert by_principal.get("e2e-svc", {"bytes_in": 0, "bytes_out": 0}) == {"bytes_in": 0, "bytes_out": 0}, by_principal
    assert sum(p["bytes_in"] for p in by_principal.values()) == usage["bytes_in"] == alice_in + bob_in
    assert sum(p["bytes_out"] for p in by_principal.values()) == usage["bytes_out"]


# --------------------------------------------------------------------------------------------
# Stopping mid-traffic


class Traffic(threading.Thread):
    """Produces single-record batches with acks=all until stopped, keeping the bytes enqueued,
    acknowledged and failed (by the batch size formula), and when each ack arrived."""

    VALUE = bytes(range(256)) * 2

    def __init__(self, conn: Conn, topic: str, partitions: int):
        super().__init__(daemon=True)
        self.conn, self.topic, self.partitions = conn, topic, partitions
        self.lock = threading.Lock()
        self.enqueued = self.acked = self.failed = 0
        self.acked_records = 0
        self.ack_log: list[tuple[float, int]] = [(time.monotonic(), 0)]
        self.errors: list = []
        self._halt = threading.Event()
        self.left_after_flush: int | None = None

    def snapshot(self) -> tuple[int, int, int]:
        with self.lock:
            return self.enqueued, self.acked, self.failed

    def acked_by(self, t: float) -> int:
        """Bytes whose acknowledgement had been handled at monotonic time `t`."""
        with self.lock:
            return max((b for when, b in self.ack_log if when <= t), default=0)

    def wait_acked(self, more_than: int, timeout: float, what: str) -> None:
        wait_until(lambda: self.snapshot()[1] > more_than, timeout, what)

    def _delivered(self, err, msg) -> None:
        size = batch_size(msg.key(), msg.value())
        with self.lock:
            if err is None:
                self.acked += size
                self.acked_records += 1
                self.ack_log.append((time.monotonic(), self.acked))
            else:
                self.failed += size
                self.errors.append(err)

    def run(self) -> None:
        producer = Producer(self.conn.confluent(**EXACT_PRODUCER, **{
            "message.timeout.ms": 180_000,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 500,
        }))
        i = 0
        while not self._halt.is_set():
            key = f"r{i:09d}".encode()
            with self.lock:
                outstanding = self.enqueued - self.acked - self.failed
            if outstanding > 200 * batch_size(key, self.VALUE):
                producer.poll(0.05)
                continue
            try:
                producer.produce(self.topic, key=key, value=self.VALUE, partition=i % self.partitions,
                                 on_delivery=self._delivered)
            except BufferError:
                producer.poll(0.1)
                continue
            with self.lock:
                self.enqueued += batch_size(key, self.VALUE)
            i += 1
            producer.poll(0.002)
        self.left_after_flush = producer.flush(200)

    def finish(self) -> None:
        self._halt.set()
        self.join(240)
        assert not self.is_alive(), "the producer did not finish flushing"
        assert self.left_after_flush == 0, f"{self.left_after_flush} records never delivered"


def metered_stack(stack_factory) -> tuple[Stack, Admin, TenantCluster]:
    s = stack_factory(STACK_ARGS)
    admin = Admin(s.admin_url, s.admin_token)
    tc = make_tenant(s, admin)
    create_topic(tc.conn(), "traffic", partitions=2)
    return s, admin, tc


def test_a_batch_acknowledged_again_after_a_lost_answer_is_metered_once(stack_factory):
    """An idempotent producer whose Produce answer is lost (the connection cut after the pool
    acknowledged the batch to the gateway) sends the batch again on a new connection, and
    bytes_in is exactly the batches acknowledged, each counted once. tansu answers the repeat
    DUPLICATE_SEQUENCE_NUMBER (librdkafka takes it as delivered), which is not metered; Apache
    Kafka answers it with success, which the gateway's table of acknowledged sequences catches
    (the unit test a_batch_the_pool_acknowledges_again_is_metered_once, in api/produce)."""
    from answer_dropper import AnswerDropper
    from conftest import LANES, free_port_run

    proxy_port = free_port_run(LANES)
    s = stack_factory(STACK_ARGS + ("--advertise", f"127.0.0.1:{proxy_port}"))
    dropper = AnswerDropper(proxy_port, s.kafka_port, LANES).start()
    try:
        admin = Admin(s.admin_url, s.admin_token)
        tc = make_tenant(s, admin)
        create_topic(tc.conn(), "retried", partitions=1)
        conn = Conn(f"127.0.0.1:{proxy_port}", tc.token)
        producer = Producer(conn.confluent(**{
            **EXACT_PRODUCER, "enable.idempotence": True, "message.timeout.ms": 60000}))
        reports: list = []
        records = [(f"key-{i:04d}".encode(), bytes([i % 251]) * (100 + i)) for i in range(60)]
        for i, (key, value) in enumerate(records):
            if i in (20, 40):
                # Once what came before is acknowledged, so the lost answer is a later one's.
                assert producer.flush(30) == 0
                dropper.arm()
            producer.produce("retried", key=key, value=value, partition=0,
                             on_delivery=lambda err, msg: reports.append(err))
            producer.poll(0)
            time.sleep(0.02)
        assert producer.flush(70) == 0
        failed = [e for e in reports if e is not None]
        assert not failed and len(reports) == len(records), f"failures {failed[:5]}; {conn.errors}"
        assert dropper.dropped == 2, f"{dropper.dropped} answers lost"
        # Every record once in the log: the pool took the repeats as the duplicates they are.
        got = consume_all(tc.conn(), "retried", 1, len(records))
        assert [(k, v) for k, v, _, _ in got] == records
        expected = sum(batch_size(k, v) for k, v in records)
        bytes_in = settled_usage(admin, tc, "bytes_in", expected)
        assert bytes_in == expected, f"bytes_in {bytes_in}, the {len(records)} batches hold {expected}"
    finally:
        dropper.close()


def test_sigterm_mid_traffic_loses_nothing(stack_factory):
    s, admin, tc = metered_stack(stack_factory)
    traffic = Traffic(tc.conn(), "traffic", 2)
    traffic.start()
    try:
        traffic.wait_acked(50_000, 60, "50 kB acknowledged before the stop")
        _, acked_at_stop, _ = traffic.snapshot()
        code, left = s.stop()
        enqueued_at_exit, _, _ = traffic.snapshot()
        assert code in (0, 128 + signal.SIGTERM), f"exit code {code} on SIGTERM\n{s.logs()}"
        assert not left, f"left running: {left}"
        s.start().wait_ready()
        after_restart = traffic.snapshot()[1]
        traffic.wait_acked(after_restart + 50_000, 60, "50 kB more acknowledged after the restart")
    finally:
        traffic.finish()
    enqueued, acked, failed = traffic.snapshot()
    assert failed == 0, f"deliveries failed: {traffic.errors[:5]}"
    # A record acknowledged is a batch the pool accepted and the gateway counted, and a
    # graceful stop flushes: nothing acknowledged may be missing. A record may be counted
    # without being acknowledged (the pool took it, the answer was lost in the stop), and then
    # again when the client retries it: at most the bytes that were not yet acknowledged at
    # the SIGTERM, of the records enqueued by the time the old process had exited.
    in_flight = enqueued_at_exit - acked_at_stop
    bytes_in = settled_usage(admin, tc, "bytes_in", acked)
    print(f"bytes_in {bytes_in}, acknowledged {acked} ({traffic.acked_records} records), "
          f"{acked_at_stop} at the stop, in flight {in_flight}")
    assert acked <= bytes_in <= acked + in_flight, (
        f"bytes_in {bytes_in}; acknowledged {acked} ({traffic.acked_records} records), "
        f"in flight at the stop at most {in_flight}")


def test_kill_9_loses_at_most_the_last_flush(stack_factory):
    s, admin, tc = metered_stack(stack_factory)
    traffic = Traffic(tc.conn(), "traffic", 2)
    traffic.start()
    try:
        traffic.wait_acked(50_000, 60, "50 kB acknowledged before the kill")
        time.sleep(5)  # so that most was acknowledged more than 2 s before the kill
        t_kill = time.monotonic()
        enqueued_at_kill, _, _ = traffic.snapshot()
        s.kill()
        acked_at_kill = traffic.acked_by(t_kill)
        safe_before_kill = traffic.acked_by(t_kill - 2 * FLUSH_INTERVAL)
        s.start().wait_ready()
        t_ready = time.monotonic()
        acked_at_ready = traffic.acked_by(t_ready)
        traffic.wait_acked(acked_at_ready + 50_000, 60, "50 kB more acknowledged after the restart")
    finally:
        traffic.finish()
    enqueued, acked, failed = traffic.snapshot()
    assert failed == 0, f"deliveries failed: {traffic.errors[:5]}"
    assert safe_before_kill > 0
    # Acknowledged two flush intervals before the kill: counted and flushed. Acknowledged after
    # the restart was ready: counted by the new process, flushed at its graceful stop.
    lower = safe_before_kill + (acked - acked_at_ready)
    # Counted twice at most: records the dead process counted and flushed but whose answer
    # never arrived, retried by the client.
    upper = acked + (enqueued_at_kill - acked_at_kill)
    s_stop_code, left = s.stop()
    assert s_stop_code in (0, 128 + signal.SIGTERM) and not left, (s_stop_code, left)
    # Read the usage from a fresh start: the store in the data dir survived the kill.
    s.start().wait_ready()
    bytes_in = settled_usage(admin, tc, "bytes_in", lower)
    print(f"bytes_in {bytes_in} in [{lower}, {upper}]: acknowledged {acked}, {safe_before_kill} 2 s before "
          f"the kill, {acked_at_kill} by the kill, {acked - acked_at_ready} after the restart")
    assert lower <= bytes_in <= upper, (
        f"bytes_in {bytes_in} not in [{lower}, {upper}]: acknowledged {acked} in all, "
        f"{safe_before_kill} of it 2 s before the kill, {acked_at_kill} by the kill, "
        f"{acked - acked_at_ready} after the restart")


# --------------------------------------------------------------------------------------------
# Several gateways sharing Redis


def pool_broker(dev: Stack) -> str:
    """The address of the (single) tansu broker a `tollgate dev` started: its log is named
    broker-<port>.log under the data dir."""
    logs = list(dev.data_dir.rglob("broker-*.log"))
    assert len(logs) == 1, logs
    port = re.fullmatch(r"broker-(\d+)\.log", logs[0].name).group(1)
    return f"127.0.0.1:{port}"


def accepts(conn: Conn, topic: str | None = None) -> bool:
    """Whether a client with this connection's token gets metadata (and `topic` in it)."""
    client = AdminClient(conn.confluent())
    md = client.list_topics(timeout=5)
    return topic is None or (topic in md.topics and md.topics[topic].error is None)


def test_two_gateways_sharing_redis_add_up(stack_factory, redis_server, tmp_path):
    """Two `tollgate serve` with their own data dirs and one Redis, signing key and pool, both
    presenting the same two gateway nodes (`--advertise A,B`). The admin API is A's (the instance whose data dir holds the admin store); B learns A's clusters
    through Redis and serves their Kafka clients. Produce through both adds up exactly in A's
    usage; each second of the cluster's life is accrued once."""
    pool = stack_factory(label="tollgate dev as the pool for two serve gateways")
    # Both present the same gateway nodes, so a client may bootstrap from either.
    with serve_pair(pool_broker(pool), redis_server, tmp_path, STACK_ARGS, advertise_both=True) as (gateways, token):
        a, b = gateways
        admin_a = Admin(a.admin_url, token)
        tc = make_tenant(a, admin_a)
        conn_b = Conn(b.bootstrap, tc.token)
        # Clusters reach the other instances through Redis about once a second.
        wait_until(lambda: accepts(conn_b), 15, "gateway B to accept a token minted through A")
        create_topic(tc.conn(), "both", partitions=2)
        wait_until(lambda: accepts(conn_b, "both"), 15, "gateway B to show the topic created through A")
        for conn in (tc.conn(), conn_b):
            md = AdminClient(conn.confluent()).list_topics(timeout=10)
            seen = sorted((n.id, f"{n.host}:{n.port}") for n in md.brokers.values())
            # Each address's lanes, on its Kafka port + lane.
            expected = list(enumerate(a.nodes + b.nodes, start=1))
            assert seen == expected, f"brokers through {conn.bootstrap}: {seen}"

        batches = {"a": [(f"a{i}".encode(), b"x" * (50 + i), i % 2) for i in range(300)],
                   "b": [(f"b{i}".encode(), b"y" * (900 + i), i % 2) for i in range(200)]}
        sent: dict[str, int] = {}
        errors: list = []

        def run(name: str, conn: Conn) -> None:
            try:
                sent[name] = produce_exact(conn, "both", batches[name])
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=run, args=("a", tc.conn())),
                   threading.Thread(target=run, args=("b", conn_b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        expected = sent["a"] + sent["b"]
        bytes_in = settled_usage(admin_a, tc, "bytes_in", expected)
        assert bytes_in == expected, (f"bytes_in {bytes_in} in A's usage; produced {sent['a']} through A and "
                                      f"{sent['b']} through B")

        # Fetched through B: counted by B, reported by A.
        delivered = 0
        with RawKafka(b.bootstrap, tc.token) as raw:
            for p in range(2):
                error, _, data = raw.fetch("both", p, 0)
                assert error == 0, f"Fetch through B, partition {p}: error {error}"
                assert sum(len(x) for x in split_batches(data)) == len(data)
                delivered += len(data)
        assert delivered > 0
        bytes_out = settled_usage(admin_a, tc, "bytes_out", delivered)
        assert bytes_out == delivered, f"bytes_out {bytes_out}, B's Fetch responses carried {delivered}"

        body = get_usage(admin_a, tc)
        cs = totals(body)["cluster_seconds"]
        age = int(time.time()) - parse_rfc3339(tc.cluster["created_at"])
        assert cs <= age + len(body["hours"]), f"cluster_seconds {cs} for a cluster {age} s old: accrued twice?"


# --------------------------------------------------------------------------------------------
# Billing


def ulp_at_28_digits(x: Fraction) -> Fraction:
    """The spacing of rust_decimal values near `x`: at most 28 decimal places, and a 96-bit
    mantissa, so the scale shrinks as the integer part grows."""
    scale = 28
    while scale > 0 and abs(x) * 10 ** scale >= 2 ** 96:
        scale -= 1
    return Fraction(1, 10 ** scale)


def assert_decimal_string(s, what: str) -> Decimal:
    assert isinstance(s, str) and re.fullmatch(r"-?\d+(\.\d+)?", s), f"{what}: not a decimal string: {s!r}"
    return Decimal(s)


def assert_close(got: Decimal, exact: Fraction, ulps: Fraction, what: str) -> None:
    err = abs(Fraction(got) - exact)
    tolerance = ulps * ulp_at_28_digits(exact)
    assert err <= tolerance, (f"{what}: {got} differs from the exact {float(exact)!r} "
                              f"({exact}) by {float(err):.3g}, more than {float(tolerance):.3g}")


def hours_in_month(hour: int) -> int:
    t = datetime.fromtimestamp(hour, timezone.utc)
    return calendar.monthrange(t.year, t.month)[1] * 24


def exact_quantities(rows: list[dict]) -> dict[str, Fraction]:
    """CONTRACT.md's quantities from /v1/usage rows, as exact rationals."""
    return {
        "cluster_hours": Fraction(sum(r["cluster_seconds"] for r in rows), 3600),
        "partition_hours": Fraction(sum(r["partition_seconds"] for r in rows), 3600),
        "storage_gb_months": sum((Fraction(r["storage_byte_seconds"],
                                           GB * 3600 * hours_in_month(int(parse_rfc3339(r["hour"]))))
                                  for r in rows), Fraction(0)),
        "data_in_gb": Fraction(sum(r["bytes_in"] for r in rows), GB),
        "data_out_gb": Fraction(sum(r["bytes_out"] for r in rows), GB),
    }


def get_report(admin: Admin, tenant: str, frm: str, to: str, fmt: str | None = None):
    path = f"/v1/billing/report?tenant={tenant}&from={frm}&to={to}" + (f"&format={fmt}" if fmt else "")
    return admin.request("GET", path)


def test_billing_report_matches_usage_exactly(new_tenant, admin):
    tc = new_tenant()
    second = admin.create_cluster(tc.tenant, unique("c", 8))
    create_topic(tc.conn(), "billed", partitions=2)
    produced = produce_exact(tc.conn(), "billed", varied_records("bill", 2))
    consume_all(tc.conn(), "billed", 2, len(varied_records("bill", 2)))
    wait_until(lambda: totals(get_usage(admin, tc))["bytes_out"] > 0, 20, "bytes_out to be counted")
    # Deleting the clusters stops their metering, so usage and report see the same numbers.
    let_pending_fetches_finish()
    admin.delete_cluster(tc.cluster_id)
    admin.delete_cluster(second["id"])
    time.sleep(3 * FLUSH_INTERVAL)

    created = parse_rfc3339(tc.cluster["created_at"])
    frm, to = rfc3339(hour_of(created)), rfc3339(hour_of(time.time()) + 3600)
    status, report = get_report(admin, tc.tenant, frm, to)
    assert status == 200, (status, report)
    # The period includes the current hour, which is not closed.
    assert report.get("provisional") is True, report
    assert report["tenant"] == tc.tenant and report["currency"] == "USD", report
    assert parse_rfc3339(report["from"]) == parse_rfc3339(frm) and parse_rfc3339(report["to"]) == parse_rfc3339(to)
    assert set(report) <= {"tenant", "from", "to", "currency", "lines", "total_exact", "total", "provisional"}, report

    usage = {}
    for c in (tc.cluster, second):
        status, body = admin.request("GET", f"/v1/usage?cluster={c['id']}&from={frm}&to={to}")
        assert status == 200, (status, body)
        usage[c["id"]] = body["hours"]
    assert totals({"hours": usage[tc.cluster_id]})["bytes_in"] == produced

    amounts = []
    by_cluster: dict[str, list[dict]] = {}
    for line in report["lines"]:
        assert set(line) == {"cluster", "cluster_name", "dimension", "quantity", "unit", "rate", "amount"}, line
        by_cluster.setdefault(line["cluster"], []).append(line)
    names = {tc.cluster_id: tc.cluster_name, second["id"]: second["name"]}
    assert set(by_cluster) <= set(names), f"lines for clusters not the tenant's: {set(by_cluster) - set(names)}"
    assert tc.cluster_id in by_cluster, report
    for cluster_id, lines in by_cluster.items():
        assert [l["dimension"] for l in lines] == DIMENSIONS, f"one line per dimension: {lines}"
        exact = exact_quantities(usage[cluster_id])
        for line in lines:
            dim = line["dimension"]
            what = f"cluster {cluster_id} {dim}"
            assert line["cluster_name"] == names[cluster_id], line
            quantity = assert_decimal_string(line["quantity"], what + " quantity")
            rate = assert_decimal_string(line["rate"], what + " rate")
            amount = assert_decimal_string(line["amount"], what + " amount")
            assert rate == DEFAULT_RATES[dim], line
            # Quantity: once rounded to rust_decimal's 28 digits (half an ulp); amount:
            # quantity x rate from the exact quantity, rounded once or twice (one ulp).
            assert_close(quantity, exact[dim], Fraction(1, 2), what + " quantity")
            assert_close(amount, exact[dim] * Fraction(rate), Fraction(1), what + " amount")
            amounts.append(amount)
        assert lines[0]["unit"] == "hour", lines[0]
        assert all(isinstance(l["unit"], str) and l["unit"] for l in lines), lines
    first = {l["dimension"]: Decimal(l["quantity"]) for l in by_cluster[tc.cluster_id]}
    assert first["cluster_hours"] > 0 and first["data_in_gb"] > 0 and first["data_out_gb"] > 0, first

    total_exact = assert_decimal_string(report["total_exact"], "total_exact")
    total = assert_decimal_string(report["total"], "total")
    with localcontext() as ctx:
        ctx.prec = 100
        assert total_exact == sum(amounts, Decimal(0)), (report["total_exact"], amounts)
    assert re.fullmatch(r"-?\d+\.\d\d", report["total"]), f"total is not in cents: {report['total']!r}"
    assert total == total_exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN), (report["total"], report["total_exact"])

    # CSV: the same lines.
    status, text = get_report(admin, tc.tenant, frm, to, "csv")
    assert status == 200, (status, text)
    assert isinstance(text, str), text
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == CSV_HEADER.split(","), rows[0]
    expected_rows = [[l[k] for k in CSV_HEADER.split(",")] for l in report["lines"]]
    assert rows[1:] == expected_rows, f"CSV lines differ from JSON lines:\n{rows[1:]}\n{expected_rows}"


def test_billing_report_periods_and_errors(new_tenant, admin):
    tc = new_tenant()
    # A closed period before the tenant existed: nothing owed, not provisional.
    status, report = get_report(admin, tc.tenant, "2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z")
    assert status == 200, (status, report)
    assert not report.get("provisional", False), report
    assert report["lines"] == [], report
    assert Decimal(report["total"]) == 0 and Decimal(report["total_exact"]) == 0, report
    assert re.fullmatch(r"\d+\.\d\d", report["total"]), report["total"]

    status, text = get_report(admin, tc.tenant, "2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z", "csv")
    assert status == 200 and text.strip().splitlines() == [CSV_HEADER], (status, text)

    now = time.time()
    frm, to = rfc3339(hour_of(now)), rfc3339(hour_of(now) + 3600)
    status, body = get_report(admin, unique("nobody-", 8), frm, to)
    assert status == 404 and isinstance(body.get("error"), dict), (status, body)
    for query in (f"from={frm}&to={to}", f"tenant={tc.tenant}&to={to}", f"tenant={tc.tenant}&from={frm}",
                  f"tenant={tc.tenant}&from=yesterday&to={to}", f"tenant={tc.tenant}&from={to}&to={frm}"):
        status, body = admin.request("GET", f"/v1/billing/report?{query}")
        assert status == 400 and isinstance(body, dict) and isinstance(body.get("error"), dict), (query, status, body)
    # Usage: the same for its parameters, and 404 for an unknown cluster.
    status, body = admin.request("GET", f"/v1/usage?cluster={tc.cluster_id}&from={frm}")
    assert status == 400, (status, body)
    status, body = admin.request("GET", f"/v1/usage?cluster=00000000-0000-0000-0000-000000000000&from={frm}&to={to}")
    assert status == 404, (status, body)
    # Without the admin token: refused.
    status, body = admin.request("GET", f"/v1/billing/report?tenant={tc.tenant}&from={frm}&to={to}", auth=False)
    assert status == 401, (status, body)


# --------------------------------------------------------------------------------------------
# Time-based dimensions


@pytest.fixture(scope="module", autouse=True)
def aged_cluster(stack, admin):
    """A cluster made when the module starts, with a 3-partition topic, so that by the time
    the seconds test (the module's last) runs it has lived long enough for the tolerances to be
    small in comparison, without the module waiting for it."""
    tc = make_tenant(stack, admin)
    t0 = time.time()
    create_topic(tc.conn(), "aged", partitions=3)
    t1 = time.time()
    return tc, 3, t0, t1


def test_cluster_and_partition_seconds_follow_the_clock(aged_cluster, admin):
    tc, partitions, topic_t0, topic_t1 = aged_cluster
    # created_at is whole seconds (the gateway's clock, truncated); the cluster existed from
    # some instant in [created, created + 1).
    created = parse_rfc3339(tc.cluster["created_at"])
    assert created == int(created), tc.cluster["created_at"]
    min_age = 30.0
    time.sleep(max(0.0, topic_t1 + min_age - time.time()))

    def check() -> bool:
        before = time.time()
        body = get_usage(admin, tc)
        after = time.time()
        u = totals(body)
        cs, ps = u["cluster_seconds"], u["partition_seconds"]
        # Each hour's row is whole seconds: up to 1 s per row may be lost or gained by rounding.
        rounding = len(body["hours"])
        # The usage is accrued up to the last flush: at most the whole seconds since creation by
        # the time the answer came back...
        assert cs <= int(after) - created + rounding, \
            f"cluster_seconds {cs} > {int(after) - created} s since creation (+{rounding} s rounding)"
        # ... and at least those up to one flush interval (plus one second of truncation at
        # each end) before the request. Retried below: a flush may be late on a busy machine.
        if cs < int(before) - created - FLUSH_INTERVAL - 1 - rounding:
            return False
        # The rows of each hour hold at most that hour's seconds.
        for row in body["hours"]:
            assert row["cluster_seconds"] <= 3600, row
        # Partition-seconds: `partitions` from the topic's creation to the same flush, i.e.
        # partitions x (cs - (topic creation - cluster creation)). Tolerance:
        # - fewer by up to partitions x (RECONCILE_EVERY + one flush interval + 1 s): the
        #   gateway learns the new count from the pool at the latest at its next periodic
        #   reconciliation, and accrues it from the next flush on;
        # - more by up to partitions x (one flush interval + 1 s): the flush interval in which
        #   the topic appeared is accrued whole at the new count.
        lo = partitions * (cs - (topic_t1 - created) - RECONCILE_EVERY - FLUSH_INTERVAL - 1)
        hi = partitions * (cs - (topic_t0 - created) + FLUSH_INTERVAL + 1)
        assert lo <= ps <= hi, (f"partition_seconds {ps} not in [{lo:.1f}, {hi:.1f}] for {partitions} "
                                f"partitions, topic created {topic_t0 - created:.1f}-{topic_t1 - created:.1f} s "
                                f"after the cluster, cluster_seconds {cs}")
        return True

    wait_until(check, 10, "cluster_seconds to be within a flush interval of the test's clock", interval=0.5)
