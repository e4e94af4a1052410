"""Amazon MSK IAM compatibility (issue 14; CONTRACT "Security") against a real `tollgate dev`
stack, with access keys made through the admin API and Amazon's own client libraries:

- OAUTHBEARER tokens from `aws-msk-iam-sasl-signer-python` (PyPI), with confluent-kafka (the
  `oauth_cb` its README shows) and kafka-python;
- kafkajs (npm) with the `AWS_MSK_IAM` mechanism of
  `@jm18457/kafkajs-msk-iam-authentication-mechanism` (npm), tests/e2e/node/msk_iam.js;
- tampered, expired, future-dated and wrong-secret signatures refused, a deleted key's live
  connection closed within 5 s.
"""

from __future__ import annotations

import base64
import datetime
import json
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from unittest import mock

import pytest

from support import RawKafka, policy, unique
from test_clients import flow_confluent, flow_kafka_python

NODE_DIR = Path(__file__).parent / "node"
SASL_AUTHENTICATION_FAILED = 58
MISMATCH = "the signature does not match: wrong secret or tampered request"


def access_key(admin, tc, actions: list[str] | None = None, principal: str = "iam-svc") -> dict:
    key = admin._ok("POST", f"/v1/clusters/{tc.cluster_id}/access-keys",
                    {"principal": principal, "policy": policy(tc.tenant, tc.cluster_name, actions)})
    assert key["access_key_id"].startswith("TGK") and len(key["secret_access_key"]) == 40, key
    return key


class _Fixed:
    """A botocore credential provider for one key, as an application would write one."""

    def __new__(cls, key_id: str, secret: str):
        from botocore.credentials import CredentialProvider, Credentials

        class Fixed(CredentialProvider):
            METHOD = "tollgate-e2e"

            def load(self):
                return Credentials(key_id, secret)

        return Fixed()


def signer_token(key: dict, *, at: datetime.datetime | None = None, secret: str | None = None) -> str:
    """An OAUTHBEARER token from Amazon's Python signer; `at` signs it at another time."""
    from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

    provider = _Fixed(key["access_key_id"], secret or key["secret_access_key"])
    if at is None:
        token, _ = MSKAuthTokenProvider.generate_auth_token_from_credentials_provider(key["region"], provider)
        return token
    with mock.patch("botocore.auth.get_current_datetime", return_value=at):
        token, _ = MSKAuthTokenProvider.generate_auth_token_from_credentials_provider(key["region"], provider)
    return token


def test_signer_tokens_with_confluent_kafka(admin, new_tenant):
    tc = new_tenant()
    key = access_key(admin, tc)
    flow_confluent(replace(tc.conn(), token=signer_token(key)), "orders", "g-iam", "confluent-iam")


def test_signer_oauth_cb_as_amazon_documents_it(admin, new_tenant):
    """The configuration of the signer's README: the callback signs afresh whenever librdkafka
    asks, and the client produces and reads back what it wrote."""
    from aws_msk_iam_sasl_signer import MSKAuthTokenProvider
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    tc = new_tenant()
    key = access_key(admin, tc)
    calls = []

    def oauth_cb(_config):
        token, expiry_ms = MSKAuthTokenProvider.generate_auth_token_from_credentials_provider(
            key["region"], _Fixed(key["access_key_id"], key["secret_access_key"]))
        calls.append(expiry_ms)
        return token, expiry_ms / 1000

    conf = {"bootstrap.servers": tc.bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanisms": "OAUTHBEARER", "oauth_cb": oauth_cb}
    topic = unique("iam-")
    kafka_admin = AdminClient(conf)
    kafka_admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(60)
    producer = Producer(conf)
    for i in range(10):
        producer.produce(topic, key=f"k{i}", value=f"v{i}")
    assert producer.flush(60) == 0
    consumer = Consumer({**conf, "group.id": unique("g-"), "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got = set()
    deadline = time.monotonic() + 60
    while len(got) < 10 and time.monotonic() < deadline:
        msg = consumer.poll(1)
        if msg is not None and not msg.error():
            got.add((msg.key().decode(), msg.value().decode()))
    consumer.close()
    assert got == {(f"k{i}", f"v{i}") for i in range(10)}
    assert calls, "the signer was never asked for a token"


def test_signer_tokens_with_kafka_python(admin, new_tenant):
    tc = new_tenant()
    key = access_key(admin, tc)
    flow_kafka_python(replace(tc.conn(), token=signer_token(key)), "orders", "g-iam-kp", "kafka-python-iam")


def node(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    assert shutil.which("node"), "node is not installed (scripts/install-deps.sh installs it)"
    assert (NODE_DIR / "node_modules" / "kafkajs").exists(), \
        "tests/e2e/node has no node_modules (scripts/install-deps.sh runs npm ci there)"
    return subprocess.run(["node", str(NODE_DIR / "msk_iam.js"), *args], capture_output=True,
                          text=True, timeout=timeout)


def test_kafkajs_with_the_aws_msk_iam_mechanism(admin, new_tenant):
    tc = new_tenant()
    key = access_key(admin, tc)
    topic = unique("kjs-")
    done = node("flow", tc.bootstrap, key["region"], key["access_key_id"], key["secret_access_key"], topic, "20")
    assert done.returncode == 0, done.stderr
    consumed = json.loads(done.stdout.strip().splitlines()[-1])["consumed"]
    assert consumed == sorted([f"k{i}", f"v{i}"] for i in range(20))
    # A wrong secret: the same library is refused.
    refused = node("connect", tc.bootstrap, key["region"], key["access_key_id"], "x" * 40)
    assert refused.returncode == 1 and MISMATCH in refused.stderr, refused.stderr


def tampered(token: str) -> str:
    """The token with its X-Amz-Date moved by a second: still well formed, no longer signed."""
    url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    i = url.index("X-Amz-Date=") + len("X-Amz-Date=") + 14  # the seconds' last digit
    url = url[:i] + str((int(url[i]) + 1) % 10) + url[i + 1:]
    return base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


def test_bad_signatures_are_refused(admin, new_tenant):
    tc = new_tenant()
    key = access_key(admin, tc)
    now = datetime.datetime.now(datetime.timezone.utc)
    good = signer_token(key)
    assert RawKafka.refused(tc.bootstrap, None, oauth=good) == (0, "")
    cases = {
        "tampered": (tampered(good), MISMATCH),
        "wrong secret": (signer_token(key, secret="x" * 40), MISMATCH),
        "unknown key": (signer_token({**key, "access_key_id": "TGK" + "A" * 17}), MISMATCH),
        "expired": (signer_token(key, at=now - datetime.timedelta(minutes=16)), "expired"),
        "future-dated": (signer_token(key, at=now + datetime.timedelta(minutes=10)), "after the server's clock"),
        "other region": (signer_token({**key, "region": "eu-west-1"}), "region"),
    }
    for what, (token, says) in cases.items():
        error, message = RawKafka.refused(tc.bootstrap, None, oauth=token)
        assert error == SASL_AUTHENTICATION_FAILED and says in message, (what, message)


def test_a_deleted_key_s_connection_closes(admin, new_tenant):
    tc = new_tenant()
    doomed, kept = access_key(admin, tc), access_key(admin, tc, principal="other")
    listed = admin._ok("GET", f"/v1/clusters/{tc.cluster_id}/access-keys")["access_keys"]
    assert {k["access_key_id"] for k in listed} == {doomed["access_key_id"], kept["access_key_id"]}
    assert "secret_access_key" not in json.dumps(listed)
    with RawKafka(tc.bootstrap, None, oauth=signer_token(doomed)) as a, \
            RawKafka(tc.bootstrap, None, oauth=signer_token(kept)) as b:
        admin._ok("DELETE", f"/v1/clusters/{tc.cluster_id}/access-keys/{doomed['access_key_id']}")
        deleted = time.monotonic()
        assert a.closed_within(6), "the deleted key's connection stayed open"
        assert time.monotonic() - deleted <= 5
        assert not b.closed_within(0.5)
    assert RawKafka.refused(tc.bootstrap, None, oauth=signer_token(doomed)) == \
        (SASL_AUTHENTICATION_FAILED, MISMATCH)


def test_a_key_without_connect_is_refused(admin, new_tenant):
    tc = new_tenant()
    key = access_key(admin, tc, actions=["kafka-cluster:DescribeCluster"])
    error, message = RawKafka.refused(tc.bootstrap, None, oauth=signer_token(key))
    assert error == SASL_AUTHENTICATION_FAILED and "kafka-cluster:Connect" in message, message
