"""A platform actor that died, restarts, is unreachable or cannot be placed is a 503 with
Retry-After in the documented shape, never a 500: Ray's errors raised into the gateway's app
(built without Ray), through the admission path of a real route, and from the providers app."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from ray import exceptions as ray_errors

from mlaas.errors import MlaasError
from mlaas.settings import REPO_ROOT, Settings
from mlaas.tiers import load_tiers
from serve_apps.gateway.app import create_app
from serve_apps.gateway.context import GatewayContext
from serve_apps.gateway.middleware import GatewayMiddleware
from serve_apps.providers.client import _unwrapped

RAY_ERRORS: dict[str, Callable[[], Exception]] = {
    "actor_error": lambda: ray_errors.RayActorError(),
    "actor_died": lambda: ray_errors.ActorDiedError(),
    "actor_unavailable": lambda: ray_errors.ActorUnavailableError("node unreachable", None),
    "unschedulable": lambda: ray_errors.ActorUnschedulableError("no node has mlaas_state"),
    "get_timeout": lambda: ray_errors.GetTimeoutError("ray.get timed out"),
    # What a task raises when an actor it called died: Ray's class of both errors.
    "task_on_dead_actor": lambda: ray_errors.RayTaskError(
        "consume", "Traceback ...", ray_errors.ActorDiedError()
    ).as_instanceof_cause(),
}


class FakeAdmission:
    """An admission actor handle whose every ``admit_many`` call runs ``answer``."""

    def __init__(self, answer: Callable[[], Any]) -> None:
        self.answer = answer

        class _Method:
            @staticmethod
            def remote(*_: Any) -> Any:
                return self.answer()

        self.admit_many = _Method()


def gateway_client(tmp_path: Path, admission: Any, **settings: Any) -> TestClient:
    app = create_app()
    app.state.ctx = GatewayContext(
        settings=Settings(home=tmp_path, **settings),
        database_url=f"sqlite:///{tmp_path / 'mlaas.db'}",
        jwt_secret="s" * 48,
        tiers=load_tiers(REPO_ROOT / "configs" / "tiers.yaml"),
        admission=admission,
        applications=(),
    )
    app.add_middleware(GatewayMiddleware, max_body_bytes=1024)
    return TestClient(app, raise_server_exceptions=False)


def assert_unavailable(response: Any) -> dict[str, Any]:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "2"
    body = response.json()
    assert set(body) == {"error", "timestamp", "request_id"}
    assert body["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert body["request_id"] == response.headers["x-request-id"]
    return body  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", sorted(RAY_ERRORS))
def test_a_ray_actor_error_in_a_route_is_503_with_retry_after(tmp_path: Path, kind: str) -> None:
    client = gateway_client(tmp_path, admission=None)

    @client.app.get("/raise")  # type: ignore[attr-defined, untyped-decorator]
    async def _raise() -> None:
        raise RAY_ERRORS[kind]()

    response = client.get("/raise")

    body = assert_unavailable(response)
    assert body["error"]["details"] == {"reason": "actor_unavailable"}


def test_an_admission_actor_that_died_makes_health_503_not_500(tmp_path: Path) -> None:
    async def died() -> None:
        raise ray_errors.ActorDiedError()

    client = gateway_client(tmp_path, FakeAdmission(died))

    response = client.get("/health")

    assert_unavailable(response)


def test_an_admission_actor_that_does_not_answer_is_503_after_the_timeout(
    tmp_path: Path,
) -> None:
    async def silent() -> None:
        await asyncio.Event().wait()  # never answers: its node is gone, Ray has not noticed

    client = gateway_client(tmp_path, FakeAdmission(silent), actor_call_timeout_s=0.2)

    response = client.get("/health")

    body = assert_unavailable(response)
    assert body["error"]["details"] == {"reason": "admission_timeout"}


def test_the_providers_app_failing_on_a_dead_state_actor_is_a_503_to_retry() -> None:
    wrapped = RAY_ERRORS["task_on_dead_actor"]()

    error = _unwrapped(wrapped)

    assert isinstance(error, MlaasError)
    assert (error.status_code, error.code) == (503, "SERVICE_UNAVAILABLE")
    assert error.headers == {"Retry-After": "2"}
