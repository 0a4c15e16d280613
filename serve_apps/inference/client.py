"""The gateway's side of the ``inference`` application: calls through deployment handles,
with the replica's errors raised again as themselves and backpressure as a 503."""

from __future__ import annotations

from typing import Any

from mlaas.errors import MlaasError, ServiceUnavailableError

APP_NAME = "inference"
INFERENCE = "Inference"
EMBEDDER = "Embedder"
RETRY_AFTER_S = "1"


def _unwrapped(error: Exception, what: str) -> Exception:
    from ray.serve.exceptions import BackPressureError

    cause = getattr(error, "cause", None)
    if isinstance(cause, MlaasError):
        return cause
    if isinstance(error, BackPressureError):
        return ServiceUnavailableError(
            f"The {what} queue is full; retry after a moment",
            details={"application": APP_NAME, "reason": "backpressure"},
            headers={"Retry-After": RETRY_AFTER_S},
        )
    return ServiceUnavailableError(
        f"The {what} deployment failed ({type(error).__name__}); retry, or see `mlaas status`",
        details={"application": APP_NAME},
        headers={"Retry-After": RETRY_AFTER_S},
    )


class InferenceClient:
    """One per gateway replica; handles are made on first use (the app may start later)."""

    def __init__(self, app_name: str = APP_NAME) -> None:
        self.app_name = app_name
        self._handles: dict[str, Any] = {}

    def handle(self, deployment: str) -> Any:
        if deployment not in self._handles:
            from ray import serve

            self._handles[deployment] = serve.get_deployment_handle(
                deployment, app_name=self.app_name
            )
        return self._handles[deployment]

    async def _call(self, deployment: str, method: str, *args: Any, model_id: str = "") -> Any:
        """Call a replica; every method here only reads, so a call whose replica died under
        it (its node lost) goes once more, to a replica the router still has."""
        from ray.exceptions import RayActorError

        handle = self.handle(deployment)
        if model_id:
            handle = handle.options(multiplexed_model_id=model_id)
        for attempt in (1, 2):
            try:
                return await getattr(handle, method).remote(*args)
            except MlaasError:
                raise
            except RayActorError:
                if attempt == 2:
                    raise _unwrapped(RuntimeError("replica lost"), deployment) from None
            except Exception as error:  # Ray wraps what the replica raised
                raise _unwrapped(error, deployment) from None
        raise AssertionError("unreachable")

    async def predict(self, spec: dict[str, Any], rows: Any) -> dict[str, Any]:
        """Outputs of a version for a float32 array of rows (routed to a replica holding it)."""
        return await self._call(  # type: ignore[no-any-return]
            INFERENCE, "predict", spec, rows, model_id=spec["id"]
        )

    async def predict_raw(self, spec: dict[str, Any], rows: Any) -> Any:
        return await self._call(INFERENCE, "predict_raw", spec, rows, model_id=spec["id"])

    async def loaded_models(self) -> dict[str, Any]:
        return await self._call(INFERENCE, "loaded_models")  # type: ignore[no-any-return]

    async def embed(self, texts: list[str]) -> dict[str, Any]:
        return await self._call(EMBEDDER, "embed", texts)  # type: ignore[no-any-return]


def version_spec(version: Any) -> dict[str, Any]:
    """What a replica needs of a registered version to load and shape its outputs."""
    return {
        "id": version.id,
        "framework": version.framework,
        "architecture": version.architecture,
        "artifact_uri": version.artifact_uri,
        "output_schema": version.output_schema,
    }


inference_client = InferenceClient()
