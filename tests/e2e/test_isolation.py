"""Tenants on one pool: each sees only its own topics and groups, by its own names; another
tenant's data is unreachable even by its physical name; policies and token validity are
enforced at the connection and per request.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from support import (
    READ_ONLY_ACTIONS,
    Conn,
    TenantCluster,
    assert_cannot_connect,
    consume,
    create_topic,
    hs256_jwt,
    jwt_parts,
    produce,
    wait_until,
    with_claims,
)

TOPIC = "orders"
GROUP = "g1"
N = 50


def records(tag: str, n: int = N) -> dict[str, str]:
    return {f"k{i:03d}": f"{tag}-{i}" for i in range(n)}


def two_tenants_with_orders(new_tenant) -> tuple[TenantCluster, TenantCluster, dict, dict]:
    a, b = new_tenant(), new_tenant()
    data_a, data_b = records(f"A-{a.tenant}"), records(f"B-{b.tenant}")
    for tc, data in ((a, data_a), (b, data_b)):
        create_topic(tc.conn(), TOPIC, partitions=2)
        failed = [r for r in produce(tc.conn(), TOPIC, data) if r[0] is not None]
        assert not failed, failed[:5]
    return a, b, data_a, data_b


def visible_topics(conn: Conn) -> set[str]:
    admin = AdminClient(conn.confluent())
    return set(admin.list_topics(timeout=30).topics)


def visible_groups(conn: Conn) -> set[str]:
    admin = AdminClient(conn.confluent())
    result = admin.list_consumer_groups(request_timeout=30).result(timeout=60)
    assert not result.errors, result.errors
    return {g.group_id for g in result.valid}


def foreign_marks(tc: TenantCluster) -> list[str]:
    """Strings that would betray a tenant's cluster in someone else's view."""
    return [tc.physical_prefix, uuid.UUID(tc.cluster_id).hex, tc.cluster_id]


def test_each_tenant_sees_and_consumes_only_its_own(new_tenant, stack):
    a, b, data_a, data_b = two_tenants_with_orders(new_tenant)

    got_a = consume(a.conn(), TOPIC, GROUP, N)
    got_b = consume(b.conn(), TOPIC, GROUP, N)
    assert len(got_a) == N and dict(got_a) == data_a, f"tenant A consumed {len(got_a)} records: {got_a[:3]}..."
    assert len(got_b) == N and dict(got_b) == data_b, f"tenant B consumed {len(got_b)} records: {got_b[:3]}..."

    for me, other in ((a, b), (b, a)):
        topics = visible_topics(me.conn())
        assert topics == {TOPIC}, f"tenant {me.tenant} sees topics {topics}"
        groups = visible_groups(me.conn())
        assert groups == {GROUP}, f"tenant {me.tenant} sees groups {groups}"
        for name in topics | groups:
            assert not name.startswith("tg-"), name
            for mark in foreign_marks(other):
                assert mark not in name, f"{me.tenant} sees {name}, which names {other.tenant}'s cluster"

    # The brokers a tenant is shown are the gateway, nothing of the pool.
    md = AdminClient(a.conn().confluent()).list_topics(timeout=30)
    shown = {f"{br.host}:{br.port}" for br in md.brokers.values()}
    assert shown == set(stack.nodes), f"metadata shows brokers {shown}, expected only the gateway's {stack.nodes}"


def test_physical_name_of_another_tenants_topic_is_unreachable(new_tenant):
    a, b, _, data_b = two_tenants_with_orders(new_tenant)
    physical = b.physical_prefix + TOPIC  # tg-<b's cluster uuid, 32 hex>-orders

    a_conn = a.conn()
    consumer = Consumer(a_conn.confluent(**{"group.id": "g-probe", "enable.auto.commit": False,
                                            "allow.auto.create.topics": False}))
    try:
        md = consumer.list_topics(topic=physical, timeout=30)
        t = md.topics.get(physical)
        assert t is not None and t.error is not None and t.error.code() in (
            KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.TOPIC_AUTHORIZATION_FAILED), \
            f"tenant A asked for {physical} and got {t and (t.error, list(t.partitions))}"

        # Fetching it directly yields nothing of B's.
        consumer.assign([TopicPartition(physical, p, 0) for p in range(2)])
        leaked = []
        for _ in range(5):
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error():
                leaked.append((msg.key(), msg.value()))
        assert not leaked, f"tenant A read {len(leaked)} records through {physical}: {leaked[:3]}"
    finally:
        consumer.close()

    # And B's data is exactly as B wrote it.
    got_b = consume(b.conn(), TOPIC, "g-check", N)
    assert len(got_b) == N and dict(got_b) == data_b


def test_token_without_write_data_cannot_produce_but_can_read(new_tenant, mint_token):
    owner = new_tenant()
    data = records("owner")
    create_topic(owner.conn(), TOPIC)
    assert not [r for r in produce(owner.conn(), TOPIC, data) if r[0] is not None]

    reader = owner.conn(mint_token(owner, READ_ONLY_ACTIONS))
    reports = produce(reader, TOPIC, {"denied": "must not be written"}, timeout=30)
    assert len(reports) == 1
    err = reports[0][0]
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, \
        f"produce without WriteData: expected TOPIC_AUTHORIZATION_FAILED, got {err}"

    # No CreateTopic, no DeleteTopic either.
    admin = AdminClient(reader.confluent())
    fut = admin.create_topics([NewTopic("not-allowed", 1, 1)], request_timeout=30)["not-allowed"]
    try:
        fut.result(timeout=60)
        raise AssertionError("a token without CreateTopic created a topic")
    except KafkaException as e:
        assert e.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, e
    fut = admin.delete_topics([TOPIC], request_timeout=30)[TOPIC]
    try:
        fut.result(timeout=60)
        raise AssertionError("a token without DeleteTopic deleted a topic")
    except KafkaException as e:
        assert e.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, e

    # Reading is allowed, and shows the owner's records and nothing else.
    got = consume(reader, TOPIC, "g-reader", N)
    assert len(got) == N and dict(got) == data


def test_expired_token_cannot_connect(new_tenant, mint_token):
    tc = new_tenant()
    short = mint_token(tc, ttl_seconds=1)
    time.sleep(3)
    # librdkafka is told the token is still good, so it does present it.
    assert_cannot_connect(tc.conn(short), "OAUTHBEARER")
    assert_cannot_connect(tc.conn(short), "PLAIN")


def test_forged_and_tampered_tokens_cannot_connect(new_tenant):
    victim, attacker = new_tenant(), new_tenant()
    header, claims, _ = jwt_parts(victim.token)
    assert header.get("alg") == "HS256", header

    forged = hs256_jwt(header, claims, b"not the gateway's key, same claims shape.")
    tampered = with_claims(attacker.token, tenant=victim.tenant, cluster=victim.cluster_id)
    unsigned = hs256_jwt({"alg": "none", "typ": "JWT"}, claims, b"").rsplit(".", 1)[0] + "."
    # (An empty token is covered by test_bad_input: librdkafka will not even send one.)
    for bad in (forged, tampered, unsigned, "not-a-jwt"):
        for mechanism in ("OAUTHBEARER", "PLAIN"):
            assert_cannot_connect(victim.conn(bad), mechanism)

    # The real token still works.
    real = victim.conn()
    AdminClient(real.confluent()).list_topics(timeout=30)
    assert not real.errors, real.errors


def test_token_for_deleted_cluster_cannot_connect(new_tenant, admin):
    tc = new_tenant()
    conn = tc.conn()
    live = Consumer(conn.confluent(**{"group.id": "g-live"}))
    try:
        live.list_topics(timeout=30)  # connected and authenticated
        admin.delete_cluster(tc.cluster_id)
        # New connections are refused.
        assert_cannot_connect(tc.conn(), "OAUTHBEARER")
        assert_cannot_connect(tc.conn(), "PLAIN")

        # The connection made before the deletion stops being served.
        def refused():
            try:
                live.list_topics(timeout=5)
                return False
            except KafkaException:
                return True

        wait_until(refused, 60, "the pre-existing connection to stop being served")
    finally:
        live.close()


def test_deleting_a_topic_leaves_other_tenants_alone(new_tenant):
    a, b, _, data_b = two_tenants_with_orders(new_tenant)
    admin_a = AdminClient(a.conn().confluent())
    admin_a.delete_topics([TOPIC], operation_timeout=30, request_timeout=60)[TOPIC].result(timeout=60)
    wait_until(lambda: TOPIC not in admin_a.list_topics(timeout=10).topics, 30, "A's topic to disappear")

    assert visible_topics(b.conn()) == {TOPIC}, "B's topic disappeared when A deleted its own"
    got_b = consume(b.conn(), TOPIC, "g-after", N)
    assert len(got_b) == N and dict(got_b) == data_b, f"B consumed {len(got_b)} of its {N} records"


def test_deleting_a_cluster_leaves_other_tenants_alone(new_tenant, admin):
    a, b, _, data_b = two_tenants_with_orders(new_tenant)
    admin.delete_cluster(a.cluster_id)

    assert visible_topics(b.conn()) == {TOPIC}, "B's topic disappeared when A's cluster was deleted"
    got_b = consume(b.conn(), TOPIC, "g-after", N)
    assert len(got_b) == N and dict(got_b) == data_b, f"B consumed {len(got_b)} of its {N} records"
