"""The ``inference`` Serve application: one deployment that serves any registered version.

Versions are multiplexed by version id (an LRU of ``max_models_per_replica`` loaded models per
replica) and requests are dynamically batched per version with ``@serve.batch``. The gateway
hands each request the version spec it resolved, so replicas never read the database; they
load weights from the artifact store. Autoscaling and queue limits are in
``configs/serve/mlaas.yaml``; a full queue is refused by the caller's handle, not queued forever.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any, Literal, Protocol, cast

import numpy as np
from pydantic import BaseModel, Field
from ray import serve

from mlaas.cluster_mode import require_cluster_ready_in_replica
from mlaas.errors import ServiceUnavailableError
from mlaas.logs import get_logger
from serve_apps.inference.runners import (
    ArtifactUnavailable,
    Runner,
    load_runner,
    resolve_device,
    shape_outputs,
)

log = get_logger("mlaas.inference")


class InferenceArgs(BaseModel):
    """Application arguments (``args:`` of the ``inference`` app in the Serve config)."""

    settings: dict[str, Any] = Field(default_factory=dict, description="Overrides of MLAAS_")
    max_models_per_replica: int = Field(default=4, ge=1, description="LRU size of loaded models")
    max_batch_size: int = Field(default=32, ge=1, description="Requests per dynamic batch")
    batch_wait_timeout_s: float = Field(default=0.002, ge=0, le=1)
    torch_threads: int = Field(default=1, ge=1, description="Intra-op threads per replica")
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="Where models run: auto is cuda when the replica holds a GPU (num_gpus)",
    )
    embeddings: bool = Field(default=True, description="Also deploy the MiniLM embedder")
    demo_model: bool = Field(
        default=True, description="Register digits-demo@production for the admin tenant"
    )


class _BatchedForward(Protocol):
    """What ``@serve.batch`` makes of ``Inference._forward_batch``: one request's arguments in,
    its own result out, plus the setters Serve attaches to the wrapper."""

    async def __call__(self, runner: Runner, rows: np.ndarray) -> np.ndarray: ...

    def set_max_batch_size(self, new_max_batch_size: int) -> None: ...

    def set_batch_wait_timeout_s(self, new_batch_wait_timeout_s: float) -> None: ...


def _batched(
    *, max_batch_size: int, batch_wait_timeout_s: float
) -> Callable[[Callable[..., Any]], _BatchedForward]:
    """``serve.batch`` typed for a method batching two arguments, which Ray's stub does not
    describe (it knows one batched argument and none of the setters)."""
    decorator = serve.batch(
        max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s
    )
    return cast(Callable[[Callable[..., Any]], _BatchedForward], decorator)


@serve.deployment(
    name="Inference",
    ray_actor_options={"num_cpus": 0.25},
    max_ongoing_requests=64,
    max_queued_requests=256,
)
class Inference:
    """Loads versions on demand (LRU per replica) and answers batched predictions."""

    def __init__(self, args: dict[str, Any] | None = None, embedder: Any = None) -> None:
        parsed = InferenceArgs.model_validate(args or {})
        os.environ.setdefault("OMP_NUM_THREADS", str(parsed.torch_threads))
        import torch

        torch.set_num_threads(parsed.torch_threads)
        # Resolved now: a replica asked for cuda without one fails to start, not at first predict.
        self.device = resolve_device(parsed.device)
        from mlaas.settings import Settings

        self._settings = Settings(**parsed.settings)  # storage and cache of this node
        # The demo registration writes to the database; versions come from the storage.
        require_cluster_ready_in_replica(self._settings, checks=("database", "storage"))
        self._specs: dict[str, dict[str, Any]] = {}
        self._embedder = embedder

        async def load(version_id: str) -> Runner:
            return await self._load(version_id)

        # Built here, not as a class decorator, so the LRU size comes from the config.
        self._load_fn = load  # Serve keeps its LRU wrapper on this function
        self._model = serve.multiplexed(max_num_models_per_replica=parsed.max_models_per_replica)(
            load
        )
        self._forward_batch.set_max_batch_size(parsed.max_batch_size)
        self._forward_batch.set_batch_wait_timeout_s(parsed.batch_wait_timeout_s)
        self.loads = 0
        if parsed.demo_model:
            self._start_demo_registration(parsed)

    @staticmethod
    def _start_demo_registration(parsed: InferenceArgs) -> None:
        import threading

        from mlaas.settings import Settings
        from serve_apps.inference.demo import register_demo_when_admin_exists

        settings = Settings(**parsed.settings)
        threading.Thread(
            target=register_demo_when_admin_exists,
            args=(settings.resolved_database_url, settings),
            name="demo-model",
            daemon=True,
        ).start()

    async def _load(self, version_id: str) -> Runner:
        spec = self._specs.get(version_id)
        if spec is None:
            raise ServiceUnavailableError(f"No spec was sent for version {version_id}")
        try:
            runner = await asyncio.to_thread(load_runner, spec, self._settings, self.device)
        except ArtifactUnavailable as exc:
            log.warning("model unavailable", extra={"fields": {"version": version_id}})
            raise ServiceUnavailableError(
                str(exc), details={"model_version_id": version_id, "reason": "artifact"}
            ) from None
        self.loads += 1
        log.info("model loaded", extra={"fields": {"version": version_id, "device": self.device}})
        return runner

    async def runner(self, spec: dict[str, Any]) -> Runner:
        self._specs[spec["id"]] = spec
        return await self._model(spec["id"])  # type: ignore[no-any-return]

    async def predict(self, spec: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
        """Outputs (and classes with probabilities for classifiers) of one request's rows.

        Raises:
            ServiceUnavailableError: the version's files are missing or corrupt.
        """
        runner = await self.runner(spec)
        outputs = await self._forward_batch(runner, rows)
        return shape_outputs(outputs, spec.get("output_schema") or {})

    async def predict_many(
        self, spec: dict[str, Any], blocks: list[np.ndarray]
    ) -> list[dict[str, Any]]:
        """:meth:`predict` for several requests' rows of one version in one call (a gateway
        replica coalesces the requests that arrive while its last call is in flight): one
        forward over all of them, each request's outputs shaped on its own."""
        runner = await self.runner(spec)
        merged = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
        outputs = await self._forward_batch(runner, merged)
        schema = spec.get("output_schema") or {}
        shaped, start = [], 0
        for block in blocks:
            shaped.append(shape_outputs(outputs[start : start + len(block)], schema))
            start += len(block)
        return shaped

    async def predict_raw(self, spec: dict[str, Any], rows: np.ndarray) -> np.ndarray:
        """Raw outputs of a large block of rows, in one forward (batch jobs call this)."""
        runner = await self.runner(spec)
        return await asyncio.to_thread(runner.predict, rows)

    @_batched(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _forward_batch(
        self, runners: list[Runner], blocks: list[np.ndarray]
    ) -> list[np.ndarray]:
        # One forward per distinct version in the batch: requests of a version share it.
        results: list[np.ndarray | None] = [None] * len(blocks)
        groups: dict[int, list[int]] = {}
        for index, runner in enumerate(runners):
            groups.setdefault(id(runner), []).append(index)
        for indices in groups.values():
            merged = np.concatenate([blocks[i] for i in indices])
            outputs = await asyncio.to_thread(runners[indices[0]].predict, merged)
            start = 0
            for i in indices:
                results[i] = outputs[start : start + len(blocks[i])]
                start += len(blocks[i])
        return results  # type: ignore[return-value]

    async def loaded_models(self) -> dict[str, Any]:
        """The replica's loaded version ids (most recently used last) and load count."""
        wrapper = getattr(self._load_fn, "__serve_multiplex_wrapper", None)
        ids = list(wrapper.models.keys()) if wrapper is not None else []
        return {
            "replica": serve.get_replica_context().replica_id.unique_id,
            "loaded": ids,
            "loads": self.loads,
        }


def app_builder(args: dict[str, Any]) -> Any:
    """Serve application builder for ``import_path: serve_apps.inference:app_builder``."""
    parsed = InferenceArgs.model_validate(args or {})
    if parsed.embeddings:
        from serve_apps.embeddings.deployment import Embedder

        # mypy ignores a class decorator's result (python/mypy#3135): these are Deployments.
        return Inference.bind(args, Embedder.bind(args))  # type: ignore[attr-defined]
    return Inference.bind(args)  # type: ignore[attr-defined]
