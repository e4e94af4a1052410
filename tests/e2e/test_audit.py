"""Audit events on a real `tollgate dev` (issue 15; CONTRACT, "Observability"): real clients
and admin requests make every event type, and every event is delivered, valid against
deploy/audit-event.schema.json and free of every secret the test used, to all three sinks at
once: a file (`--audit-log`), a topic on the pool (`--audit-topic`, read back straight from the
tansu broker), and an S3-compatible store (`--audit-s3-url`, moto in server mode on loopback,
read back with boto3 after the gateway stopped, which writes the last object).

The module's actions run once (the `acted` fixture); the tests then look at what was
delivered. The last test stops the gateway: it runs last because pytest keeps a module's
order.

moto 5.2 checks SigV4 only for paths without percent-escapes (it refuses boto3's own PUT of a
`year=` key when its authentication is on), so the store runs without it here; the signature is
checked against botocore's in the unit tests (telemetry/audit/s3/sign.rs).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from jsonschema import Draft202012Validator

from conftest import REPO, _FAILED_IN, free_port, start_dev_stack
from support import (READ_ONLY_ACTIONS, Admin, Conn, RawKafka, TenantCluster, assert_cannot_connect,
                     create_topic, end_process, policy, pool_brokers, produce, unique, wait_until, with_claims)

SCHEMA = json.loads((REPO / "deploy" / "audit-event.schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA)

AUDIT_TOPIC = "tollgate-audit"
BUCKET = "tollgate-audit-e2e"
PREFIX = "events/tollgate"
#: The store's credentials, given to the gateway in its environment: secrets too.
S3_KEY_ID = "AKIDAUDITE2E" + secrets.token_hex(4).upper()
S3_SECRET = "s3-secret-" + secrets.token_urlsafe(24)

#: The pool starts with one broker and the policy wants two: the autoscaler resizes at once.
POLICY = {
    "min_brokers": 2,
    "max_brokers": 2,
    "interval_seconds": 1,
    "mode": "apply",
    "target_per_broker": {"bytes_in_per_second": 10_000_000},
    "tolerance": 0.1,
    "scale_up": {"stabilization_seconds": 0, "max_step": 1},
    "scale_down": {"stabilization_seconds": 600, "max_step": 1, "period_seconds": 60},
}

TYPES = {
    "tollgate.authentication.succeeded",
    "tollgate.authentication.failed",
    "tollgate.authorization.denied",
    "tollgate.admin.changed",
    "tollgate.quota.breached",
    "tollgate.pool.scaled",
}

KEY = re.compile(re.escape(PREFIX) + r"/year=\d{4}/month=\d{2}/day=\d{2}/hour=\d{2}/"
                 r"\d{8}T\d{6}Z-[A-Za-z0-9._-]+-\d{6}\.json\.gz")


@dataclass
class Audited:
    stack: object
    log: Path
    endpoint: str
    s3: object


@pytest.fixture(scope="module")
def store():
    """moto's S3 in server mode on a free loopback port, with the bucket made; its URL."""
    import boto3

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def up():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return True
            except OSError:
                return False

        wait_until(up, 30, "moto's server to accept connections")
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id=S3_KEY_ID, aws_secret_access_key=S3_SECRET)
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client
    finally:
        end_process(proc)


@pytest.fixture(scope="module")
def audited(request, store, tmp_path_factory):
    """A `tollgate dev` delivering to all three sinks, with an autoscaler that resizes."""
    endpoint, client = store
    directory = tmp_path_factory.mktemp("audit")
    log = directory / "audit.jsonl"
    policy_file = directory / "policy.json"
    policy_file.write_text(json.dumps(POLICY))
    args = ("--audit-log", str(log), "--audit-topic", AUDIT_TOPIC,
            "--audit-s3-url", f"s3://{BUCKET}/{PREFIX}", "--audit-s3-endpoint", endpoint,
            "--audit-s3-region", "us-east-1", "--autoscale-policy", str(policy_file))
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID=S3_KEY_ID, AWS_SECRET_ACCESS_KEY=S3_SECRET)
    try:
        s = start_dev_stack(args, label="tollgate dev for test_audit")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    yield Audited(stack=s, log=log, endpoint=endpoint, s3=client)
    problems = s.finish(keep=_FAILED_IN[request.node.nodeid.split("::")[0]] > 0)
    assert not problems, "\n".join(problems) + "\n" + s.logs()


@dataclass
class Acted:
    """What the actions did, and every secret they used."""
    tenant: TenantCluster
    other: TenantCluster
    secrets: list[str] = field(default_factory=list)
    scram_user: str = ""


def new_tenant(stack, admin: Admin, actions=None) -> TenantCluster:
    tenant = unique("t", 12)
    admin.create_tenant(tenant)
    cluster = admin.create_cluster(tenant, unique("c", 8))
    tok = admin.create_token(cluster["id"], "svc", policy(tenant, cluster["name"], actions))
    return TenantCluster(tenant=tenant, cluster=cluster, token=tok["token"],
                         expires_at=tok["expires_at"], bootstrap=stack.bootstrap)


@pytest.fixture(scope="module")
def acted(audited) -> Acted:
    """Every kind of event, made once by real clients and admin requests."""
    stack = audited.stack
    admin = Admin(stack.admin_url, stack.admin_token)
    # pool.scaled first: the autoscaler grows the pool right after the start, and the rest
    # then runs on a settled pool.
    wait_until(lambda: sum(b["state"] == "live" for b in admin._ok("GET", "/v1/pool")["brokers"]) == 2,
               60, "the autoscaler to grow the pool to 2 brokers")
    wait_until(lambda: any(e["type"] == "tollgate.pool.scaled" for e in file_events(audited)),
               30, "the pool.scaled event in the file")
    tc = new_tenant(stack, admin)
    other = new_tenant(stack, admin)
    done = Acted(tenant=tc, other=other,
                 secrets=[stack.admin_token, tc.token, other.token, S3_SECRET])

    # authentication.succeeded, and a topic for what follows.
    create_topic(tc.conn(), "orders")
    assert all(err is None for err, _ in produce(tc.conn(), "orders", {"k": "v"}))

    # authentication.failed: a token whose claims were changed under its signature.
    forged = with_claims(tc.token, sub="mallory")
    done.secrets.append(forged)
    assert_cannot_connect(tc.conn(forged))

    # SCRAM: a user made (admin.changed), a wrong password, then the right one.
    password, wrong = "pw-" + secrets.token_urlsafe(16), "pw-" + secrets.token_urlsafe(16)
    done.secrets += [password, wrong]
    user = unique("u", 8)
    made = admin.create_scram_user(tc.cluster_id, user, password, "SCRAM-SHA-512",
                                   policy(tc.tenant, tc.cluster_name))
    done.scram_user = user
    error, _ = RawKafka.refused(stack.bootstrap, None, scram=("SCRAM-SHA-512", made["sasl_username"], wrong))
    assert error != 0
    RawKafka(stack.bootstrap, None, scram=("SCRAM-SHA-512", made["sasl_username"], password)).close()
    admin.delete_scram_user(tc.cluster_id, user)

    # An access key: its secret is answered once, and must be in no event.
    key = admin._ok("POST", f"/v1/clusters/{tc.cluster_id}/access-keys",
                    {"principal": "signer", "policy": policy(tc.tenant, tc.cluster_name)})
    done.secrets.append(key["secret_access_key"])

    # authorization.denied: a principal that may read but not write produces.
    reader = admin.create_token(tc.cluster_id, "reader", policy(tc.tenant, tc.cluster_name, READ_ONLY_ACTIONS))
    done.secrets.append(reader["token"])
    reports = produce(tc.conn(reader["token"]), "orders", {"k": "refused"}, timeout=20,
                      **{"message.send.max.retries": 0})
    assert [e.code() for e, _ in reports] == [KafkaError.TOPIC_AUTHORIZATION_FAILED], reports
    admin.revoke_token(reader["jti"])

    # quota.breached: the cluster may have 2 partitions and asks for 1 + 3.
    admin._ok("PATCH", f"/v1/clusters/{tc.cluster_id}", {"quotas": {"max_partitions": 2}})
    client = AdminClient(tc.conn().confluent())
    refused = client.create_topics([NewTopic("wide", num_partitions=3, replication_factor=1)],
                                   request_timeout=30)["wide"]
    with pytest.raises(KafkaException) as e:
        refused.result(timeout=30)
    assert e.value.args[0].code() == KafkaError.POLICY_VIOLATION

    # A refused admin request is an event too (no token: no principal).
    status, _ = admin.request("POST", "/v1/tenants", {"id": "nobody", "name": "n"}, auth=False)
    assert status == 401
    return done


def lines_of(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def file_events(audited) -> list[dict]:
    return lines_of(audited.log.read_text()) if audited.log.exists() else []


def check(events: list[dict], raw: str, acted: Acted, where: str) -> None:
    """Every event valid against the schema, and no secret anywhere in what was delivered."""
    for e in events:
        errors = sorted(VALIDATOR.iter_errors(e), key=str)
        assert not errors, f"{where}: {e} is not valid: {[x.message for x in errors]}"
    for secret in acted.secrets:
        assert secret not in raw, f"{where} holds a secret the test used: {secret[:12]}…"


def everything(events: list[dict], acted: Acted) -> bool:
    """Whether `events` include the one of each action the module made."""
    tc = acted.tenant
    mine = [e for e in events if e["cluster"] == tc.cluster_id]

    def has(pred) -> bool:
        return any(pred(e) for e in events)

    return (
        TYPES <= {e["type"] for e in events}
        and any(e["type"] == "tollgate.authorization.denied" and e["action"] == "kafka-cluster:WriteData"
                for e in mine)
        and any(e["type"] == "tollgate.quota.breached" and e["action"] == "max_partitions" for e in mine)
        and has(lambda e: e["type"] == "tollgate.admin.changed" and e["action"] == "POST /v1/tenants"
                and not e["granted"])
        and has(lambda e: e["type"] == "tollgate.pool.scaled" and e["granted"])
    )


def test_every_event_type_is_written_to_the_file(audited, acted):
    events = wait_until(lambda: (lambda ev: ev if everything(ev, acted) else None)(file_events(audited)),
                        90, "every kind of event in the audit file")
    check(events, audited.log.read_text(), acted, "the audit file")
    tc = acted.tenant
    mine = [e for e in events if e["cluster"] == tc.cluster_id]
    by_type = lambda t: [e for e in mine if e["type"] == t]  # noqa: E731

    ok = by_type("tollgate.authentication.succeeded")
    assert any(e["principal"] == "svc" and e["tenant"] == tc.tenant for e in ok), ok
    assert any(e["principal"] == acted.scram_user and e["action"] == "SCRAM-SHA-512" for e in ok), ok
    failed = [e for e in events if e["type"] == "tollgate.authentication.failed"]
    assert any(e["action"] == "SCRAM-SHA-512" and e["cluster"] == tc.cluster_id for e in failed), failed
    assert all(e["client_address"] == "127.0.0.1" for e in ok + failed)

    denied = [e for e in by_type("tollgate.authorization.denied") if e["action"] == "kafka-cluster:WriteData"]
    assert len(denied) == 1, "a refusal the client repeats is one event a minute"
    assert denied[0]["principal"] == "reader"
    assert denied[0]["resource"].endswith(f":topic/{tc.cluster_name}/{tc.cluster_id}/orders")

    admin = [e for e in events if e["type"] == "tollgate.admin.changed"]
    actions = {e["action"] for e in admin if e["granted"]}
    assert {"POST /v1/tenants", "POST /v1/clusters", "POST /v1/tokens", "DELETE /v1/tokens/{jti}",
            "POST /v1/clusters/{id}/scram-users", "DELETE /v1/clusters/{id}/scram-users/{username}",
            "POST /v1/clusters/{id}/access-keys", "PATCH /v1/clusters/{id}"} <= actions, actions
    made = [e for e in admin if e["action"] == "POST /v1/clusters" and e["cluster"] == tc.cluster_id]
    assert made and made[0]["resource"] == f"/v1/clusters/{tc.cluster_id}"
    assert made[0]["principal"] == "admin" and made[0]["tenant"] == tc.tenant
    refused = [e for e in admin if not e["granted"]]
    assert any(e["principal"] is None and e["reason"] == "401 Unauthorized" for e in refused), refused

    quota = [e for e in by_type("tollgate.quota.breached") if e["action"] == "max_partitions"]
    assert quota[0]["granted"] is False and "max_partitions (2)" in quota[0]["reason"]
    scaled = [e for e in events if e["type"] == "tollgate.pool.scaled" and e["granted"]]
    assert scaled[0]["reason"].startswith("1 -> 2 brokers, resized")
    assert scaled[0]["cluster"] is None and scaled[0]["principal"] == "autoscaler"


def read_topic(bootstrap: str, stop) -> tuple[list[dict], list[tuple[bytes | None, bytes]]]:
    """The audit topic's records, read straight from the pool until `stop(events)` holds."""
    consumer = Consumer(Conn(bootstrap, None).confluent(**{
        "group.id": unique("audit-reader-"), "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    records: list[tuple[bytes | None, bytes]] = []
    try:
        consumer.subscribe([AUDIT_TOPIC])
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error():
                records.append((msg.key(), msg.value()))
            elif msg is not None and msg.error().code() not in (KafkaError._PARTITION_EOF,
                                                                 KafkaError.UNKNOWN_TOPIC_OR_PART):
                raise AssertionError(f"reading the audit topic: {msg.error()}")
            if msg is None and stop([json.loads(v) for _, v in records]):
                break
    finally:
        consumer.close()
    return [json.loads(v) for _, v in records], records


def test_the_pool_topic_carries_the_events(audited, acted):
    wait_until(lambda: everything(file_events(audited), acted), 90, "every kind of event in the file")
    written = {e["id"] for e in file_events(audited)}
    pool = pool_brokers(audited.stack.data_dir)
    events, records = read_topic(pool[0], lambda got: written <= {e["id"] for e in got})
    assert written <= {e["id"] for e in events}, "what the file has, the topic has"
    check(events, "\n".join(v.decode() for _, v in records), acted, "the audit topic")
    for (key, _), event in zip(records, events):
        assert key == (event["cluster"].encode() if event["cluster"] else None)
    # The topic is the operator's: outside every tenant's namespace, so no tenant lists it.
    listed = AdminClient(acted.tenant.conn().confluent()).list_topics(timeout=10).topics
    assert AUDIT_TOPIC not in listed and "orders" in listed


def test_a_tenant_reads_its_own_clusters_events(audited, acted):
    stack = audited.stack
    tc, other = acted.tenant, acted.other
    wait_until(lambda: everything(file_events(audited), acted), 90, "every kind of event in the file")

    def read(cluster_id: str, token: str, query: str = "") -> tuple[int, dict]:
        req = urllib.request.Request(f"{stack.admin_url}/v1/clusters/{cluster_id}/audit-events{query}")
        req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, {}

    status, view = read(tc.cluster_id, tc.token)
    assert status == 200, status
    events = view["events"]
    assert events and all(e["cluster"] == tc.cluster_id for e in events)
    kinds = {e["type"] for e in events}
    assert {"tollgate.authentication.succeeded", "tollgate.authorization.denied",
            "tollgate.quota.breached", "tollgate.admin.changed"} <= kinds, kinds
    assert all(e["client_address"] is None for e in events if e["type"] == "tollgate.admin.changed")
    check(events, json.dumps(view), acted, "the tenant's view")
    times = [e["time"] for e in events]
    assert times == sorted(times), "oldest first"
    status, after = read(tc.cluster_id, tc.token, f"?since={events[-2]['id']}")
    assert status == 200 and [e["id"] for e in after["events"]] == [events[-1]["id"]]

    # Another tenant's credential reads its own cluster's events only, never this one's.
    status, _ = read(tc.cluster_id, other.token)
    assert status in (401, 403), status
    status, theirs = read(other.cluster_id, other.token)
    assert status == 200
    assert theirs["events"] and all(e["cluster"] == other.cluster_id for e in theirs["events"])


def test_the_operator_counts_events_and_drops(audited, acted):
    stack = audited.stack
    wait_until(lambda: everything(file_events(audited), acted), 90, "every kind of event in the file")

    def series() -> dict[str, int]:
        req = urllib.request.Request(f"{stack.admin_url}/metrics")
        req.add_header("Authorization", f"Bearer {stack.admin_token}")
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read().decode()
        return {line.rsplit(" ", 1)[0]: int(float(line.rsplit(" ", 1)[1]))
                for line in text.splitlines() if line.startswith("tollgate_audit_")}

    got = series()
    for t in TYPES:
        assert got[f'tollgate_audit_events_total{{type="{t}"}}'] >= 1, got
    for sink in ("log", "topic", "s3"):
        assert got[f'tollgate_audit_events_dropped_total{{sink="{sink}"}}'] == 0, got
    assert got['tollgate_audit_events_delivered_total{sink="log"}'] >= len(TYPES)
    # The tenant's metrics never show the operator's audit counters.
    req = urllib.request.Request(f"{stack.admin_url}/v1/clusters/{acted.tenant.cluster_id}/metrics")
    req.add_header("Authorization", f"Bearer {acted.tenant.token}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert "tollgate_audit_" not in resp.read().decode()


def test_the_store_has_every_event_once_the_gateway_stopped(audited, acted):
    """Last in the module: stops the gateway, which writes the object still pending."""
    wait_until(lambda: everything(file_events(audited), acted), 90, "every kind of event in the file")
    stack = audited.stack
    code, left = stack.stop()
    assert code in (0, 128 + signal.SIGTERM) and not left, (code, left)
    listed = audited.s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX + "/").get("Contents", [])
    assert listed, "no object in the store"
    events, raw = [], []
    for obj in listed:
        assert KEY.fullmatch(obj["Key"]), obj["Key"]
        body = audited.s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
        text = gzip.decompress(body).decode()
        raw.append(text)
        got = lines_of(text)
        hours = {e["time"][:13] for e in got}
        assert len(hours) == 1, f"an object holds one hour: {obj['Key']} has {hours}"
        assert obj["Key"].split("/hour=")[1][:2] == got[0]["time"][11:13]
        events += got
    check(events, "\n".join(raw), acted, "the store")
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids)), "each event once"
    assert set(ids) == {e["id"] for e in file_events(audited)}, "the store has what the file has"
    assert everything(events, acted)
