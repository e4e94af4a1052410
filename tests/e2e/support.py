"""Helpers shared by the end-to-end tests: the admin API client, policies, tokens, and client
configurations for each Kafka library the suite drives.

Nothing here starts processes; conftest.py owns the stack's lifecycle.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

# --------------------------------------------------------------------------------------------
# Admin API


class AdminError(Exception):
    """A non-2xx answer from the admin API."""

    def __init__(self, method: str, path: str, status: int, body: Any):
        super().__init__(f"{method} {path} -> HTTP {status}: {body!r}")
        self.status = status
        self.body = body


class Admin:
    """A client for the admin API (CONTRACT.md), on urllib so the suite needs no extra deps."""

    def __init__(self, base_url: str, token: str | None):
        self.base_url = base_url.rstrip("/")
        self.token = token

    def request(self, method: str, path: str, body: Any = None, *, auth: bool = True,
                token: str | None = None, timeout: float = 30.0) -> tuple[int, Any]:
        """Sends one request; returns (status, decoded JSON or text). Never raises on HTTP
        errors, so tests can check error answers."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", f"Bearer {token if token is not None else self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        text = raw.decode("utf-8", "replace")
        try:
            return status, json.loads(text) if text else None
        except ValueError:
            return status, text

    def _ok(self, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200, 201, 204)):
        status, answer = self.request(method, path, body)
        if status not in expect:
            raise AdminError(method, path, status, answer)
        return answer

    def create_tenant(self, tenant_id: str, name: str | None = None) -> dict:
        return self._ok("POST", "/v1/tenants", {"id": tenant_id, "name": name or tenant_id})

    def create_cluster(self, tenant: str, name: str, **extra: Any) -> dict:
        return self._ok("POST", "/v1/clusters", {"tenant": tenant, "name": name, **extra})

    def delete_cluster(self, cluster_id: str) -> Any:
        return self._ok("DELETE", f"/v1/clusters/{cluster_id}")

    def create_token(self, cluster_id: str, principal: str, policy: dict, ttl_seconds: int = 3600) -> dict:
        return self._ok("POST", "/v1/tokens", {"cluster": cluster_id, "principal": principal,
                                               "policy": policy, "ttl_seconds": ttl_seconds})

    def revoke_token(self, jti: str) -> Any:
        return self._ok("DELETE", f"/v1/tokens/{jti}")

    def create_scram_user(self, cluster_id: str, username: str, password: str, mechanism: str,
                          policy: dict, **extra: Any) -> dict:
        return self._ok("POST", f"/v1/clusters/{cluster_id}/scram-users",
                        {"username": username, "password": password, "mechanism": mechanism,
                         "policy": policy, **extra})

    def delete_scram_user(self, cluster_id: str, username: str) -> Any:
        return self._ok("DELETE", f"/v1/clusters/{cluster_id}/scram-users/{urllib.parse.quote(username, safe='')}")


# --------------------------------------------------------------------------------------------
# Policies

#: Everything a tenant normally does with its own cluster.
FULL_ACTIONS = [
    "kafka-cluster:Connect",
    "kafka-cluster:DescribeCluster",
    "kafka-cluster:*Topic*",
    "kafka-cluster:WriteData*",
    "kafka-cluster:ReadData",
    "kafka-cluster:*Group",
    "kafka-cluster:*TransactionalId",
]

#: A consumer: may read and use groups, may not write or manage topics.
READ_ONLY_ACTIONS = [
    "kafka-cluster:Connect",
    "kafka-cluster:DescribeCluster",
    "kafka-cluster:DescribeTopic",
    "kafka-cluster:ReadData",
    "kafka-cluster:DescribeGroup",
    "kafka-cluster:AlterGroup",
]


def cluster_resources(tenant: str, cluster_name: str) -> list[str]:
    return [
        f"arn:tollgate:kafka:*:{tenant}:cluster/{cluster_name}/*",
        f"arn:tollgate:kafka:*:{tenant}:topic/{cluster_name}/*/*",
        f"arn:tollgate:kafka:*:{tenant}:group/{cluster_name}/*/*",
        f"arn:tollgate:kafka:*:{tenant}:transactional-id/{cluster_name}/*/*",
    ]


def policy(tenant: str, cluster_name: str, actions: list[str] | None = None) -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": list(actions if actions is not None else FULL_ACTIONS),
            "Resource": cluster_resources(tenant, cluster_name),
        }],
    }


# --------------------------------------------------------------------------------------------
# JWTs, for the tests that tamper with tokens


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_parts(token: str) -> tuple[dict, dict, bytes]:
    """(header, claims, signature) of a JWT, without verifying anything."""
    h, p, s = token.split(".")
    return json.loads(_b64url_decode(h)), json.loads(_b64url_decode(p)), _b64url_decode(s)


def hs256_jwt(header: dict, claims: dict, key: bytes) -> str:
    """Builds and signs a JWT by hand (HS256), as a forger with the wrong key would."""
    signing_input = _b64url(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        _b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64url(sig)


def with_claims(token: str, **changes: Any) -> str:
    """The same token with some claims changed and the original signature kept."""
    h, p, s = token.split(".")
    claims = json.loads(_b64url_decode(p))
    claims.update(changes)
    return h + "." + _b64url(json.dumps(claims, separators=(",", ":")).encode()) + "." + s


# --------------------------------------------------------------------------------------------
# Client configurations


@dataclass
class Conn:
    """How one client reaches one cluster: a bootstrap address and a token.

    `token=None` means a bare broker without SASL; that exists only so the client code can be
    checked directly against tansu, and is never used against the gateway.
    """

    bootstrap: str
    token: str | None
    #: The expiry librdkafka is told for OAUTHBEARER (epoch seconds); None: an hour from now.
    #: The expired-token test lies here, since librdkafka refuses to send a token it knows is
    #: expired and the point is to see the gateway refuse it.
    client_side_expiry: float | None = None
    errors: list = field(default_factory=list)
    #: A CA file (PEM) when the listener speaks TLS: every client then uses SASL_SSL and
    #: verifies the gateway's certificate against it.
    ca: str | None = None
    #: (mechanism, SASL user name, password) of a SCRAM user: every client then authenticates
    #: with SCRAM instead of the token.
    scram: tuple[str, str, str] | None = None

    @property
    def sasl(self) -> bool:
        return self.token is not None or self.scram is not None

    # -- confluent-kafka (librdkafka) --

    def confluent(self, mechanism: str = "OAUTHBEARER", **extra: Any) -> dict:
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "client.id": "tollgate-e2e",
            "error_cb": self.errors.append,
        }
        if self.sasl:
            conf["security.protocol"] = "SASL_SSL" if self.ca else "SASL_PLAINTEXT"
            if self.ca:
                conf["ssl.ca.location"] = self.ca
            if self.scram:
                mechanism, conf["sasl.username"], conf["sasl.password"] = self.scram
            conf["sasl.mechanisms"] = mechanism
            if mechanism.startswith("SCRAM-"):
                pass
            elif mechanism == "OAUTHBEARER":
                jwt = self.token
                expiry = self.client_side_expiry

                def oauth_cb(_config_str):
                    return jwt, expiry if expiry is not None else time.time() + 3600

                conf["oauth_cb"] = oauth_cb
            elif mechanism == "PLAIN":
                conf["sasl.username"] = "tollgate-e2e"
                conf["sasl.password"] = self.token
            else:
                raise ValueError(mechanism)
        conf.update(extra)
        return conf

    # -- kafka-python --

    def kafka_python(self, **extra: Any) -> dict:
        conf: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "client_id": "tollgate-e2e"}
        if self.scram:
            mechanism, username, password = self.scram
            conf.update(security_protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism,
                        sasl_plain_username=username, sasl_plain_password=password)
            if self.ca:
                conf.update(security_protocol="SASL_SSL", ssl_cafile=self.ca, ssl_check_hostname=True)
        elif self.token is not None:
            from kafka.net.sasl.oauth import AbstractTokenProvider

            jwt = self.token

            class Provider(AbstractTokenProvider):
                def token(self):
                    return jwt

            conf.update(security_protocol="SASL_PLAINTEXT", sasl_mechanism="OAUTHBEARER",
                        sasl_oauth_token_provider=Provider())
            if self.ca:
                conf.update(security_protocol="SASL_SSL", ssl_cafile=self.ca, ssl_check_hostname=True)
        conf.update(extra)
        return conf

    # -- aiokafka --

    def aiokafka(self, **extra: Any) -> dict:
        conf: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "client_id": "tollgate-e2e"}
        if self.scram:
            mechanism, username, password = self.scram
            conf.update(security_protocol="SASL_PLAINTEXT", sasl_mechanism=mechanism,
                        sasl_plain_username=username, sasl_plain_password=password)
            if self.ca:
                from aiokafka.helpers import create_ssl_context

                conf.update(security_protocol="SASL_SSL", ssl_context=create_ssl_context(cafile=self.ca))
        elif self.token is not None:
            from aiokafka.abc import AbstractTokenProvider

            jwt = self.token

            class Provider(AbstractTokenProvider):
                async def token(self):
                    return jwt

            conf.update(security_protocol="SASL_PLAINTEXT", sasl_mechanism="OAUTHBEARER",
                        sasl_oauth_token_provider=Provider())
            if self.ca:
                from aiokafka.helpers import create_ssl_context

                conf.update(security_protocol="SASL_SSL", ssl_context=create_ssl_context(cafile=self.ca))
        conf.update(extra)
        return conf

    # -- kcat --

    def kcat_args(self) -> list[str]:
        args = ["-b", self.bootstrap, "-X", "client.id=tollgate-e2e"]
        if self.scram:
            mechanism, username, password = self.scram
            args += ["-X", f"security.protocol={'SASL_SSL' if self.ca else 'SASL_PLAINTEXT'}",
                     "-X", f"sasl.mechanisms={mechanism}",
                     "-X", f"sasl.username={username}", "-X", f"sasl.password={password}"]
            if self.ca:
                args += ["-X", f"ssl.ca.location={self.ca}"]
        elif self.token is not None and self.ca:
            args += ["-X", "security.protocol=SASL_SSL", "-X", f"ssl.ca.location={self.ca}",
                     "-X", "sasl.mechanisms=PLAIN",
                     "-X", "sasl.username=tollgate-e2e", "-X", f"sasl.password={self.token}"]
        elif self.token is not None:
            args += ["-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=PLAIN",
                     "-X", "sasl.username=tollgate-e2e", "-X", f"sasl.password={self.token}"]
        return args


@dataclass
class TenantCluster:
    """A fresh tenant with one cluster and a token for it, made through the admin API."""

    tenant: str
    cluster: dict
    token: str
    expires_at: str
    bootstrap: str
    #: The CA of the listener's certificate when it speaks TLS (see `Conn.ca`).
    ca: str | None = None

    @property
    def cluster_id(self) -> str:
        return self.cluster["id"]

    @property
    def cluster_name(self) -> str:
        return self.cluster["name"]

    @property
    def physical_prefix(self) -> str:
        """The pool's namespace for this cluster (tenancy.rs): tg-<uuid as 32 hex digits>-."""
        return f"tg-{uuid.UUID(self.cluster_id).hex}-"

    def conn(self, token: str | None = None) -> Conn:
        return Conn(self.bootstrap, token if token is not None else self.token, ca=self.ca)


# --------------------------------------------------------------------------------------------
# Waiting


def end_process(proc: subprocess.Popen, grace: float = 10) -> None:
    """Stops a helper process the test started: SIGTERM, then SIGKILL after `grace` seconds."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25):
    """Polls `predicate` until it returns something truthy; returns that. Fails with `what` and
    the last exception seen when `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - reported below
            last_exc = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f"; last error: {last_exc!r}" if last_exc else ""))
        time.sleep(interval)


#: Workaround for a pool defect (tansu 0.6.0, SQLite engine): a Fetch waiting in its long poll
#: re-reads the partition's watermark until its max wait ends, and when the topic was deleted
#: meanwhile, that read finds no row and panics (`lite.rs` query_one, "more or less than one
#: row"), taking the broker's storage down for every tenant. A consumer's last Fetch can still be
#: waiting in the pool after the client closed. Every client here waits at most 500 ms per
#: Fetch (the librdkafka, kafka-python and aiokafka default), so a test that deletes a topic it
#: has just consumed from first waits this long.
FETCH_DRAIN_SECONDS = 1.5


def let_pending_fetches_finish() -> None:
    """See FETCH_DRAIN_SECONDS."""
    time.sleep(FETCH_DRAIN_SECONDS)


def unique(prefix: str, n: int = 10) -> str:
    return f"{prefix}{uuid.uuid4().hex[:n]}"


# --------------------------------------------------------------------------------------------
# confluent-kafka shorthands for the isolation and robustness tests


def create_topic(conn: Conn, topic: str, partitions: int = 1, timeout: float = 60) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(conn.confluent())
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                        operation_timeout=30, request_timeout=timeout)[topic].result(timeout=timeout)

    def ready():
        t = admin.list_topics(topic=topic, timeout=10).topics.get(topic)
        return t is not None and t.error is None and len(t.partitions) == partitions

    wait_until(ready, timeout, f"topic {topic} in metadata")


def produce(conn: Conn, topic: str, records: dict[str, str], timeout: float = 60, **extra: Any) -> list:
    """Produces `records` (key -> value); returns [(error or None, key)] for every delivery."""
    from confluent_kafka import Producer

    reports: list = []
    producer = Producer(conn.confluent(**{"enable.idempotence": False, "linger.ms": 5,
                                          "message.timeout.ms": int(timeout * 1000), **extra}))
    for key, value in records.items():
        producer.produce(topic, key=key, value=value,
                         on_delivery=lambda err, msg: reports.append((err, msg.key().decode())))
        producer.poll(0)
    left = producer.flush(timeout + 10)
    assert left == 0, f"{left} records neither delivered nor failed within {timeout}s"
    return reports


def consume(conn: Conn, topic: str, group: str, expect: int, timeout: float = 90,
            settle_polls: int = 3) -> list[tuple[str, str]]:
    """Consumes `topic` in `group` from the earliest offset until `expect` records arrived (or
    `timeout`), then polls `settle_polls` more seconds for strays, commits and closes."""
    from confluent_kafka import Consumer, KafkaError

    consumer = Consumer(conn.confluent(**{"group.id": group, "auto.offset.reset": "earliest",
                                          "enable.auto.commit": False}))
    got: list[tuple[str, str]] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        polls_after = 0
        while time.monotonic() < deadline and polls_after < settle_polls:
            msg = consumer.poll(1.0)
            if len(got) >= expect:
                polls_after += 1
            if msg is None:
                continue
            if msg.error():
                assert msg.error().code() == KafkaError._PARTITION_EOF, f"consume error: {msg.error()}"
                continue
            assert msg.topic() == topic
            got.append((msg.key().decode(), msg.value().decode()))
        if got:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return got


def auth_errors(errors: list) -> list:
    from confluent_kafka import KafkaError

    return [e for e in errors if e.code() == KafkaError._AUTHENTICATION]


def assert_cannot_connect(conn: Conn, mechanism: str = "OAUTHBEARER", timeout: float = 30) -> None:
    """A client with this token sees a SASL authentication failure and gets no metadata."""
    from confluent_kafka import Consumer, KafkaException

    conn.errors.clear()
    consumer = Consumer(conn.confluent(mechanism, **{"group.id": "e2e-denied"}))
    try:
        # Serving callbacks makes the client connect, try to authenticate and report why not.
        deadline = time.monotonic() + timeout
        while not auth_errors(conn.errors) and time.monotonic() < deadline:
            consumer.poll(0.5)
        assert auth_errors(conn.errors), \
            f"expected a SASL authentication failure (_AUTHENTICATION), client saw: {conn.errors}"
        try:
            md = consumer.list_topics(timeout=3)
        except KafkaException:
            md = None
        assert md is None, f"a client with a bad token got metadata: topics {list(md.topics)}"
    finally:
        consumer.close()


# --------------------------------------------------------------------------------------------
# A raw Kafka client, for exact byte counts: what a Fetch response really carried


def _kstring(s: str | bytes | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">h", len(b)) + b


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint at `pos`: (value, next position)."""
    shift = z = 0
    while True:
        byte = data[pos]
        pos += 1
        z |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (z >> 1) ^ -(z & 1), pos


def split_batches(records: bytes) -> list[bytes]:
    """The complete record batches in a Fetch response's `records` (a trailing partial batch,
    which brokers may send, is left out)."""
    out, pos = [], 0
    while pos + 12 <= len(records):
        (length,) = struct.unpack_from(">i", records, pos + 8)
        if pos + 12 + length > len(records):
            break
        out.append(records[pos:pos + 12 + length])
        pos += 12 + length
    return out


def batch_records(batch: bytes) -> list[tuple[int, bytes | None, bytes | None]]:
    """(offset, key, value) of every record of an uncompressed v2 batch."""
    base_offset, _, _, magic = struct.unpack_from(">qiib", batch, 0)
    assert magic == 2, f"batch magic {magic}"
    (attributes,) = struct.unpack_from(">h", batch, 21)
    assert attributes & 0x07 == 0, f"compressed batch (attributes {attributes:#x})"
    (count,) = struct.unpack_from(">i", batch, 57)
    pos, out = 61, []
    for _ in range(count):
        length, pos = _read_varint(batch, pos)
        end = pos + length
        pos += 1  # attributes
        _, pos = _read_varint(batch, pos)  # timestampDelta
        offset_delta, pos = _read_varint(batch, pos)
        fields = []
        for _ in range(2):
            n, pos = _read_varint(batch, pos)
            fields.append(None if n < 0 else batch[pos:pos + n])
            pos += max(n, 0)
        out.append((base_offset + offset_delta, fields[0], fields[1]))
        pos = end
    return out


def scram_proof(mechanism: str, password: str, auth_message_start: str, server_first: str,
                gs2: str = "n,,") -> tuple[str, bytes]:
    """The client-final message of a SCRAM exchange (RFC 5802) and the server signature it
    must be answered with, written here from the RFC, independently of the gateway's code."""
    h = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}[mechanism]
    attrs = dict(a.split("=", 1) for a in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(h, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", h).digest()
    stored_key = hashlib.new(h, client_key).digest()
    without_proof = f"c={base64.b64encode(gs2.encode()).decode()},r={attrs['r']}"
    auth_message = f"{auth_message_start},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, h).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    server_key = hmac.new(salted, b"Server Key", h).digest()
    return (f"{without_proof},p={base64.b64encode(proof).decode()}",
            hmac.new(server_key, auth_message, h).digest())


def closed_within(sock, seconds: float) -> bool:
    """Whether the peer closes `sock` (plain or TLS) within `seconds`, nothing being sent
    meanwhile; a TLS alert or a reset counts as closed."""
    import socket
    import ssl

    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(4096):
                return True
        except socket.timeout:
            return False
        except (ssl.SSLError, OSError):
            return True
    return False


class RawKafka:
    """One connection to the gateway, authenticated with SASL PLAIN (the token as password) or
    SCRAM, speaking a few hand-encoded requests."""

    def __init__(self, bootstrap: str, token: str | None, timeout: float = 30, source: str | None = None,
                 prefix: bytes = b"", scram: tuple[str, str, str] | None = None, oauth: str | None = None):
        """`source`: the local address to connect from (another loopback address, say);
        `prefix`: bytes sent before the first request (a PROXY protocol header);
        `scram`: (mechanism, user name, password) to authenticate with instead of the token;
        `oauth`: a bearer token sent with OAUTHBEARER instead of the token over PLAIN."""
        error, message = self.open(bootstrap, token, timeout, source, prefix, scram, oauth)
        assert error == 0, f"SaslAuthenticate error {error}: {message}"

    @classmethod
    def refused(cls, bootstrap: str, token: str | None, source: str | None = None,
                prefix: bytes = b"", scram: tuple[str, str, str] | None = None,
                oauth: str | None = None) -> tuple[int, str]:
        """Authenticates and returns SaslAuthenticate's (error code, message), for a test that
        expects the gateway to refuse."""
        raw = cls.__new__(cls)
        try:
            return raw.open(bootstrap, token, 30, source, prefix, scram, oauth)
        finally:
            raw.close()

    def _authenticate(self, auth: bytes) -> tuple[int, str, bytes]:
        answer = self.request(36, 1, struct.pack(">i", len(auth)) + auth)  # SaslAuthenticate v1
        error, n = struct.unpack_from(">hh", answer)
        message = answer[4:4 + n].decode() if n >= 0 else ""
        pos = 4 + max(n, 0)
        (m,) = struct.unpack_from(">i", answer, pos)
        return error, message, answer[pos + 4:pos + 4 + max(m, 0)]

    def open(self, bootstrap: str, token: str | None, timeout: float, source: str | None,
             prefix: bytes = b"", scram: tuple[str, str, str] | None = None,
             oauth: str | None = None) -> tuple[int, str]:
        import secrets
        import socket

        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        if prefix:
            self.sock.sendall(prefix)
        self.correlation = 0
        mechanism = scram[0] if scram else "OAUTHBEARER" if oauth else "PLAIN"
        mechanisms = self.request(17, 1, _kstring(mechanism))  # SaslHandshake v1
        assert struct.unpack_from(">h", mechanisms)[0] == 0, f"SaslHandshake error: {mechanisms!r}"
        if oauth:
            error, message, _ = self._authenticate(f"n,,\x01auth=Bearer {oauth}\x01\x01".encode())
            return error, message
        if not scram:
            error, message, _ = self._authenticate(b"\0tollgate-e2e\0" + token.encode())
            return error, message
        _, username, password = scram
        name = username.replace("=", "=3D").replace(",", "=2C")
        first_bare = f"n={name},r={secrets.token_urlsafe(18)}"
        error, message, server_first = self._authenticate(f"n,,{first_bare}".encode())
        if error:
            return error, message
        final, expected = scram_proof(mechanism, password, first_bare, server_first.decode())
        error, message, server_final = self._authenticate(final.encode())
        if error == 0:
            assert server_final == b"v=" + base64.b64encode(expected), \
                f"the gateway's server signature is wrong: {server_final!r}"
        return error, message

    def closed_within(self, seconds: float) -> bool:
        """Whether the gateway closes this connection within `seconds`, the client sending
        nothing meanwhile."""
        return closed_within(self.sock, seconds)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _recv(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed by the gateway")
            buf += chunk
        return bytes(buf)

    def request(self, api_key: int, version: int, body: bytes) -> bytes:
        """Sends a request with a v1 header; returns the response after its correlation id."""
        self.correlation += 1
        payload = struct.pack(">hhi", api_key, version, self.correlation) + _kstring("tollgate-e2e") + body
        self.sock.sendall(struct.pack(">i", len(payload)) + payload)
        (n,) = struct.unpack(">i", self._recv(4))
        data = self._recv(n)
        (correlation,) = struct.unpack_from(">i", data)
        assert correlation == self.correlation, (correlation, self.correlation)
        return data[4:]

    def fetch(self, topic: str, partition: int, offset: int, max_bytes: int = 16 * 1024 * 1024,
              max_wait_ms: int = 200) -> tuple[int, int, bytes]:
        """Fetch v4 of one partition: (error code, high watermark, records bytes)."""
        body = struct.pack(">iiiib", -1, max_wait_ms, 1, max_bytes, 0)
        body += struct.pack(">i", 1) + _kstring(topic)
        body += struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, max_bytes)
        data = self.request(1, 4, body)
        pos = 4  # throttle_time_ms
        (topics,) = struct.unpack_from(">i", data, pos)
        pos += 4
        assert topics == 1, f"Fetch answered {topics} topics"
        (n,) = struct.unpack_from(">h", data, pos)
        pos += 2 + n
        (partitions,) = struct.unpack_from(">i", data, pos)
        pos += 4
        assert partitions == 1, f"Fetch answered {partitions} partitions"
        index, error, high, _lso = struct.unpack_from(">ihqq", data, pos)
        pos += 22
        (aborted,) = struct.unpack_from(">i", data, pos)
        pos += 4 + 16 * max(aborted, 0)
        (length,) = struct.unpack_from(">i", data, pos)
        pos += 4
        assert index == partition
        return error, high, data[pos:pos + max(length, 0)]


# --------------------------------------------------------------------------------------------
# The pool behind a `tollgate dev`


def pool_brokers(data_dir) -> list[str]:
    """The addresses of the tansu brokers a `tollgate dev` started, in port order: each logs
    to broker-<port>.log under the data dir. For reading what the gateway itself keeps on the
    pool (the audit topic), never for tenants' traffic."""
    import re
    from pathlib import Path

    ports = sorted(int(m.group(1)) for p in Path(data_dir).rglob("broker-*.log")
                   if (m := re.fullmatch(r"broker-(\d+)\.log", p.name)))
    return [f"127.0.0.1:{port}" for port in ports]
