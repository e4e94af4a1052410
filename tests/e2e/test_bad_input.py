"""Bad bytes on the Kafka port: oversized, truncated, unknown or unauthenticated requests, and
garbage SASL. The gateway answers with Kafka's error or closes that one connection; it neither
crashes nor stops serving everyone else.

Requests are encoded by hand (struct.pack), as a broken or hostile client would send them.
"""

from __future__ import annotations

import socket
import struct
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from support import TenantCluster, create_topic, policy, produce, unique

API_METADATA = 3
API_SASL_HANDSHAKE = 17
API_VERSIONS = 18
API_SASL_AUTHENTICATE = 36
SASL_AUTHENTICATION_FAILED = 58

CLOSE_TIMEOUT = 15.0

# --------------------------------------------------------------------------------------------
# Encoding


def kstring(s: str | bytes | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">h", len(b)) + b


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def header_v1(api_key: int, api_version: int, correlation_id: int, client_id: str | None = "e2e-raw") -> bytes:
    return struct.pack(">hhi", api_key, api_version, correlation_id) + kstring(client_id)


def header_v2(api_key: int, api_version: int, correlation_id: int, client_id: str | None = "e2e-raw") -> bytes:
    # Flexible versions: the v1 header plus an empty tagged-field section.
    return header_v1(api_key, api_version, correlation_id, client_id) + uvarint(0)


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


# --------------------------------------------------------------------------------------------
# Socket helpers


def connect(stack) -> socket.socket:
    host, port = stack.bootstrap.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=10)
    s.settimeout(CLOSE_TIMEOUT)
    return s


def recv_exact(s: socket.socket, n: int) -> bytes | None:
    """n bytes, or None if the peer closed first."""
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = s.recv(n - len(buf))
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv_response(s: socket.socket) -> bytes | None:
    """One response frame's payload (starting at the correlation id), or None on close."""
    size = recv_exact(s, 4)
    if size is None:
        return None
    (n,) = struct.unpack(">i", size)
    assert 0 <= n <= 16 * 1024 * 1024, f"implausible response size {n}"
    return recv_exact(s, n)


def read_until_closed(s: socket.socket, what: str) -> bytes:
    """Everything the gateway sends until it closes the connection; fails if it keeps the
    connection open for CLOSE_TIMEOUT seconds."""
    data = bytearray()
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return bytes(data)
        except socket.timeout:
            raise AssertionError(f"{what}: the gateway kept the connection open for {CLOSE_TIMEOUT}s "
                                 f"(received {len(data)} bytes)") from None
        if not chunk:
            return bytes(data)
        data += chunk


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def gateway_rss(pid: int) -> int:
    """Resident memory of the gateway process alone (its tansu children are separate)."""
    try:
        return rss_bytes(pid)
    except OSError:
        return 0


# --------------------------------------------------------------------------------------------
# The client that must keep working


@pytest.fixture(scope="module")
def bystander(stack, admin) -> TenantCluster:
    """A well-behaved tenant whose traffic must survive everything in this module."""
    tenant = unique("t", 12)
    admin.create_tenant(tenant)
    cluster = admin.create_cluster(tenant, unique("c", 8))
    tok = admin.create_token(cluster["id"], "bystander", policy(tenant, cluster["name"]), 3600)
    tc = TenantCluster(tenant, cluster, tok["token"], tok["expires_at"], stack.bootstrap)
    create_topic(tc.conn(), "health")
    return tc


def assert_gateway_serves(stack, tc: TenantCluster) -> None:
    """The gateway is alive and a normal client can produce one record and read it back."""
    assert stack.alive(), f"the gateway exited\n{stack.logs()}"
    value = uuid.uuid4().hex
    reports = produce(tc.conn(), "health", {"probe": value}, timeout=30)
    assert len(reports) == 1 and reports[0][0] is None, f"health produce failed: {reports}"

    consumer = Consumer(tc.conn().confluent(**{"group.id": "g-health", "enable.auto.commit": False}))
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition("health", 0), timeout=30)
        consumer.assign([TopicPartition("health", 0, max(low, high - 1))])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert not msg.error() or msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
            if not msg.error() and msg.value().decode() == value:
                return
        raise AssertionError("the health record was produced but not read back within 30s")
    finally:
        consumer.close()


@pytest.fixture
def still_healthy(stack, bystander):
    """Runs the health check before (so a failure is this test's) and after the test."""
    assert_gateway_serves(stack, bystander)
    yield
    assert_gateway_serves(stack, bystander)


# --------------------------------------------------------------------------------------------
# A positive control: the hand encoding is right


def test_api_versions_before_auth_is_answered(stack, still_healthy):
    with connect(stack) as s:
        s.sendall(frame(header_v1(API_VERSIONS, 0, 7)))
        resp = recv_response(s)
    assert resp is not None, "ApiVersions v0 before authentication: connection closed"
    corr, err, count = struct.unpack(">ihi", resp[:10])
    assert corr == 7 and err == 0, (corr, err)
    keys = {struct.unpack(">h", resp[10 + 6 * i:12 + 6 * i])[0] for i in range(count)}
    assert {API_SASL_HANDSHAKE, API_SASL_AUTHENTICATE} <= keys, sorted(keys)


def test_sasl_handshake_offers_oauthbearer_and_plain(stack, still_healthy):
    with connect(stack) as s:
        s.sendall(frame(header_v1(API_SASL_HANDSHAKE, 1, 1) + kstring("OAUTHBEARER")))
        resp = recv_response(s)
    assert resp is not None
    corr, err, count = struct.unpack(">ihi", resp[:10])
    assert corr == 1 and err == 0, (corr, err)
    pos, mechanisms = 10, []
    for _ in range(count):
        (n,) = struct.unpack(">h", resp[pos:pos + 2])
        mechanisms.append(resp[pos + 2:pos + 2 + n].decode())
        pos += 2 + n
    assert {"OAUTHBEARER", "PLAIN"} <= set(mechanisms), mechanisms


# --------------------------------------------------------------------------------------------
# Framing


@pytest.mark.parametrize("declared", [0x7FFFFFFF, 0x10000000, -1, -0x80000000],
                         ids=["2GiB", "256MiB", "minus-1", "int-min"])
def test_oversized_or_negative_length_prefix_closes(stack, still_healthy, declared):
    before = gateway_rss(stack.proc.pid)
    with connect(stack) as s:
        s.sendall(struct.pack(">i", declared) + header_v1(API_VERSIONS, 0, 1) + b"\x00" * 64)
        read_until_closed(s, f"length prefix {declared:#x}")
    grown = gateway_rss(stack.proc.pid) - before
    assert grown < 256 * 1024 * 1024, f"gateway memory grew by {grown} bytes after a {declared:#x} length prefix"


def test_truncated_frame_then_close(stack, still_healthy):
    with connect(stack) as s:
        s.sendall(struct.pack(">i", 100) + header_v1(API_VERSIONS, 0, 1))


def test_truncated_frame_held_open_does_not_block_others(stack, bystander):
    # Half a frame, a connection that never says anything, and half a length prefix, all kept
    # open while a normal client works.
    held = [connect(stack), connect(stack), connect(stack)]
    try:
        held[0].sendall(struct.pack(">i", 100) + header_v1(API_VERSIONS, 0, 1))
        held[2].sendall(b"\x00\x00")
        assert_gateway_serves(stack, bystander)
    finally:
        for s in held:
            s.close()
    assert_gateway_serves(stack, bystander)


def test_many_garbage_connections_at_once(stack, bystander):
    garbage = [b"\xff" * 64, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00\x00\x00\x02\x00",
               struct.pack(">i", 12) + b"\x00" * 12, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"]
    socks = []
    try:
        for i in range(50):
            s = connect(stack)
            s.sendall(garbage[i % len(garbage)])
            socks.append(s)
        assert_gateway_serves(stack, bystander)
    finally:
        for s in socks:
            s.close()
    assert_gateway_serves(stack, bystander)


# --------------------------------------------------------------------------------------------
# Requests the gateway must refuse


def test_unknown_api_key_closes(stack, still_healthy):
    with connect(stack) as s:
        s.sendall(frame(header_v1(9999, 0, 42) + b"\x00" * 8))
        read_until_closed(s, "unknown API key 9999")


def test_request_before_authentication_closes(stack, still_healthy):
    with connect(stack) as s:
        # Metadata v1 for all topics (null array), without any SASL exchange.
        s.sendall(frame(header_v1(API_METADATA, 1, 5) + struct.pack(">i", -1)))
        data = read_until_closed(s, "Metadata before authentication")
    host = stack.bootstrap.rsplit(":", 1)[0].encode()
    assert host not in data and b"tg-" not in data, f"pre-auth Metadata leaked something: {data[:200]!r}"


def test_sasl_authenticate_with_garbage_fails(stack, still_healthy):
    for mechanism, garbage in (("OAUTHBEARER", b"\x00\xff not a gs2 header \x01\x01"),
                               ("OAUTHBEARER", b"n,,\x01auth=Bearer not.a.jwt\x01\x01"),
                               ("OAUTHBEARER", b""),
                               ("PLAIN", b"no nul separators at all"),
                               ("PLAIN", b"\x00user\x00"),
                               ("PLAIN", b"\x00user\x00" + b"x" * 5000)):
        with connect(stack) as s:
            s.sendall(frame(header_v1(API_SASL_HANDSHAKE, 1, 1) + kstring(mechanism)))
            resp = recv_response(s)
            assert resp is not None, f"SaslHandshake {mechanism}: connection closed"
            assert struct.unpack(">ih", resp[:6]) == (1, 0), resp[:6]

            body = uvarint(len(garbage) + 1) + garbage + uvarint(0)
            s.sendall(frame(header_v2(API_SASL_AUTHENTICATE, 2, 2) + body))
            resp = recv_response(s)
            if resp is not None:
                # Response header v1: correlation id, then an empty tagged-field section.
                corr, tags = struct.unpack(">ib", resp[:5])
                (err,) = struct.unpack(">h", resp[5:7])
                assert corr == 2 and tags == 0, (corr, tags)
                assert err == SASL_AUTHENTICATION_FAILED, \
                    f"{mechanism} garbage {garbage[:20]!r}: error code {err}, expected 58"
            # Either way, nothing else may be served on this connection.
            try:
                s.sendall(frame(header_v1(API_METADATA, 1, 3) + struct.pack(">i", -1)))
            except (BrokenPipeError, ConnectionResetError):
                continue  # already closed: fine
            data = read_until_closed(s, f"after a failed {mechanism} authentication")
            assert b"tg-" not in data


def test_sasl_handshake_with_lying_string_length(stack, still_healthy):
    # The mechanism claims 0x7fff bytes; the frame holds 5.
    with connect(stack) as s:
        s.sendall(frame(header_v1(API_SASL_HANDSHAKE, 1, 9) + struct.pack(">h", 0x7FFF) + b"PLAIN"))
        resp = recv_response(s)
        if resp is not None:
            corr, err = struct.unpack(">ih", resp[:6])
            assert corr == 9 and err != 0, f"a malformed SaslHandshake was accepted (error code {err})"


def test_array_length_lie_after_authentication(stack, bystander, still_healthy):
    """An authenticated client whose Metadata request declares 0x7fffffff topics in a tiny frame
    gets an error or a close, and the gateway does not try to allocate for them."""
    token = bystander.token.encode()
    before = gateway_rss(stack.proc.pid)
    with connect(stack) as s:
        s.sendall(frame(header_v1(API_SASL_HANDSHAKE, 1, 1) + kstring("PLAIN")))
        resp = recv_response(s)
        assert resp is not None and struct.unpack(">ih", resp[:6]) == (1, 0)
        auth = b"\x00e2e\x00" + token
        s.sendall(frame(header_v1(API_SASL_AUTHENTICATE, 1, 2) + struct.pack(">i", len(auth)) + auth))
        resp = recv_response(s)
        assert resp is not None, "PLAIN authentication with a valid token: connection closed"
        corr, err = struct.unpack(">ih", resp[:6])
        assert corr == 2 and err == 0, f"PLAIN authentication with a valid token failed: error {err}"

        s.sendall(frame(header_v1(API_METADATA, 1, 3) + struct.pack(">i", 0x7FFFFFFF) + kstring("x")))
        resp = recv_response(s)
        if resp is not None:
            assert struct.unpack(">i", resp[:4])[0] == 3
            assert b"tg-" not in resp
    grown = gateway_rss(stack.proc.pid) - before
    assert grown < 256 * 1024 * 1024, f"gateway memory grew by {grown} bytes"
