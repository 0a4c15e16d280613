"""A crash inside a route: 500 in the documented shape, with the request id, no trace, no secret."""

import httpx
import pytest

from serve_apps.gateway.app import create_app
from serve_apps.gateway.middleware import GatewayMiddleware

SECRET = "mlk_0123456789ab_THIS-IS-A-SECRET-THAT-MUST-NOT-LEAK"


def crashing_app() -> GatewayMiddleware:
    app = create_app()

    @app.get("/v1/explode")
    async def explode() -> dict:
        raise RuntimeError(f"database password={SECRET}")

    return GatewayMiddleware(app, max_body_bytes=1024)


@pytest.mark.parametrize("client_request_id", [None, "client-chosen-id-42"])
async def test_crash_in_a_route_is_a_clean_500(client_request_id: str | None) -> None:
    headers = {"x-request-id": client_request_id} if client_request_id else {}
    transport = httpx.ASGITransport(app=crashing_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.get("/v1/explode", headers=headers)

    assert response.status_code == 500
    body = response.json()
    assert body["error"]["code"] == "INTERNAL_ERROR"
    assert body["request_id"] == response.headers["x-request-id"]
    if client_request_id:
        assert body["request_id"] == client_request_id
    assert SECRET not in response.text
    assert "Traceback" not in response.text and "RuntimeError" not in response.text


async def test_crash_is_logged_with_the_request_id_and_the_secret_redacted(
    capfd: pytest.CaptureFixture[str],
) -> None:
    transport = httpx.ASGITransport(app=crashing_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.get("/v1/explode")

    logged = capfd.readouterr().err
    assert response.headers["x-request-id"] in logged
    assert "RuntimeError" in logged
    assert SECRET not in logged
