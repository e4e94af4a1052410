"""The admin API's contract (CONTRACT.md, "Admin API"): authentication, error shapes, and the
fields a cluster and a token come back with."""

from __future__ import annotations

import re
import urllib.request
import uuid
from datetime import datetime, timezone

from support import Admin, policy, unique

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]00:00)$")


def error_code(body) -> str:
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"not an error body: {body!r}"
    assert isinstance(body["error"].get("code"), str) and isinstance(body["error"].get("message"), str), body
    return body["error"]["code"]


def test_healthz_needs_no_token(stack):
    with urllib.request.urlopen(stack.admin_url + "/healthz", timeout=10) as resp:
        assert resp.status == 200


def test_requests_without_the_admin_token_are_refused(admin: Admin):
    status, body = admin.request("GET", "/v1/tenants", auth=False)
    assert status == 401, (status, body)
    error_code(body)
    status, body = admin.request("POST", "/v1/tenants", {"id": unique("t"), "name": "x"}, token="wrong")
    assert status == 401, (status, body)
    error_code(body)
    # A tenant's Kafka token is not an admin token either.
    tenant = unique("t", 12)
    admin.create_tenant(tenant)
    cluster = admin.create_cluster(tenant, unique("c", 8))
    jwt = admin.create_token(cluster["id"], "svc", policy(tenant, cluster["name"]), 60)["token"]
    status, body = admin.request("GET", "/v1/tenants", token=jwt)
    assert status in (401, 403), (status, body)


def test_tenant_validation_and_conflicts(admin: Admin):
    for bad in ("Upper", "", "x" * 33, "under_score", "a/b"):
        status, body = admin.request("POST", "/v1/tenants", {"id": bad, "name": "x"})
        assert status == 400, (bad, status, body)
        error_code(body)
    tenant = unique("t", 12)
    status, body = admin.request("POST", "/v1/tenants", {"id": tenant, "name": "First"})
    assert status == 201, (status, body)
    status, body = admin.request("POST", "/v1/tenants", {"id": tenant, "name": "Again"})
    assert status == 409, (status, body)
    error_code(body)
    status, body = admin.request("GET", f"/v1/tenants/{tenant}")
    assert status == 200 and body["id"] == tenant, (status, body)
    status, body = admin.request("GET", f"/v1/tenants/{unique('t', 12)}")
    assert status == 404, (status, body)


def test_cluster_fields_and_limits(admin: Admin, stack):
    tenant = unique("t", 12)
    admin.create_tenant(tenant)
    name = unique("c", 8)
    status, c = admin.request("POST", "/v1/clusters", {"tenant": tenant, "name": name})
    assert status == 201, (status, c)
    assert {"id", "tenant", "name", "arn", "bootstrap", "max_message_bytes", "created_at"} <= set(c), c
    uuid.UUID(c["id"])
    assert c["tenant"] == tenant and c["name"] == name
    assert c["max_message_bytes"] == 1048576
    assert re.fullmatch(rf"arn:tollgate:kafka:[^:]+:{tenant}:cluster/{name}/{c['id']}", c["arn"]), c["arn"]
    assert c["bootstrap"] == stack.bootstrap, c["bootstrap"]
    assert RFC3339.match(c["created_at"]), c["created_at"]

    status, got = admin.request("GET", f"/v1/clusters/{c['id']}")
    assert status == 200 and got["id"] == c["id"], (status, got)
    status, listed = admin.request("GET", f"/v1/clusters?tenant={tenant}")
    assert status == 200, (status, listed)
    items = listed if isinstance(listed, list) else next(v for v in listed.values() if isinstance(v, list))
    assert [x["id"] for x in items] == [c["id"]], listed

    status, body = admin.request("POST", "/v1/clusters",
                                 {"tenant": tenant, "name": unique("c", 8), "max_message_bytes": 10485760})
    assert status == 201 and body["max_message_bytes"] == 10485760, (status, body)
    status, body = admin.request("POST", "/v1/clusters",
                                 {"tenant": tenant, "name": unique("c", 8), "max_message_bytes": 10485761})
    assert status == 400, (status, body)
    error_code(body)
    status, body = admin.request("POST", "/v1/clusters", {"tenant": unique("t", 12), "name": unique("c", 8)})
    assert status in (400, 404), (status, body)

    status, _ = admin.request("DELETE", f"/v1/clusters/{c['id']}")
    assert status in (200, 204), status
    status, _ = admin.request("GET", f"/v1/clusters/{c['id']}")
    assert status == 404


def test_token_fields_and_policy_validation(admin: Admin):
    tenant = unique("t", 12)
    admin.create_tenant(tenant)
    cluster = admin.create_cluster(tenant, unique("c", 8))
    status, tok = admin.request("POST", "/v1/tokens", {"cluster": cluster["id"], "principal": "svc",
                                                        "policy": policy(tenant, cluster["name"]),
                                                        "ttl_seconds": 600})
    assert status == 201, (status, tok)
    assert tok["token"].count(".") == 2
    assert RFC3339.match(tok["expires_at"]), tok["expires_at"]
    expires = datetime.fromisoformat(tok["expires_at"].replace("Z", "+00:00"))
    left = (expires - datetime.now(timezone.utc)).total_seconds()
    assert 0 < left <= 600 + 5, left

    bad_policy = {"Version": "2012-10-17",
                  "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}
    status, body = admin.request("POST", "/v1/tokens", {"cluster": cluster["id"], "principal": "svc",
                                                         "policy": bad_policy, "ttl_seconds": 600})
    assert status == 400, (status, body)
    error_code(body)
    status, body = admin.request("POST", "/v1/tokens", {"cluster": str(uuid.uuid4()), "principal": "svc",
                                                         "policy": policy(tenant, cluster["name"]),
                                                         "ttl_seconds": 600})
    assert status in (400, 404), (status, body)
