"""Creating a pool: check its spec, then register its first global model (version 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from federated import _model, _store
from federated._spec import parse_pool_spec
from mlaas import registry
from mlaas.errors import ConflictError, NotFoundError


def create_pool(url: str, artifacts_dir: Path, tenant_id: str, raw: Any) -> dict[str, Any]:
    """A new pool with its initial model registered as version 1 of ``spec.name``.

    Raises:
        PoolSpecError: the spec is invalid or cannot be secure (the reason says the fix).
        ConflictError: the tenant already has a model of that name.
    """
    spec = parse_pool_spec(raw).model_dump(mode="json")
    try:
        registry.list_versions(url, tenant_id, spec["name"])
    except NotFoundError:
        pass
    else:
        raise ConflictError(
            f"A model named {spec['name']!r} exists already; give the pool another name",
            details={"field": "name"})
    pool = _store.create_pool(url, tenant_id, spec)
    version = _model.register(
        url, artifacts_dir, tenant_id=tenant_id, spec=spec, model=_model.build(spec),
        metrics={"federated": {"pool_id": pool["id"], "round": 0, "participants": 0,
                               "epsilon_spent": 0.0}, "round": 0, "epsilon_spent": 0.0})
    assert version.version == 1
    return pool
