"""Helpers shared by the end-to-end tests: the admin API client, policies, tokens, and client
configurations for each Kafka library the suite drives.

Nothing here starts processes; conftest.py owns the stack's lifecycle.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.error
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

    # -- confluent-kafka (librdkafka) --

    def confluent(self, mechanism: str = "OAUTHBEARER", **extra: Any) -> dict:
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "client.id": "tollgate-e2e",
            "error_cb": self.errors.append,
        }
        if self.token is not None:
            conf["security.protocol"] = "SASL_PLAINTEXT"
            conf["sasl.mechanisms"] = mechanism
            if mechanism == "OAUTHBEARER":
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
        if self.token is not None:
            from kafka.net.sasl.oauth import AbstractTokenProvider

            jwt = self.token

            class Provider(AbstractTokenProvider):
                def token(self):
                    return jwt

            conf.update(security_protocol="SASL_PLAINTEXT", sasl_mechanism="OAUTHBEARER",
                        sasl_oauth_token_provider=Provider())
        conf.update(extra)
        return conf

    # -- aiokafka --

    def aiokafka(self, **extra: Any) -> dict:
        conf: dict[str, Any] = {"bootstrap_servers": self.bootstrap, "client_id": "tollgate-e2e"}
        if self.token is not None:
            from aiokafka.abc import AbstractTokenProvider

            jwt = self.token

            class Provider(AbstractTokenProvider):
                async def token(self):
                    return jwt

            conf.update(security_protocol="SASL_PLAINTEXT", sasl_mechanism="OAUTHBEARER",
                        sasl_oauth_token_provider=Provider())
        conf.update(extra)
        return conf

    # -- kcat --

    def kcat_args(self) -> list[str]:
        args = ["-b", self.bootstrap, "-X", "client.id=tollgate-e2e"]
        if self.token is not None:
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
        return Conn(self.bootstrap, token if token is not None else self.token)


# --------------------------------------------------------------------------------------------
# Waiting


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


def unique(prefix: str, n: int = 10) -> str:
    return f"{prefix}{uuid.uuid4().hex[:n]}"
