"""Every bad-input case of the gateway answers in the documented error shape."""

import time

import httpx
import jwt
import pytest

from tests.conftest import MAX_BODY_BYTES, Platform


def assert_error_shape(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "timestamp", "request_id"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    assert body["request_id"] == response.headers["x-request-id"]
    return body


def test_unknown_route_is_404_in_the_error_shape(platform: Platform) -> None:
    with platform.client(platform.admin_key) as client:
        response = client.get("/v1/does-not-exist")

    assert_error_shape(response, 404, "NOT_FOUND")


def test_malformed_json_is_422_naming_the_body(platform: Platform) -> None:
    with platform.client(platform.admin_key) as client:
        response = client.post(
            "/v1/keys", content=b"{not json", headers={"content-type": "application/json"}
        )

    body = assert_error_shape(response, 422, "VALIDATION_ERROR")
    assert body["error"]["details"]["field"] == "body"


def test_wrong_type_is_422_naming_the_field(platform: Platform) -> None:
    with platform.client(platform.admin_key) as client:
        response = client.post("/v1/keys", json={"name": "x", "scopes": "admin"})

    body = assert_error_shape(response, 422, "VALIDATION_ERROR")
    assert body["error"]["details"]["field"] == "scopes"


def test_missing_field_is_422_naming_the_field(platform: Platform) -> None:
    with platform.client(platform.admin_key) as client:
        response = client.post("/v1/tenants", json={"tier": "free"})

    body = assert_error_shape(response, 422, "VALIDATION_ERROR")
    assert body["error"]["details"]["field"] == "name"


def test_body_over_the_limit_is_413(platform: Platform) -> None:
    payload = b'{"name": "' + b"x" * (MAX_BODY_BYTES + 10) + b'"}'
    with platform.client(platform.admin_key) as client:
        declared = client.post(
            "/v1/keys", content=payload, headers={"content-type": "application/json"}
        )
        streamed = client.post(
            "/v1/keys",
            content=(payload[i : i + 8192] for i in range(0, len(payload), 8192)),
            headers={"content-type": "application/json"},
        )

    assert_error_shape(declared, 413, "PAYLOAD_TOO_LARGE")
    assert_error_shape(streamed, 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer mlk_0123456789ab_" + "x" * 40,
        "Bearer not-a-token",
    ],
)
def test_missing_or_invalid_credentials_are_401(
    platform: Platform, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with platform.client() as client:
        response = client.get("/v1/usage", headers=headers)

    body = assert_error_shape(response, 401, "UNAUTHORIZED")
    assert "mlk_" not in response.text or authorization is None or "x" * 40 not in response.text
    assert body["error"]["details"] == {}


def _claims(platform: Platform, key: str) -> dict:
    with platform.client() as client:
        token = client.post("/v1/auth/token", json={"api_key": key}).json()["access_token"]
    return jwt.decode(token, options={"verify_signature": False})


@pytest.mark.parametrize("forgery", ["expired", "tampered", "alg-none", "wrong-secret"])
def test_bad_jwts_are_401(platform: Platform, forgery: str) -> None:
    _, key = platform.new_tenant()
    claims = _claims(platform, key)
    secret = (platform.home / "jwt_secret").read_text().strip()
    if forgery == "expired":
        token = jwt.encode(
            {**claims, "iat": int(time.time()) - 100, "exp": int(time.time()) - 10}, secret, "HS256"
        )
    elif forgery == "tampered":
        good = jwt.encode(claims, secret, "HS256")
        header, _, signature = good.split(".")
        payload = jwt.utils.base64url_encode(
            b'{"sub":"%s","tenant":"ten_other"}' % claims["sub"].encode()
        )
        token = f"{header}.{payload.decode()}.{signature}"
    elif forgery == "alg-none":
        token = jwt.encode(claims, None, algorithm="none")
    else:
        token = jwt.encode(claims, "a-different-secret-of-enough-length-123", "HS256")

    with platform.client(token) as client:
        response = client.get("/v1/usage")

    assert_error_shape(response, 401, "UNAUTHORIZED")


def test_revoked_key_and_its_tokens_are_401_on_every_replica(platform: Platform) -> None:
    _, key = platform.new_tenant()
    with platform.client(key) as client:
        token = client.post("/v1/auth/token").json()["access_token"]
        key_id = client.get("/v1/keys").json()["keys"][0]["id"]
        assert client.delete(f"/v1/keys/{key_id}").status_code == 200

        after = [client.get("/v1/usage") for _ in range(6)]
    with platform.client(token) as client:
        with_token = client.get("/v1/usage")

    for response in [*after, with_token]:
        assert_error_shape(response, 401, "UNAUTHORIZED")


def test_another_tenants_key_is_404_and_invisible(platform: Platform) -> None:
    _, key_a = platform.new_tenant()
    _, key_b = platform.new_tenant()
    with platform.client(key_a) as client:
        key_a_id = client.get("/v1/keys").json()["keys"][0]["id"]

    with platform.client(key_b) as client:
        deleted = client.delete(f"/v1/keys/{key_a_id}")
        listed = client.get("/v1/keys").json()
        missing = client.delete("/v1/keys/key_doesnotexist0")

    body = assert_error_shape(deleted, 404, "NOT_FOUND")
    assert body["error"]["message"] == assert_error_shape(missing, 404, "NOT_FOUND")["error"][
        "message"
    ].replace("key_doesnotexist0", key_a_id)
    assert key_a_id not in {k["id"] for k in listed["keys"]}
    with platform.client(key_a) as client:
        assert client.post("/v1/auth/token").status_code == 200, "the key was not revoked"


def test_tenant_routes_need_the_admin_scope(platform: Platform) -> None:
    _, key = platform.new_tenant()

    with platform.client(key) as client:
        listing = client.get("/v1/tenants")
        creating = client.post("/v1/tenants", json={"name": "sneaky"})
        admin_key = client.post("/v1/keys", json={"scopes": ["admin"]})

    assert_error_shape(listing, 403, "FORBIDDEN")
    assert_error_shape(creating, 403, "FORBIDDEN")
    assert_error_shape(admin_key, 403, "FORBIDDEN")


def test_a_token_cannot_renew_itself(platform: Platform) -> None:
    _, key = platform.new_tenant()
    with platform.client(key) as client:
        token = client.post("/v1/auth/token").json()["access_token"]
    with platform.client(token) as client:
        usage = client.get("/v1/usage")
        renewal = client.post("/v1/auth/token")

    assert usage.status_code == 200
    assert_error_shape(renewal, 401, "UNAUTHORIZED")


def test_a_body_field_named_like_a_location_keeps_its_name() -> None:
    from serve_apps.gateway.app import _field_of

    assert _field_of(("body", "query")) == "query"
    assert _field_of(("body", "items", 0, "path")) == "items.0.path"
    assert _field_of(("query", "k")) == "k"
    assert _field_of(("body",)) == "body"
