"""Creating a pool: check its spec, then register its first global model (version 1).

A pool that scores contributions names its validation set: ``builtin:<name>``, or a CSV /
Parquet file in the tenant's data folder (never another file of the server). It is read
once here, so a spec whose set is missing or does not fit the model is refused at creation.

A spec may carry ``owner_key``, the owner's Ed25519 public key (base64) that signs every
roster entry; it is kept on the pool, not in its spec, and never changes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from federated import _model, _store
from federated._data import load_local_data
from federated._spec import parse_pool_spec
from federated.errors import PoolSpecError
from mlaas import registry
from mlaas.errors import ConflictError, ValidationError, without_server_paths

VALIDATION_FIELD = "contribution_scoring.validation_data"


def create_pool(url: str, artifacts_dir: Path, tenant_id: str, raw: Any,
                data_dir: Path | None = None,
                admit: Callable[[int], None] | None = None) -> dict[str, Any]:
    """A new pool with its initial model registered as version 1 of ``spec.name``.

    Args:
        data_dir: the tenant's data folder, where a validation file must lie.
        admit: checks the tenant's number of open pools as the pool is written
            (:func:`federated._store.create_pool`); raises to refuse.

    Raises:
        PoolSpecError: the spec is invalid or cannot be secure (the reason says the fix), or
            its ``owner_key`` is not a base64 Ed25519 public key.
        ConflictError: the tenant already has a model of that name.

    The model is reserved for the pool (``registry.reserve_model``): a training job or any
    other registration under its name, or deleting one of its versions, is refused (409).
    """
    owner_key = _owner_key(raw)
    if isinstance(raw, dict) and "owner_key" in raw:
        raw = {k: v for k, v in raw.items() if k != "owner_key"}
    spec = parse_pool_spec(raw).model_dump(mode="json")
    if spec.get("contribution_scoring"):
        spec["contribution_scoring"]["validation_data"] = _checked_validation(spec, data_dir)
    # The pool's row first, counted against the tier as it is written; then its model
    pool = _store.create_pool(url, tenant_id, spec, owner_key=owner_key, admit=admit)
    try:  # the model is the pool's alone: nobody else registers under its name or deletes
        registry.reserve_model(url, tenant_id, spec["name"], pool["id"])
    except ConflictError:
        _store.delete_pool(url, pool["id"])
        raise ConflictError(
            f"A model named {spec['name']!r} exists already; give the pool another name",
            details={"field": "name"}) from None
    version = _model.register(
        url, artifacts_dir, tenant_id=tenant_id, spec=spec, model=_model.build(spec),
        metrics={"federated": {"pool_id": pool["id"], "round": 0, "participants": 0,
                               "epsilon_spent": 0.0}, "round": 0, "epsilon_spent": 0.0})
    assert version.version == 1
    return pool


def _owner_key(raw: Any) -> str | None:
    """The spec's optional ``owner_key``, once it is a base64 Ed25519 public key."""
    owner_key = raw.get("owner_key") if isinstance(raw, dict) else None
    if owner_key is None:
        return None
    try:
        _store.check_owner_key(owner_key if isinstance(owner_key, str) else "")
    except ValidationError as exc:
        raise PoolSpecError("owner_key", exc.message + "; or leave it out and set it with "
                            "`mlaas federated owner-key`") from None
    return str(owner_key)


def _checked_validation(spec: dict[str, Any], data_dir: Path | None) -> str:
    """The validation source, a file made absolute, once it is read and fits the model."""
    scoring, model = spec["contribution_scoring"], spec["model"]
    source = str(scoring["validation_data"])
    if not source.startswith("builtin:"):
        path = Path(source).expanduser()
        folder = data_dir.resolve() if data_dir is not None else None
        resolved = (path if path.is_absolute() or folder is None else folder / path).resolve()
        if folder is None or not resolved.is_relative_to(folder):
            raise PoolSpecError(VALIDATION_FIELD, "must be builtin:<name> or a file in your "
                                f"data folder (got {source})")
        source = str(resolved)
    try:
        x, y = load_local_data(source, target=scoring["validation_target"])
    except ValidationError as exc:  # its message names the file, in the server's data folder
        named = {str(folder): "<your data folder>"} if folder is not None else {}
        raise PoolSpecError(VALIDATION_FIELD, without_server_paths(exc.message, named)) from None
    if x.ndim != 2 or x.shape[1] != model["num_features"] or len(y) == 0:
        raise PoolSpecError(VALIDATION_FIELD, f"needs rows of {model['num_features']} "
                            f"features (got shape {list(x.shape)})")
    if y.min() < 0 or y.max() >= model["num_classes"]:
        raise PoolSpecError(VALIDATION_FIELD, f"labels must be 0 .. {model['num_classes'] - 1}")
    return source
