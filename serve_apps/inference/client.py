"""The gateway's side of the ``inference`` application: calls through deployment handles,
with the replica's errors raised again as themselves and backpressure as a 503."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
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


class PredictCoalescer:
    """Predictions of one gateway replica, coalesced per version.

    At most ``in_flight`` calls per version are out at a time; the requests that arrive
    meanwhile wait and go together in the next call (``Inference.predict_many``: one forward,
    each request's outputs its own), up to ``max_rows`` rows per call. A lone request goes out
    at once; under load one round trip to the model replica answers many requests instead of
    each paying its own (the round trip, not the forward, is most of a small model's cost).
    """

    def __init__(
        self,
        send: Callable[[dict[str, Any], list[Any]], Awaitable[list[dict[str, Any]]]],
        *,
        in_flight: int = 2,
        max_rows: int = 1024,
    ) -> None:
        self._send = send
        self.in_flight = in_flight
        self.max_rows = max_rows
        self._queues: dict[str, list[tuple[Any, asyncio.Future[dict[str, Any]]]]] = {}
        self._specs: dict[str, dict[str, Any]] = {}
        self._busy: dict[str, int] = {}
        self._drains: set[asyncio.Task[None]] = set()  # held: the loop keeps weak references

    async def predict(self, spec: dict[str, Any], rows: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        key = spec["id"]
        self._queues.setdefault(key, []).append((rows, future))
        self._specs[key] = spec
        if self._busy.get(key, 0) < self.in_flight:
            self._busy[key] = self._busy.get(key, 0) + 1
            drain = loop.create_task(self._drain(key))
            self._drains.add(drain)
            drain.add_done_callback(self._drains.discard)
        return await future

    def _take(self, key: str) -> list[tuple[Any, asyncio.Future[dict[str, Any]]]]:
        queue = self._queues[key]
        taken, rows = 1, len(queue[0][0])
        while taken < len(queue) and rows + len(queue[taken][0]) <= self.max_rows:
            rows += len(queue[taken][0])
            taken += 1
        batch, self._queues[key] = queue[:taken], queue[taken:]
        return batch

    async def _drain(self, key: str) -> None:
        try:
            while self._queues.get(key):
                batch = self._take(key)
                try:
                    results = await self._send(self._specs[key], [rows for rows, _ in batch])
                except asyncio.CancelledError:  # the replica is shutting down
                    for _, future in batch + self._queues.pop(key, []):
                        future.cancel()
                    raise
                except Exception as error:  # each caller sees the failure as its own
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._busy[key] -= 1
            if not self._busy[key]:
                del self._busy[key]
                if not self._queues.get(key):
                    self._queues.pop(key, None)
                    self._specs.pop(key, None)


class InferenceClient:
    """One per gateway replica; handles are made on first use (the app may start later)."""

    def __init__(self, app_name: str = APP_NAME) -> None:
        self.app_name = app_name
        self._handles: dict[str, Any] = {}
        self._predictions = PredictCoalescer(self._predict_many)

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
        """Outputs of a version for a float32 array of rows (routed to a replica holding it;
        coalesced with this replica's other requests for the version)."""
        return await self._predictions.predict(spec, rows)

    async def _predict_many(self, spec: dict[str, Any], blocks: list[Any]) -> list[dict[str, Any]]:
        return await self._call(  # type: ignore[no-any-return]
            INFERENCE, "predict_many", spec, blocks, model_id=spec["id"]
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
