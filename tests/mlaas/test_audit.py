"""The audit log of key and tenant actions, the read-only scope, and keys only minted by keys
(issue 14); on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlaas import accounts, audit
from mlaas.audit import HOST_OPERATOR, Actor
from mlaas.auth import Principal, RouteRefusedError, authenticate, authorize, issue_token
from mlaas.errors import ForbiddenError, NotFoundError, ValidationError

SECRET = "k9Jd83hf-Qm2Lp0Zx7Vb4Nc6Rt1Ys5Wu8Ea3Gi0Ok2Hq"


def _principal(*scopes: str, via_token: bool = False) -> Principal:
    return Principal(tenant_id="ten_a", tier="free", key_id="key_a", scopes=frozenset(scopes),
                     is_admin_tenant=False, via_token=via_token)


def test_key_and_tenant_actions_are_recorded_with_their_actor_newest_first(
    database_url: str,
) -> None:
    # Prepare
    admin = Actor(tenant_id="ten_admin", key_id="key_admin", credential="key",
                  request_id="req_1")

    # Execute
    tenant = accounts.create_tenant(database_url, "acme", tier="pro", actor=admin)
    info, _ = accounts.create_key(database_url, tenant.id, scopes=("read-only",), actor=admin)
    accounts.revoke_key(database_url, info.id)
    events = audit.list_events(database_url)

    # Assert
    assert [(e.action, e.target, e.outcome, e.status) for e in events] == [
        ("key.revoke", info.id, "ok", 200),
        ("key.create", info.id, "ok", 201),
        ("tenant.create", tenant.id, "ok", 201),
    ]
    revoke, create, _ = events
    assert (create.actor_tenant_id, create.actor_key_id, create.credential,
            create.request_id) == ("ten_admin", "key_admin", "key", "req_1")
    assert create.target_tenant_id == tenant.id and create.detail == "scopes read-only"
    assert (revoke.actor_tenant_id, revoke.credential) == (None, "host")  # the default actor


def test_events_filter_by_tenant_acting_or_concerned_and_by_action(database_url: str) -> None:
    # Prepare: the operator makes two tenants, a tenant's own key acts on the first
    first = accounts.create_tenant(database_url, "first", tier="free")
    second = accounts.create_tenant(database_url, "second", tier="free")
    own = Actor(tenant_id=first.id, key_id="key_x", credential="key")
    info, _ = accounts.create_key(database_url, first.id, actor=own)

    # Execute
    of_first = audit.list_events(database_url, tenant_id=first.id)
    of_second = audit.list_events(database_url, tenant_id=second.id)
    creations = audit.list_events(database_url, action="key.create")
    newest = audit.list_events(database_url, limit=1)

    # Assert
    assert [e.action for e in of_first] == ["key.create", "tenant.create"]
    assert [(e.action, e.target) for e in of_second] == [("tenant.create", second.id)]
    assert [e.target for e in creations] == [info.id]
    assert [e.target for e in newest] == [info.id]


def test_a_change_whose_audit_row_cannot_be_written_is_not_made(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    tenant = accounts.create_tenant(database_url, "acme", tier="free")

    def unwritable(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("audit table unavailable")

    monkeypatch.setattr(audit, "add", unwritable)

    # Execute
    with pytest.raises(RuntimeError, match="audit table unavailable"):
        accounts.create_key(database_url, tenant.id, name="lost")

    # Assert
    assert [k.name for k in accounts.list_keys(database_url, tenant.id)] == []


def test_a_refusal_is_recorded_with_its_status(database_url: str) -> None:
    # Prepare
    caller = Actor(tenant_id="ten_a", key_id="key_a", credential="token", request_id="req_9")
    refusal = ForbiddenError("Creating or revoking API keys needs an API key, not a token")

    # Execute
    written = audit.record_refusal(database_url, caller, audit.KEY_CREATE, refusal,
                                   target_tenant_id="ten_a")
    missing = audit.record_refusal(database_url, caller, audit.KEY_REVOKE,
                                   NotFoundError("Key 'key_b' not found"), target="key_b")

    # Assert
    assert written and missing
    revoke, create = audit.list_events(database_url)
    assert (create.outcome, create.status, create.credential, create.request_id) == (
        "refused", 403, "token", "req_9")
    assert create.detail is not None and "needs an API key" in create.detail
    assert (revoke.action, revoke.target, revoke.status) == ("key.revoke", "key_b", 404)


def test_a_refusal_that_cannot_be_recorded_does_not_raise(tmp_path: Path) -> None:
    # Prepare: a database without the audit table
    url = f"sqlite:///{tmp_path / 'unmigrated.db'}"

    # Execute
    written = audit.record_refusal(url, HOST_OPERATOR, audit.KEY_CREATE, ForbiddenError("no"))

    # Assert
    assert written is False


def test_a_listing_limit_out_of_range_is_refused(database_url: str) -> None:
    with pytest.raises(ValidationError, match="limit must be between 1 and 1000"):
        audit.list_events(database_url, limit=0)


def test_a_read_only_key_is_created_alone(database_url: str) -> None:
    # Prepare
    tenant = accounts.create_tenant(database_url, "acme", tier="free")

    # Execute
    info, key = accounts.create_key(database_url, tenant.id, scopes=("read-only",))
    with pytest.raises(ValidationError, match="read-only cannot be combined"):
        accounts.create_key(database_url, tenant.id, scopes=("read-only", "tenant"))

    # Assert
    assert info.scopes == ("read-only",)
    assert authenticate(database_url, f"Bearer {key}", SECRET).scopes == {"read-only"}


@pytest.mark.parametrize("method, route", [
    ("GET", "/v1/models"),
    ("GET", "/v1/train/{job_id}/status"),
    ("POST", "/v1/predict"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/knowledge/query"),
])
def test_a_read_only_key_may_read_and_predict(method: str, route: str) -> None:
    authorize(_principal("read-only"), method, route, {})


@pytest.mark.parametrize("method, route", [
    ("POST", "/v1/train"),
    ("POST", "/v1/keys"),
    ("DELETE", "/v1/keys/{key_id}"),
    ("POST", "/v1/batch_predict"),
    ("POST", "/v1/models/{model_id}/versions/{version}/stage"),
    ("DELETE", "/v1/knowledge/documents/{document_id}"),
    ("POST", "/v1/federated/pools"),
    ("GET", "/v1/federated/pools/{pool_id}/round"),  # a node's poll marks it ready
])
def test_a_read_only_key_may_not_write(method: str, route: str) -> None:
    principal = _principal("read-only")

    with pytest.raises(RouteRefusedError, match="read-only key") as refused:
        authorize(principal, method, route, {})

    assert refused.value.status_code == 403 and refused.value.principal is principal
    assert refused.value.details["reason"] == "scope"


@pytest.mark.parametrize("method, route", [("POST", "/v1/keys"), ("DELETE", "/v1/keys/{key_id}")])
def test_a_token_may_not_create_or_revoke_keys_but_its_key_may(method: str, route: str) -> None:
    with pytest.raises(RouteRefusedError, match="needs an API key, not a token") as refused:
        authorize(_principal("tenant", via_token=True), method, route, {})

    assert refused.value.details["reason"] == "token"
    authorize(_principal("tenant"), method, route, {})


def test_a_principal_knows_it_came_from_a_token(database_url: str) -> None:
    # Prepare
    tenant = accounts.create_tenant(database_url, "acme", tier="free")
    _, key = accounts.create_key(database_url, tenant.id)
    by_key = authenticate(database_url, f"Bearer {key}", SECRET)
    token, _ = issue_token(by_key, SECRET, ttl_s=60)

    # Execute
    by_token = authenticate(database_url, f"Bearer {token}", SECRET)

    # Assert
    assert (by_key.via_token, by_token.via_token) == (False, True)
    assert Actor.of(by_token).credential == "token" and Actor.of(by_key).credential == "key"
