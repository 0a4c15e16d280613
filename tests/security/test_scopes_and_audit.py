"""Key scopes and the audit log through the real platform (issue 14): a read-only key reads
and predicts but changes nothing, a token cannot mint or revoke keys while its key can, and
key and tenant actions are in the audit log (``GET /v1/audit``, ``mlaas audit``)."""

from __future__ import annotations

import json
import secrets
from typing import Any

import httpx

from tests.conftest import Platform
from tests.serve_apps.inference.conftest import post_until, register_tiny_mlp


def _forbidden(response: httpx.Response) -> dict[str, Any]:
    """The documented error shape of a 403."""
    assert response.status_code == 403, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "timestamp", "request_id"}
    assert body["error"]["code"] == "FORBIDDEN"
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def _token(platform: Platform, key: str) -> str:
    with platform.client(key) as client:
        response = client.post("/v1/auth/token")
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def _key_id(platform: Platform, key: str) -> tuple[str, str]:
    """(tenant id, key id) of a key, from its tenant's key listing (matched by prefix)."""
    prefix = key.removeprefix("mlk_").split("_", 1)[0]
    with platform.client(key) as client:
        keys = client.get("/v1/keys").json()["keys"]
    (match,) = [k for k in keys if k["prefix"] == prefix]
    return match["tenant_id"], match["id"]


def test_a_read_only_key_reads_and_predicts_but_cannot_write(platform: Platform) -> None:
    # Prepare: a tenant with a model, and a read-only key its tenant key creates
    tenant_id, key = platform.new_tenant("pro")
    register_tiny_mlp(platform.database_url, platform.storage, tenant_id, "tiny-ro",
                      stage="production")
    with platform.client(key) as client:
        created = client.post("/v1/keys", json={"name": "dashboard", "scopes": ["read-only"]})
    assert created.status_code == 201, created.text
    read_only = created.json()

    # Execute
    with platform.client(read_only["key"]) as client:
        models = client.get("/v1/models")
        predicted = post_until(client, "/v1/predict",
                               {"model": "tiny-ro", "inputs": [[0.0, 1.0]]},
                               lambda r: r.status_code != 503)
        training = client.post("/v1/train", json={"model": "x", "dataset": "y"})
        minting = client.post("/v1/keys", json={"name": "escalate", "scopes": ["tenant"]})
        revoking = client.delete(f"/v1/keys/{read_only['id']}")

    # Assert
    assert read_only["scopes"] == ["read-only"]
    assert models.status_code == 200, models.text
    assert "tiny-ro" in models.text
    assert predicted.status_code == 200, predicted.text
    refused = _forbidden(training)
    assert refused["error"]["details"]["reason"] == "scope"
    assert "read-only" in refused["error"]["message"]
    _forbidden(minting)
    _forbidden(revoking)


def test_a_token_cannot_create_or_revoke_keys_while_its_key_can(platform: Platform) -> None:
    # Prepare
    _, key = platform.new_tenant()
    token = _token(platform, key)
    with platform.client(key) as client:
        victim = client.post("/v1/keys", json={"name": "victim"}).json()

    # Execute
    with platform.client(token) as by_token:
        minted = by_token.post("/v1/keys", json={"name": "lasting"})
        revoked_by_token = by_token.delete(f"/v1/keys/{victim['id']}")
        listed = by_token.get("/v1/keys")
    with platform.client(key) as by_key:
        minted_by_key = by_key.post("/v1/keys", json={"name": "by-key"})
        revoked_by_key = by_key.delete(f"/v1/keys/{victim['id']}")

    # Assert
    for refusal in (minted, revoked_by_token):
        body = _forbidden(refusal)
        assert "needs an API key, not a token" in body["error"]["message"]
        assert body["error"]["details"]["reason"] == "token"
    assert listed.status_code == 200  # the token still reads
    assert "lasting" not in {k["name"] for k in listed.json()["keys"]}
    assert minted_by_key.status_code == 201, minted_by_key.text
    assert revoked_by_key.status_code == 200 and revoked_by_key.json()["revoked"] is True


def test_tenant_and_key_actions_are_in_the_audit_log_for_admins_only(platform: Platform) -> None:
    # Prepare: an admin creates a tenant; its key creates, a token tries to create, its key
    # revokes
    admin_tenant_id, admin_key_id = _key_id(platform, platform.admin_key)
    with platform.client(platform.admin_key) as admin:
        made = admin.post("/v1/tenants", json={"name": f"audited-{secrets.token_hex(4)}"})
    assert made.status_code == 201, made.text
    tenant_id, key = made.json()["id"], made.json()["api_key"]["key"]
    _, key_id = _key_id(platform, key)
    with platform.client(key) as client:
        created = client.post("/v1/keys", json={"name": "audited"})
        revoked = client.delete(f"/v1/keys/{created.json()['id']}")
        not_admin = client.get("/v1/audit")
    with platform.client(_token(platform, key)) as by_token:
        refused = by_token.post("/v1/keys", json={"name": "by-token"})

    # Execute
    with platform.client(platform.admin_key) as admin:
        listed = admin.get("/v1/audit", params={"tenant_id": tenant_id})
        revocations = admin.get("/v1/audit",
                                params={"tenant_id": tenant_id, "action": "key.revoke"})

    # Assert: newest first, each with who, what, outcome, status and request id
    assert listed.status_code == 200, listed.text
    seen = [(e["action"], e["actor_tenant_id"], e["actor_key_id"], e["credential"],
             e["target"], e["outcome"], e["status"], e["request_id"])
            for e in listed.json()["events"]]
    assert seen == [
        ("key.create", tenant_id, key_id, "token", None, "refused", 403,
         refused.headers["x-request-id"]),
        ("key.revoke", tenant_id, key_id, "key", created.json()["id"], "ok", 200,
         revoked.headers["x-request-id"]),
        ("key.create", tenant_id, key_id, "key", created.json()["id"], "ok", 201,
         created.headers["x-request-id"]),
        ("key.create", admin_tenant_id, admin_key_id, "key", key_id, "ok", 201,
         made.headers["x-request-id"]),
        ("tenant.create", admin_tenant_id, admin_key_id, "key", tenant_id, "ok", 201,
         made.headers["x-request-id"]),
    ]
    assert [e["action"] for e in revocations.json()["events"]] == ["key.revoke"]
    _forbidden(not_admin)


def test_mlaas_audit_prints_the_log(platform: Platform) -> None:
    # Prepare
    tenant_id, key = platform.new_tenant()
    with platform.client(key) as client:
        created = client.post("/v1/keys", json={"name": "printed"})
    assert created.status_code == 201, created.text

    # Execute
    table = platform.cli("audit", "--tenant", tenant_id)
    lines = platform.cli("audit", "--tenant", tenant_id, "--json")

    # Assert
    assert table.returncode == 0, table.stderr
    assert "tenant.create" in table.stdout and "key.create" in table.stdout
    assert "outcome" in table.stdout and "request id" in table.stdout
    assert lines.returncode == 0, lines.stderr
    events = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [(e["action"], e["outcome"]) for e in events] == [
        ("key.create", "ok"), ("key.create", "ok"), ("tenant.create", "ok")]
    assert events[0]["target"] == created.json()["id"]
    assert events[0]["request_id"] == created.headers["x-request-id"]
