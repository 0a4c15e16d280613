"""The coordinator as a named, detached Ray actor, created on demand by the gateway."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import ray

from mlaas.errors import MlaasError

log = logging.getLogger("mlaas.federated")
NAMESPACE = "mlaas"
TICK_S = 0.2


def actor_name(pool_id: str) -> str:
    return f"federated:{pool_id}"


@ray.remote(num_cpus=0.05, max_restarts=-1, max_task_retries=0)
class CoordinatorActor:
    """Runs a ``PoolCoordinator``; every call returns ``{"result"}`` or ``{"error"}`` (so
    refusals cross the actor boundary as data, not as wrapped exceptions)."""

    def __init__(self, pool_id: str, database_url: str, artifacts_dir: str | None,
                 tick_s: float = TICK_S) -> None:
        from federated._coordinator import PoolCoordinator
        from mlaas.db import node_database_url

        self.core = PoolCoordinator(pool_id, node_database_url(database_url), artifacts_dir)
        self.tick_s = tick_s
        threading.Thread(target=self._run, daemon=True, name="coordinator-tick").start()

    def _run(self) -> None:
        while True:
            time.sleep(self.tick_s)
            try:
                self.core.tick()
            except Exception:  # keep ticking; the round in trouble ends at its deadline
                log.exception("coordinator tick failed")

    def call(self, method: str, *args: Any) -> dict[str, Any]:
        try:
            return {"result": getattr(self.core, method)(*args)}
        except MlaasError as exc:
            return {"error": {"type": type(exc).__name__, "status": exc.status_code,
                              "code": exc.code, "message": exc.message,
                              "details": exc.details}}


def coordinator_for(pool_id: str, database_url: str, artifacts_dir: str | None, *,
                    placement: dict[str, Any] | None = None) -> Any:
    """The pool's coordinator actor, created when it does not exist (or died for good).

    Args:
        placement: extra actor options (``mlaas.placement.platform_actor_options``).
    """
    return CoordinatorActor.options(  # type: ignore[attr-defined]
        name=actor_name(pool_id), namespace=NAMESPACE, lifetime="detached",
        get_if_exists=True, max_concurrency=64,  # long polls wait in threads
        **(placement or {}),
    ).remote(pool_id, _shareable(database_url), artifacts_dir)


def _shareable(database_url: str) -> str | None:
    from mlaas.db import shareable_database_url

    return shareable_database_url(database_url)
