"""Stored bytes (issue 13; CONTRACT "Usage" and "Quotas and limits") against a real `tollgate dev`
stack: the gateway measures what each cluster stores from the pool's log sizes (DescribeLogDirs,
which the patched tansu answers), exact to the byte, so retention and deletion are billed as
they happen; `storage_limit_bytes` refuses Produce once a cluster stores that much, with the
code Kafka uses for a policy refusal, and a deletion lets produce continue.

tansu keeps each record's key, value and headers (it re-encodes batches), so a partition's
size there is the sum of those lengths; Apache Kafka reports its segment files' bytes.
"""

from __future__ import annotations

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from support import Admin, TenantCluster, create_topic, wait_until

POLICY_VIOLATION = 44


def cluster_json(admin: Admin, tc: TenantCluster) -> dict:
    status, body = admin.request("GET", f"/v1/clusters/{tc.cluster_id}")
    assert status == 200, body
    return body


def stored(admin: Admin, tc: TenantCluster) -> tuple[int, str]:
    use = cluster_json(admin, tc)["quota_use"]
    return use["stored_bytes"], use["stored_bytes_source"]


def produce(tc: TenantCluster, topic: str, records: list[tuple[bytes, bytes, list]]) -> list:
    """Produces `records` (key, value, headers); returns each delivery's error or None."""
    errors: list = []
    producer = Producer(tc.conn().confluent(**{"linger.ms": 5, "message.timeout.ms": 30000}))
    for key, value, headers in records:
        producer.produce(topic, key=key, value=value, headers=headers,
                         on_delivery=lambda err, _msg: errors.append(err))
    assert producer.flush(40) == 0, "records neither delivered nor failed"
    return errors


def test_stored_bytes_are_measured_exactly_and_the_storage_limit_holds_until_a_deletion(
        stack, admin, new_tenant):
    tc, other = new_tenant(), new_tenant()
    create_topic(tc.conn(), "logs", partitions=2)
    create_topic(tc.conn(), "keep", partitions=1)
    # 60 records of a 10-byte key and a 1,000-byte value over two partitions; 10 with a
    # 5-byte key, a 100-byte value and one header of 1 + 2 bytes.
    logs = [(b"k%09d" % i, bytes([i % 251]) * 1000, []) for i in range(60)]
    keep = [(b"k%04d" % i, b"v" * 100, [("h", b"vv")]) for i in range(10)]
    assert produce(tc, "logs", logs) == [None] * 60
    assert produce(tc, "keep", keep) == [None] * 10
    logs_bytes, keep_bytes = 60 * 1010, 10 * (105 + 3)
    wait_until(lambda: stored(admin, tc) == (logs_bytes + keep_bytes, "measured"), 30,
               "the stored bytes measured")
    # Another tenant's storage is its own.
    create_topic(other.conn(), "keep", partitions=1)
    assert produce(other, "keep", keep[:1]) == [None]
    wait_until(lambda: stored(admin, other) == (108, "measured"), 30, "the other tenant's bytes")
    assert stored(admin, tc)[0] == logs_bytes + keep_bytes
    from test_metering import get_usage
    assert get_usage(admin, tc)["storage_estimated"] is False

    # At the limit, Produce is refused whole with POLICY_VIOLATION, never dropped silently.
    status, body = admin.request("PATCH", f"/v1/clusters/{tc.cluster_id}",
                                 {"quotas": {"storage_limit_bytes": logs_bytes}})
    assert status == 200, body
    errors = produce(tc, "keep", keep[:3])
    assert len(errors) == 3 and all(e is not None and e.code() == POLICY_VIOLATION for e in errors), \
        errors
    assert cluster_json(admin, tc)["quota_use"]["refused"]["storage"] >= 1
    # The other tenant is not touched.
    assert produce(other, "keep", keep[:1]) == [None]

    # Deleting the big topic frees its bytes at once, and produce goes on.
    client = AdminClient(tc.conn().confluent())
    client.delete_topics(["logs"], operation_timeout=30)["logs"].result(timeout=30)
    wait_until(lambda: stored(admin, tc) == (keep_bytes, "measured"), 20,
               "the deleted topic's bytes freed")
    assert produce(tc, "keep", keep[:3]) == [None] * 3
    wait_until(lambda: stored(admin, tc)[0] == keep_bytes + 3 * 108, 20, "the new records measured")
