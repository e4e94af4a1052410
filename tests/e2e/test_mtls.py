"""Mutual TLS (issue 14; CONTRACT "Security": `--tls-client-ca`, `--tls-principal-rules`,
certificate principals bound through the admin API) against a real `tollgate dev` stack.

The test runs a small CA with the `openssl ca` command: client certificates that are valid,
expired, revoked (in the CRL given with `--tls-client-crl`) and signed by a foreign CA. A valid
certificate whose principal a cluster bound produces and consumes with confluent-kafka and
kafka-python over `security.protocol=SSL` (no SASL); the others fail the handshake; an unbound
principal gets nothing; unbinding closes a live connection within 5 s; a CRL rewritten while the
gateway runs refuses the newly revoked certificate within seconds and closes its live connection.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from conftest import make_tenant, start_dev_stack
from support import Admin, closed_within, policy, wait_until
from test_clients import flow_confluent, flow_kafka_python

RULES = "RULE:^CN=([^,]+),OU=.*$/$1/L,DEFAULT"
CA_CONF = """\
[ca]
default_ca = local
[local]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/issued
serial = $dir/serial
crlnumber = $dir/crlnumber
default_md = sha256
default_crl_days = 2
policy = anything
unique_subject = no
copy_extensions = none
[anything]
commonName = supplied
organizationalUnitName = optional
organizationName = optional
"""


def openssl(cwd: Path, *args: str) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"openssl {args}: {done.stderr}"


class Ca:
    """A CA run with `openssl ca`, so that it can issue dated certificates, revoke and publish
    a CRL."""

    def __init__(self, d: Path, name: str):
        self.dir = d / name
        (self.dir / "issued").mkdir(parents=True)
        (self.dir / "index.txt").write_text("")
        (self.dir / "serial").write_text("1000\n")
        (self.dir / "crlnumber").write_text("1000\n")
        (self.dir / "ca.cnf").write_text(CA_CONF.format(dir=self.dir))
        openssl(self.dir, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", f"/CN={name}")
        self.pem = self.dir / "ca.pem"

    def issue(self, name: str, subject: str, start: str | None = None, end: str | None = None,
              server: bool = False) -> tuple[Path, Path]:
        """A certificate for `subject` (openssl's /K=V form) as `<name>.pem`, `<name>.key`."""
        openssl(self.dir, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
        args = ["ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key",
                "-in", f"{name}.csr", "-out", f"{name}.pem", "-notext",
                "-preserveDN"]  # the request's order, not the policy section's
        # X.509 v3 with the usage each side checks (a certificate without extensions is v1,
        # which webpki refuses).
        (self.dir / f"{name}.ext").write_text(
            "basicConstraints=CA:FALSE\n"
            + ("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n" if server
               else "extendedKeyUsage=clientAuth\n"))
        args += ["-extfile", f"{name}.ext"]
        args += ["-startdate", start, "-enddate", end] if start else ["-days", "2"]
        openssl(self.dir, *args)
        return self.dir / f"{name}.pem", self.dir / f"{name}.key"

    def revoke(self, cert: Path) -> None:
        openssl(self.dir, "ca", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key",
                "-revoke", str(cert))

    def publish_crl(self, to: Path) -> None:
        openssl(self.dir, "ca", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key",
                "-gencrl", "-out", "next.crl")
        # Replaced whole, as a CRL distribution job would: the gateway never reads half a file.
        shutil.copy(self.dir / "next.crl", to.with_suffix(".tmp"))
        to.with_suffix(".tmp").replace(to)


@dataclass
class Client:
    cert: Path
    key: Path


@pytest.fixture(scope="module")
def mtls(request):
    d = Path(tempfile.mkdtemp(prefix="tollgate-e2e-mtls-"))
    ca = Ca(d, "clients-and-server-ca")
    foreign = Ca(d, "foreign-ca")
    server_cert, server_key = ca.issue("server", "/CN=tollgate", server=True)
    clients = {
        "alice": Client(*ca.issue("alice", "/O=acme/OU=eng/CN=Alice")),
        "bob": Client(*ca.issue("bob", "/O=acme/OU=ops/CN=Bob")),
        "carol": Client(*ca.issue("carol", "/O=acme/OU=ops/CN=Carol")),
        "expired": Client(*ca.issue("expired", "/O=acme/OU=eng/CN=Old",
                                    start="20200101000000Z", end="20200201000000Z")),
        "revoked": Client(*ca.issue("revoked", "/O=acme/OU=eng/CN=Gone")),
        "foreign": Client(*foreign.issue("foreign", "/O=acme/OU=eng/CN=Alice")),
        "unbound": Client(*ca.issue("unbound", "/O=acme/OU=eng/CN=Nobody")),
    }
    ca.revoke(clients["revoked"].cert)
    crl = d / "clients.crl"
    ca.publish_crl(crl)
    s = start_dev_stack(("--tls-cert", str(server_cert), "--tls-key", str(server_key),
                         "--tls-client-ca", str(ca.pem), "--tls-client-crl", str(crl),
                         "--tls-principal-rules", RULES), "tollgate dev with mutual TLS")
    try:
        yield s, ca, crl, clients
    finally:
        problems = s.finish(keep=False)
        shutil.rmtree(d, ignore_errors=True)
        assert not problems, problems


def bound_tenant(mtls, *principals: str):
    """A tenant whose cluster binds `principals` with the full policy."""
    s, ca, _, _ = mtls
    admin = Admin(s.admin_url, s.admin_token)
    tc = replace(make_tenant(s, admin), ca=str(ca.pem))
    for p in principals:
        admin._ok("POST", f"/v1/clusters/{tc.cluster_id}/certificate-principals",
                  {"principal": p, "policy": policy(tc.tenant, tc.cluster_name)})
    return admin, tc


def tls_context(ca: Path, client: Client | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if client:
        ctx.load_cert_chain(str(client.cert), str(client.key))
    return ctx


def api_versions(sock) -> bytes:
    """Sends ApiVersions v0 and returns its answer (after the correlation id)."""
    payload = struct.pack(">hhi", 18, 0, 1) + struct.pack(">h", 3) + b"e2e"
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    head = sock.recv(4)
    if len(head) < 4:
        raise ConnectionError("closed")
    (n,) = struct.unpack(">i", head)
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data[4:]


def metadata(sock) -> bytes:
    """Metadata v1 for all topics: a request that needs an authenticated session."""
    payload = struct.pack(">hhi", 3, 1, 2) + struct.pack(">h", 3) + b"e2e" + struct.pack(">i", -1)
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    head = sock.recv(4)
    if len(head) < 4:
        raise ConnectionError("closed")
    return head


def served(bootstrap: str, ca: Path, client: Client | None) -> bool:
    """Whether a raw TLS client with `client`'s certificate gets answers that need a session."""
    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            with tls_context(ca, client).wrap_socket(raw, server_hostname=host) as tls:
                api_versions(tls)
                metadata(tls)
                return True
    except (ssl.SSLError, ConnectionError, OSError):
        return False


@contextmanager
def live_session(bootstrap: str, ca: Path, client: Client):
    """A raw TLS connection with `client`'s certificate, authenticated by a first Metadata
    request whose answer is read away; yields the socket, idle."""
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with tls_context(ca, client).wrap_socket(raw, server_hostname=host) as tls:
            api_versions(tls)
            metadata(tls)
            tls.settimeout(0.5)
            try:  # the rest of the Metadata answer
                while tls.recv(65536):
                    pass
            except (socket.timeout, ssl.SSLError):
                pass
            yield tls


def confluent_ssl(tc, client: Client) -> dict:
    return {"bootstrap.servers": tc.bootstrap, "security.protocol": "SSL",
            "ssl.ca.location": tc.ca, "ssl.certificate.location": str(client.cert),
            "ssl.key.location": str(client.key), "client.id": "tollgate-e2e"}


class SslConn:
    """A support.Conn look-alike for the flows: SSL with a client certificate, no SASL."""

    def __init__(self, tc, client: Client):
        self.tc, self.client, self.errors = tc, client, []
        self.bootstrap = tc.bootstrap

    def confluent(self, _mechanism: str = "", **extra) -> dict:
        return {**confluent_ssl(self.tc, self.client), "error_cb": self.errors.append, **extra}

    def kafka_python(self, **extra) -> dict:
        return {"bootstrap_servers": self.tc.bootstrap, "client_id": "tollgate-e2e",
                "security_protocol": "SSL", "ssl_cafile": self.tc.ca,
                "ssl_certfile": str(self.client.cert), "ssl_keyfile": str(self.client.key), **extra}


def test_a_bound_certificate_produces_and_consumes_without_sasl(mtls):
    _, _, _, clients = mtls
    _, tc = bound_tenant(mtls, "alice")
    flow_confluent(SslConn(tc, clients["alice"]), "orders", "g-mtls", "confluent-mtls", idempotent=True)
    flow_kafka_python(SslConn(tc, clients["alice"]), "orders-kp", "g-mtls-kp", "kafka-python-mtls")


def test_expired_revoked_and_foreign_certificates_fail_the_handshake(mtls):
    s, ca, _, clients = mtls
    # Their principals are bound, so only the certificates themselves can fail them.
    bound_tenant(mtls, "old", "gone")
    for name in ("expired", "revoked", "foreign"):
        assert not served(s.bootstrap, ca.pem, clients[name]), f"{name} certificate was served"
    # A client without a certificate is not refused at the handshake: it may still do SASL.
    host, port = s.bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with tls_context(ca.pem, None).wrap_socket(raw, server_hostname=host) as tls:
            assert api_versions(tls)[:2] == b"\0\0"


def test_an_unbound_principal_is_refused_and_the_principal_is_the_mapped_one(mtls):
    s, ca, _, clients = mtls
    admin, tc = bound_tenant(mtls)
    assert not served(s.bootstrap, ca.pem, clients["unbound"])
    # Bound by its mapped name ("nobody", lower case, from RULE), it is served.
    admin._ok("POST", f"/v1/clusters/{tc.cluster_id}/certificate-principals",
              {"principal": "nobody", "policy": policy(tc.tenant, tc.cluster_name)})
    assert served(s.bootstrap, ca.pem, clients["unbound"])
    # One principal, one cluster: another cluster cannot bind it too.
    _, other = bound_tenant(mtls)
    status, body = admin.request("POST", f"/v1/clusters/{other.cluster_id}/certificate-principals",
                                 {"principal": "nobody", "policy": policy(other.tenant, other.cluster_name)})
    assert status == 409 and "bound to cluster" in str(body), body


def test_unbinding_closes_a_live_connection(mtls):
    s, ca, _, clients = mtls
    admin, tc = bound_tenant(mtls, "bob")
    with live_session(s.bootstrap, ca.pem, clients["bob"]) as tls:
        admin._ok("DELETE", f"/v1/clusters/{tc.cluster_id}/certificate-principals/bob")
        unbound = time.monotonic()
        assert closed_within(tls, 6), "the unbound principal's connection stayed open"
        assert time.monotonic() - unbound <= 5
    assert not served(s.bootstrap, ca.pem, clients["bob"])


def test_a_rewritten_crl_is_honoured_within_seconds(mtls):
    """A list published while the gateway runs refuses the newly revoked certificate's new
    handshakes and closes its live connection (the files are looked at every 2 s, an idle
    connection checks every 2 s)."""
    s, ca, crl, clients = mtls
    bound_tenant(mtls, "carol")
    assert served(s.bootstrap, ca.pem, clients["carol"])
    with live_session(s.bootstrap, ca.pem, clients["carol"]) as live:
        ca.revoke(clients["carol"].cert)
        ca.publish_crl(crl)
        published = time.monotonic()
        assert closed_within(live, 8), "the revoked certificate's live connection stayed open"
        assert time.monotonic() - published <= 6
    wait_until(lambda: not served(s.bootstrap, ca.pem, clients["carol"]), 15,
               "the newly revoked certificate refused")
