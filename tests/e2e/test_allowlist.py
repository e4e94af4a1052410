"""Network allowlists (issue 14; CONTRACT "Security": cluster field `allowed_cidrs`) against a real
`tollgate dev` stack, with a real second source address: Linux routes all of 127.0.0.0/8 to the
loopback interface, so a client can connect from 127.0.0.2 as well as 127.0.0.1. A cluster that
allows only 127.0.0.2/32 refuses a client from 127.0.0.1 at authentication (told its own address
and nothing more), serves one from 127.0.0.2, and another tenant on the same gateway is not
touched.
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from support import RawKafka

SASL_AUTHENTICATION_FAILED = 58


def test_a_cluster_allows_only_its_networks(admin, new_tenant):
    tc, other = new_tenant(), new_tenant()
    status, body = admin.request("PATCH", f"/v1/clusters/{tc.cluster_id}",
                                 {"allowed_cidrs": ["127.0.0.2/32"]})
    assert status == 200, body
    assert body["allowed_cidrs"] == ["127.0.0.2/32"]

    code, message = RawKafka.refused(tc.bootstrap, tc.token, source="127.0.0.1")
    assert code == SASL_AUTHENTICATION_FAILED, (code, message)
    assert message == "the cluster does not accept connections from 127.0.0.1 (its allowed_cidrs)"
    with RawKafka(tc.bootstrap, tc.token, source="127.0.0.2") as raw:
        raw.request(18, 0, b"")  # answered: ApiVersions after authentication
    # A real client from 127.0.0.1 gets nothing.
    client = AdminClient(tc.conn().confluent())
    with pytest.raises(KafkaException):
        client.list_topics(timeout=10)

    # Another tenant's cluster has no list: served from either address.
    for source in ("127.0.0.1", "127.0.0.2"):
        with RawKafka(other.bootstrap, other.token, source=source) as raw:
            raw.request(18, 0, b"")

    # Lifted: served from anywhere again.
    status, body = admin.request("PATCH", f"/v1/clusters/{tc.cluster_id}", {"allowed_cidrs": None})
    assert status == 200 and body["allowed_cidrs"] is None, body
    with RawKafka(tc.bootstrap, tc.token, source="127.0.0.1") as raw:
        raw.request(18, 0, b"")

    # A list no address matches is refused whole, and a bad entry changes nothing.
    status, body = admin.request("PATCH", f"/v1/clusters/{tc.cluster_id}",
                                 {"allowed_cidrs": ["10.0.0.0/8", "300.1.2.3/32"]})
    assert status == 400 and "300.1.2.3/32" in str(body), body
    with RawKafka(tc.bootstrap, tc.token, source="127.0.0.1") as raw:
        raw.request(18, 0, b"")


def proxy_v2(client_ip: str, client_port: int = 40000) -> bytes:
    """A PROXY protocol v2 header (PROXY command, TCP over IPv4) naming `client_ip`."""
    import socket
    import struct

    block = socket.inet_aton(client_ip) + socket.inet_aton("127.0.0.1") + struct.pack(">HH", client_port, 9092)
    return b"\r\n\r\n\0\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack(">H", len(block)) + block


def test_proxy_headers_name_the_client_only_from_trusted_balancers(stack_factory):
    """`--proxy-protocol optional --proxy-trusted-cidrs 127.0.0.1/32`: the "load balancer" is a
    client on 127.0.0.1 sending a PROXY v2 header; a client on 127.0.0.3 forging one is not
    believed. The cluster allows only 127.0.0.2, the address the trusted header names."""
    from conftest import make_tenant
    from support import Admin

    s = stack_factory(("--proxy-protocol", "optional", "--proxy-trusted-cidrs", "127.0.0.1/32"))
    admin = Admin(s.admin_url, s.admin_token)
    tc = make_tenant(s, admin)
    status, body = admin.request("PATCH", f"/v1/clusters/{tc.cluster_id}",
                                 {"allowed_cidrs": ["127.0.0.2/32"]})
    assert status == 200, body
    # Through the trusted balancer, for a client at 127.0.0.2: served.
    with RawKafka(tc.bootstrap, tc.token, source="127.0.0.1", prefix=proxy_v2("127.0.0.2")) as raw:
        raw.request(18, 0, b"")
    # Through the balancer for a client elsewhere: refused, naming that client.
    code, message = RawKafka.refused(tc.bootstrap, tc.token, source="127.0.0.1",
                                     prefix=proxy_v2("192.0.2.9"))
    assert (code, message) == (SASL_AUTHENTICATION_FAILED,
                               "the cluster does not accept connections from 192.0.2.9 (its allowed_cidrs)")
    # The balancer's own connection without a header (optional): the balancer's address.
    code, message = RawKafka.refused(tc.bootstrap, tc.token, source="127.0.0.1")
    assert "from 127.0.0.1 " in message, (code, message)
    # An untrusted peer forging a header is not believed: its bytes are not Kafka, and the
    # connection is closed without an answer.
    with pytest.raises((ConnectionError, OSError, AssertionError)):
        RawKafka(tc.bootstrap, tc.token, timeout=10, source="127.0.0.3", prefix=proxy_v2("127.0.0.2"))
