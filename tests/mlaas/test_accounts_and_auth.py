import time

import jwt
import pytest
from sqlalchemy import select

from mlaas import accounts
from mlaas.auth import authenticate, issue_token
from mlaas.db import ApiKey, session_scope
from mlaas.errors import ConflictError, UnauthorizedError, ValidationError

SECRET = "k9Jd83hf-Qm2Lp0Zx7Vb4Nc6Rt1Ys5Wu8Ea3Gi0Ok2Hq"


@pytest.fixture
def db(database_url: str) -> str:
    return database_url


def test_key_is_stored_only_as_a_hash(db: str) -> None:
    tenant = accounts.create_tenant(db, "acme", tier="free")

    info, key = accounts.create_key(db, tenant.id)

    with session_scope(db) as session:
        row = session.scalar(select(ApiKey).where(ApiKey.id == info.id))
    assert key not in (row.key_hash, row.prefix)
    assert row.key_hash == accounts.hash_key(key)
    assert key.startswith(f"mlk_{row.prefix}_")


def test_key_and_token_authenticate_until_revoked(db: str) -> None:
    tenant = accounts.create_tenant(db, "acme", tier="pro")
    info, key = accounts.create_key(db, tenant.id)
    principal = authenticate(db, f"Bearer {key}", SECRET)
    token, _ = issue_token(principal, SECRET, ttl_s=60)

    assert authenticate(db, f"Bearer {token}", SECRET).tenant_id == tenant.id
    assert principal.tier == "pro"

    accounts.revoke_key(db, info.id)

    with pytest.raises(UnauthorizedError, match="revoked"):
        authenticate(db, f"Bearer {key}", SECRET)
    with pytest.raises(UnauthorizedError, match="revoked"):
        authenticate(db, f"Bearer {token}", SECRET)


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(
            lambda c: jwt.encode(c, "another-secret-another-secret-32b", "HS256"), id="wrong-key"
        ),
        pytest.param(lambda c: jwt.encode(c, None, algorithm="none"), id="alg-none"),
        pytest.param(
            lambda c: jwt.encode({**c, "exp": int(time.time()) - 5}, SECRET, "HS256"), id="expired"
        ),
        pytest.param(lambda c: jwt.encode(c, SECRET, "HS256")[:-4] + "AAAA", id="tampered"),
        pytest.param(
            lambda c: jwt.encode({k: v for k, v in c.items() if k != "exp"}, SECRET, "HS256"),
            id="no-exp",
        ),
    ],
)
def test_bad_tokens_are_refused(db: str, make_token) -> None:  # type: ignore[no-untyped-def]
    tenant = accounts.create_tenant(db, "acme", tier="free")
    info, _ = accounts.create_key(db, tenant.id)
    now = int(time.time())
    claims = {
        "iss": "mlaas",
        "sub": info.id,
        "tenant": tenant.id,
        "scopes": ["tenant"],
        "iat": now,
        "exp": now + 60,
    }

    with pytest.raises(UnauthorizedError):
        authenticate(db, f"Bearer {make_token(claims)}", SECRET)


def test_token_of_one_tenant_cannot_claim_another(db: str) -> None:
    a = accounts.create_tenant(db, "a", tier="free")
    b = accounts.create_tenant(db, "b", tier="free")
    info, _ = accounts.create_key(db, a.id)
    now = int(time.time())
    forged = jwt.encode(
        {
            "iss": "mlaas",
            "sub": info.id,
            "tenant": b.id,
            "scopes": ["admin"],
            "iat": now,
            "exp": now + 60,
        },
        SECRET,
        "HS256",
    )

    with pytest.raises(UnauthorizedError):
        authenticate(db, f"Bearer {forged}", SECRET)


def test_token_never_grants_more_scopes_than_its_key(db: str) -> None:
    tenant = accounts.create_tenant(db, "a", tier="free")
    info, _ = accounts.create_key(db, tenant.id)
    now = int(time.time())
    token = jwt.encode(
        {
            "iss": "mlaas",
            "sub": info.id,
            "tenant": tenant.id,
            "scopes": ["admin", "tenant"],
            "iat": now,
            "exp": now + 60,
        },
        SECRET,
        "HS256",
    )

    principal = authenticate(db, f"Bearer {token}", SECRET)

    assert principal.scopes == frozenset({"tenant"})
    assert not principal.is_admin


def test_admin_scope_only_for_the_admin_tenant(db: str) -> None:
    tenant = accounts.create_tenant(db, "plain", tier="free")

    with pytest.raises(ValidationError):
        accounts.create_key(db, tenant.id, scopes=("admin",))


def test_duplicate_tenant_name_is_a_conflict_and_writes_nothing(db: str) -> None:
    accounts.create_tenant(db, "acme", tier="free")

    with pytest.raises(ConflictError):
        accounts.create_tenant(db, "acme", tier="pro")

    assert [t.tier for t in accounts.list_tenants(db)] == ["free"]


@pytest.mark.parametrize(
    "header", [None, "", "Basic abc", "Bearer ", "Bearer mlk_short", "Bearer garbage"]
)
def test_malformed_credentials_are_refused(db: str, header: str | None) -> None:
    with pytest.raises(UnauthorizedError):
        authenticate(db, header, SECRET)
