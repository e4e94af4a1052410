"""TLS and SASL towards the pool (issue 14; CONTRACT "Security": `--pool-tls-ca`,
`--pool-sasl-mechanism`, `--pool-sasl-username`, `--pool-sasl-password`).

The pool here is a Kafka endpoint that requires both: another Tollgate (`tollgate dev` with
TLS), whose cluster has a SCRAM-SHA-512 user. tansu 0.6 cannot serve as one (its `--cert` and
`--key` flags exclude each other, and with `--authentication` it offers no mechanism a client
can bootstrap a SCRAM user with), and no Apache Kafka runs here; the outer gateway is a real
TLS server and SCRAM verifier all the same, and the gateway under test cannot tell it from a
broker. A `tollgate serve` on that pool serves a tenant end to end; with a wrong password or
without the pool's CA it reaches no broker and says why.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import Stack, gateway_binary, make_tenant, start_dev_stack
from support import Admin, policy
from test_clients import flow_confluent
from test_scram import scram_user
from test_tls import make_ca, make_server_cert


@pytest.fixture(scope="module")
def secure_pool(request):
    """A TLS + SCRAM Kafka endpoint: (its stack, CA file, (mechanism, user, password))."""
    d = Path(tempfile.mkdtemp(prefix="tollgate-e2e-pool-tls-"))
    ca = make_ca(d)
    cert, key = make_server_cert(d, "pool")
    outer = start_dev_stack(("--tls-cert", str(cert), "--tls-key", str(key)), "the secure pool (tollgate dev with TLS)")
    try:
        admin = Admin(outer.admin_url, outer.admin_token)
        tc = make_tenant(outer, admin)
        yield outer, ca, scram_user(admin, tc, "SCRAM-SHA-512")
    finally:
        problems = outer.finish(keep=False)
        shutil.rmtree(d, ignore_errors=True)
        assert not problems, problems


def serve_on(outer, *args: str, label: str) -> Stack:
    # Every lane of the outer gateway is a broker of the pool; it serves each partition on any.
    return Stack(gateway_binary(), mode="serve", pool_bootstrap=",".join(outer.nodes),
                 extra_args=("--pool-kind", "stateless", *args), label=label)


def test_a_gateway_serves_tenants_on_a_pool_that_requires_tls_and_scram(secure_pool):
    outer, ca, (mechanism, user, password) = secure_pool
    inner = serve_on(outer, "--pool-tls-ca", str(ca), "--pool-sasl-mechanism", mechanism,
                     "--pool-sasl-username", user, "--pool-sasl-password", password,
                     label="tollgate serve over TLS and SCRAM").start()
    ok = False
    try:
        inner.wait_ready()
        tc = make_tenant(inner, Admin(inner.admin_url, inner.admin_token))
        flow_confluent(tc.conn(), "orders", "g-pool-tls", "pool-tls-scram", idempotent=True)
        # Its pool connections are the outer gateway's SCRAM user's; the password is in no log.
        assert password not in (inner.stdout_path.read_text() + inner.stderr_path.read_text())
        ok = True
    finally:
        problems = inner.finish(keep=not ok)
    assert not problems, problems


@pytest.mark.parametrize("what", ["wrong password", "no CA"])
def test_without_the_right_credentials_it_reaches_no_broker_and_says_why(secure_pool, what):
    outer, ca, (mechanism, user, password) = secure_pool
    args = {"wrong password": ("--pool-tls-ca", str(ca), "--pool-sasl-mechanism", mechanism,
                               "--pool-sasl-username", user, "--pool-sasl-password", password + "x"),
            "no CA": ("--pool-sasl-mechanism", mechanism, "--pool-sasl-username", user,
                      "--pool-sasl-password", password)}[what]
    says = {"wrong password": "SASL SCRAM-SHA-512: refused (error 58): authentication failed",
            "no CA": "the broker answered with TLS; give its CA with --pool-tls-ca"}[what]
    inner = serve_on(outer, *args, label=f"tollgate serve, {what}").start()
    try:
        # No broker of the pool answers, so the start fails, naming each broker and why.
        assert inner.proc.wait(timeout=60) == 1
        logged = inner.stderr_path.read_text()
        assert logged.count(says) == len(outer.nodes), logged[-3000:]
        assert "no pool broker answered" in logged
        assert password not in logged
    finally:
        inner.finish(keep=False)
