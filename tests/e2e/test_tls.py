"""TLS on the Kafka listener (issue 14; CONTRACT "Security": `--tls-cert FILE --tls-key FILE`,
PEM, reloaded on change) against a real `tollgate dev` stack: every client stack of the suite
(confluent-kafka, kafka-python, aiokafka, kcat) runs its whole flow over SASL_SSL, verifying the
gateway's certificate against a CA the test makes with `openssl`, as do SCRAM users and MSK IAM
signer tokens; a plaintext client gets no
answer; and a certificate replaced on disk is served to new connections within seconds while
a client connected before keeps producing.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import Producer

from conftest import make_tenant, start_dev_stack
from support import Admin, create_topic, wait_until
from test_clients import flow_aiokafka, flow_confluent, flow_kafka_python, flow_kcat


def openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path) -> Path:
    openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=tollgate e2e CA")
    return d / "ca.pem"


def make_server_cert(d: Path, name: str) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, CN `name`, signed by the CA in `d`."""
    (d / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl(d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
    openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return d / f"{name}.pem", d / f"{name}.key"


def served_common_name(host: str, port: int, ca: Path) -> str:
    """The CN of the certificate a fresh TLS handshake is given (verified against `ca`)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection((host, port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3"), tls.version()
            subject = dict(x[0] for x in tls.getpeercert()["subject"])
            return subject["commonName"]


@pytest.fixture(scope="module")
def tls_stack(request):
    d = Path(tempfile.mkdtemp(prefix="tollgate-e2e-tls-"))
    ca = make_ca(d)
    cert, key = make_server_cert(d, "first")
    live_cert, live_key = d / "live.pem", d / "live.key"
    shutil.copy(cert, live_cert)
    shutil.copy(key, live_key)
    s = start_dev_stack(("--tls-cert", str(live_cert), "--tls-key", str(live_key)),
                        "tollgate dev with TLS")
    try:
        yield s, d, ca, (live_cert, live_key)
    finally:
        problems = s.finish(keep=False)
        shutil.rmtree(d, ignore_errors=True)
        assert not problems, problems


def tls_tenant(tls_stack):
    s, _, ca, _ = tls_stack
    admin = Admin(s.admin_url, s.admin_token)
    return replace(make_tenant(s, admin), ca=str(ca))


def test_confluent_over_tls(tls_stack):
    tc = tls_tenant(tls_stack)
    flow_confluent(tc.conn(), "orders", "g-tls", "confluent-tls", "OAUTHBEARER", idempotent=True)


def test_kafka_python_over_tls(tls_stack):
    tc = tls_tenant(tls_stack)
    flow_kafka_python(tc.conn(), "orders", "g-tls-kp", "kafka-python-tls")


def test_aiokafka_over_tls(tls_stack):
    tc = tls_tenant(tls_stack)
    asyncio.run(asyncio.wait_for(flow_aiokafka(tc.conn(), "orders", "g-tls-aio", "aiokafka-tls"), 240))


def test_kcat_over_tls(tls_stack):
    tc = tls_tenant(tls_stack)
    flow_kcat(tc.conn(), "orders", "g-tls-kcat", "kcat-tls")


def test_scram_over_tls(tls_stack):
    from test_scram import scram_user

    s = tls_stack[0]
    tc = tls_tenant(tls_stack)
    conn = replace(tc.conn(), scram=scram_user(Admin(s.admin_url, s.admin_token), tc, "SCRAM-SHA-512"))
    flow_confluent(conn, "orders", "g-tls-scram", "confluent-scram-tls", idempotent=True)
    flow_kafka_python(conn, "orders-kp", "g-tls-scram-kp", "kafka-python-scram-tls")


def test_msk_iam_signer_tokens_over_tls(tls_stack):
    from test_msk_iam import access_key, signer_token

    s = tls_stack[0]
    tc = tls_tenant(tls_stack)
    key = access_key(Admin(s.admin_url, s.admin_token), tc)
    flow_confluent(replace(tc.conn(), token=signer_token(key)), "orders", "g-tls-iam", "confluent-iam-tls")


def test_every_lane_speaks_tls_and_plaintext_gets_no_answer(tls_stack):
    s, _, ca, _ = tls_stack
    for node in s.nodes:
        host, port = node.rsplit(":", 1)
        assert served_common_name(host, int(port), ca) in ("first", "second")
    # ApiVersions v0 in plaintext to a TLS lane: not a TLS ClientHello, so the connection is
    # closed and nothing is answered.
    host, port = s.bootstrap.rsplit(":", 1)
    header = struct.pack(">hhih", 18, 0, 1, 3) + b"e2e"
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(struct.pack(">i", len(header)) + header)
        try:
            answer = raw.recv(4096)
        except ConnectionResetError:
            answer = b""
    assert answer == b"" or answer[:1] == b"\x15", f"a plaintext request was answered: {answer!r}"


def test_a_replaced_certificate_is_served_without_dropping_connections(tls_stack):
    s, d, ca, (live_cert, live_key) = tls_stack
    host, port = s.bootstrap.rsplit(":", 1)
    tc = tls_tenant(tls_stack)
    create_topic(tc.conn(), "renewed", partitions=1)
    reports: list = []
    producer = Producer(tc.conn().confluent(**{"linger.ms": 5}))

    def produce(n: int, tag: str) -> None:
        for i in range(n):
            producer.produce("renewed", key=f"{tag}-{i}", value=b"v" * 100,
                             on_delivery=lambda err, _msg: reports.append(err))
        assert producer.flush(30) == 0

    produce(20, "before")
    assert served_common_name(host, int(port), ca) == "first"
    # A renewal as a tool writes it: the key first, then the certificate. The gateway keeps
    # the old pair while the two do not match, then serves the new one.
    cert, key = make_server_cert(d, "second")
    shutil.copy(key, live_key)
    shutil.copy(cert, live_cert)
    wait_until(lambda: served_common_name(host, int(port), ca) == "second", 15,
               "the new certificate served")
    # The producer connected before goes on over its open connections.
    produce(20, "after")
    assert reports == [None] * 40, [r for r in reports if r is not None][:3]
    assert "TLS files reloaded" in s.logs(400)
