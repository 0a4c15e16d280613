"""AI-enhanced training: what the AI providers do for a job before it trains.

With ``ai_enhancement`` in the spec, the job driver asks the provider router (the
``providers`` Serve application, as the gateway does) for

- **synthetic rows** fitted on the training split only and added to it; the validation split
  is never seen by a provider and never changed, so both runs are measured on the same rows;
- **values for the settings the spec left open** (``open_fields``: learning rate, batch size,
  weight decay, layer sizes, dropout), applied to the enhanced run only.

The job then trains once without the enhancement (``compare``) and once with it, and records
both runs' validation metrics. Calls are made for the job's tenant, so the router's budget,
breakers and cost accounting apply as for ``/v1/ai/*``. The router is reached through its
Serve deployment handle (this package depends on ``mlaas`` only), so a job on a cluster without
the platform's ``providers`` application is refused with that reason.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from cluster.data import PreparedData
from cluster.errors import TrainingFailed
from cluster.spec import AIEnhancementSpec, JobSpec, validate_spec
from mlaas.errors import MlaasError, without_server_paths
from mlaas.storage import synthetic_key

DEFAULT_SHARE = 0.5  # synthetic rows by default: half the training split...
DEFAULT_CAP = 10_000  # ...at most this many
ROWS_SENT = 2_000  # training rows the synthetic-data provider fits on, at most
CALL_TIMEOUT_S = 300.0
ENDPOINT = "/v1/models/train"


class Providers(Protocol):
    """The router calls an enhancement makes (``ProviderRouter``'s methods)."""

    def configured(self) -> set[str]: ...

    def synthetic_data(self, request: dict[str, Any], tenant: dict[str, Any]) -> dict[str, Any]: ...

    def training_settings(
        self, request: dict[str, Any], tenant: dict[str, Any]
    ) -> dict[str, Any]: ...

    def read_dataset(self, tenant_id: str, dataset_id: str) -> bytes: ...


class RouterProviders:
    """The platform's provider router, through a Serve deployment handle."""

    def __init__(self, handle: Any, storage: Any) -> None:
        self.handle, self.storage = handle, storage

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self.handle, method).remote(*args).result(timeout_s=CALL_TIMEOUT_S)
        except MlaasError:
            raise
        except Exception as exc:  # noqa: BLE001 - Ray wraps what the router raised
            cause = getattr(exc, "cause", None)
            if isinstance(cause, MlaasError):
                raise cause from None
            raise TrainingFailed(
                f"the providers application failed ({type(exc).__name__})"
            ) from None

    def configured(self) -> set[str]:
        status = self._call("status")["service_status"]
        return {name for name, s in status.items() if s["status"] == "configured"}

    def synthetic_data(self, request: dict[str, Any], tenant: dict[str, Any]) -> dict[str, Any]:
        return self._call("synthetic_data", request, tenant)  # type: ignore[no-any-return]

    def training_settings(
        self, request: dict[str, Any], tenant: dict[str, Any]
    ) -> dict[str, Any]:
        return self._call("training_settings", request, tenant)  # type: ignore[no-any-return]

    def read_dataset(self, tenant_id: str, dataset_id: str) -> bytes:
        return self.storage.get_bytes(synthetic_key(tenant_id, dataset_id))  # type: ignore[no-any-return]


def providers_for(storage: Any) -> Providers:
    """The platform's provider router.

    Raises:
        TrainingFailed: the job runs on a cluster without the platform's providers application.
    """
    import ray

    try:
        if not ray.is_initialized():  # Serve would start or join some cluster by itself
            raise LookupError("not connected to a Ray cluster")
        from ray import serve

        handle = serve.get_deployment_handle("ProviderRouter", app_name="providers")
        # The driver calls it synchronously (`.result()`), which needs the handle's router
        # on a loop of its own; Serve's throughput-optimized mode (the platform's default
        # ingress, inherited from the node's environment) runs it in the caller's loop.
        handle._init(_run_router_in_separate_loop=True)
    except Exception:  # noqa: BLE001 - no Serve instance, or no providers application
        raise TrainingFailed(
            "AI enhancement needs the platform's providers application: run the job on a "
            "cluster started with `mlaas up` (or the RayService), or leave ai_enhancement out"
        ) from None
    return RouterProviders(handle, storage)


@dataclass
class Enhancement:
    """The enhanced run's spec and data, and what was done to get them."""

    spec: JobSpec
    data: PreparedData
    summary: dict[str, Any] = field(default_factory=dict)


def enhance(
    spec: JobSpec, data: PreparedData, providers: Providers, tenant: dict[str, Any]
) -> Enhancement:
    """Synthetic rows added to the training split, then suggested values for open settings.

    Raises:
        TrainingFailed: a provider step failed (the message says which, and why).
    """
    enhancement = spec.ai_enhancement
    assert enhancement is not None
    prefer = next((p for p in enhancement.providers if p in providers.configured()), None)
    summary: dict[str, Any] = {"scheduled": enhancement.scheduled(), "preferred_provider": prefer}
    if enhancement.synthetic_rows != 0:
        data, summary["synthetic_data"] = _step(
            "synthetic_data_generation",
            lambda: _add_synthetic_rows(spec, data, providers, tenant, prefer),
        )
    open_fields = enhancement.open_fields or []
    if enhancement.suggest_settings and open_fields:
        spec, summary["settings"] = _step(
            "settings", lambda: _apply_settings(spec, data, providers, tenant, prefer, open_fields)
        )
    return Enhancement(spec, data, summary)


def _step(name: str, run: Any) -> Any:
    try:
        return run()
    except MlaasError as exc:
        raise TrainingFailed(
            f"AI enhancement failed at {name}: {without_server_paths(exc.message)}"
        ) from exc


def _target_name(features: list[str]) -> str:
    name = "class"
    while name in features:
        name = f"_{name}"
    return name


def synthetic_count(enhancement: AIEnhancementSpec, train_rows: int) -> int:
    if enhancement.synthetic_rows is not None:
        return enhancement.synthetic_rows
    return max(1, min(DEFAULT_CAP, math.ceil(train_rows * DEFAULT_SHARE)))


def _add_synthetic_rows(
    spec: JobSpec,
    data: PreparedData,
    providers: Providers,
    tenant: dict[str, Any],
    prefer: str | None,
) -> tuple[PreparedData, dict[str, Any]]:
    assert spec.ai_enhancement is not None
    info = data.info
    target = _target_name(info.feature_names)
    rng = np.random.default_rng(spec.seed)
    sent = rng.choice(len(data.x_train), min(len(data.x_train), ROWS_SENT), replace=False)
    rows = [
        {**dict(zip(info.feature_names, map(float, data.x_train[i]), strict=True)),
         target: info.class_names[int(data.y_train[i])]}
        for i in sorted(sent)
    ]  # fmt: skip
    asked = synthetic_count(spec.ai_enhancement, len(data.x_train))
    request = {
        "model_description": (
            f"{spec.name}: a {spec.model.type} classifier of {info.num_classes} classes "
            f"({', '.join(info.class_names[:20])}) over {info.num_features} numeric features"
        ),
        "existing_data": rows,
        "target_column": target,
        "target_count": asked,
        "seed": spec.seed,
        "provider": prefer,
    }
    answer = providers.synthetic_data(request, tenant)
    result = answer["synthetic_data"]
    generated = result.get("rows") or []
    if result.get("rows_are_sample") and result.get("dataset_id"):
        generated = _dataset_rows(providers, tenant["tenant_id"], result["dataset_id"])
    x_new, y_new, rejected = to_arrays(generated, info.feature_names, info.class_names, target)
    augmented = PreparedData(
        info,
        np.concatenate([data.x_train, x_new]).astype(data.x_train.dtype),
        np.concatenate([data.y_train, y_new]).astype(data.y_train.dtype),
        data.x_val,
        data.y_val,
    )
    summary = {
        "provider": answer.get("provider"),
        "model": answer.get("model"),
        "rows_requested": asked,
        "rows_added": len(x_new),
        "rows_rejected": rejected,
        "train_rows_real": len(data.x_train),
        "train_rows_total": len(augmented.x_train),
        "validation_rows": len(data.x_val),
        "fitted_on_rows": len(rows),
        "quality_metrics": result.get("quality_metrics") or {},
    }
    if result.get("dataset_url"):
        summary["dataset_url"] = result["dataset_url"]
    return augmented, summary


def _dataset_rows(providers: Providers, tenant_id: str, dataset_id: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(providers.read_dataset(tenant_id, dataset_id)))
    return table.to_pylist()  # type: ignore[no-any-return]


def to_arrays(
    rows: list[dict[str, Any]], features: list[str], classes: list[str], target: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows as feature and label arrays; a row with a missing or non-finite feature or an
    unknown class is dropped and counted."""
    index = {name: i for i, name in enumerate(classes)}
    xs: list[list[float]] = []
    ys: list[int] = []
    for row in rows:
        label = index.get(str(row.get(target)))
        try:
            values = [float(row[name]) for name in features]
        except (KeyError, TypeError, ValueError):
            continue
        if label is None or not all(math.isfinite(v) for v in values):
            continue
        xs.append(values)
        ys.append(label)
    x = np.asarray(xs, dtype=np.float32).reshape(len(xs), len(features))
    return x, np.asarray(ys, dtype=np.int64), len(rows) - len(xs)


def _apply_settings(
    spec: JobSpec,
    data: PreparedData,
    providers: Providers,
    tenant: dict[str, Any],
    prefer: str | None,
    open_fields: list[str],
) -> tuple[JobSpec, dict[str, Any]]:
    counts = np.bincount(data.y_train, minlength=data.info.num_classes)
    request = {
        "model_description": f"{spec.name}: a {spec.model.type} classifier",
        "model_type": spec.model.type,
        "data": {
            "rows": len(data.x_train),
            "features": data.info.num_features,
            "classes": data.info.num_classes,
            "majority_share": float(counts.max() / max(counts.sum(), 1)),
        },
        "epochs": spec.epochs,
        "num_workers": spec.scaling.num_workers,
        "open_fields": open_fields,
        "provider": prefer,
    }
    answer = providers.training_settings(request, tenant)
    raw = spec.model_dump(mode="json")
    applied: dict[str, Any] = {}
    for path in open_fields:
        section, name = path.split(".", 1)
        if name in answer["settings"]:
            raw.setdefault(section, {})[name] = answer["settings"][name]
            applied[path] = answer["settings"][name]
    enhanced = validate_spec(raw, "<ai_enhancement>")  # the spec's own bounds hold
    return enhanced, {
        "provider": answer.get("provider"),
        "model": answer.get("model"),
        "applied": applied,
        "rationale": answer.get("rationale") or [],
    }


def comparison(without: dict[str, Any], with_: dict[str, Any]) -> dict[str, Any]:
    """Both runs' validation metrics and the change the enhancement made to each."""
    def validation(metrics: dict[str, Any]) -> dict[str, float]:
        return {
            k: float(v) for k, v in metrics.items()
            if k.startswith("val_") and isinstance(v, int | float) and not isinstance(v, bool)
        }  # fmt: skip

    before, after = validation(without), validation(with_)
    return {
        "without_enhancement": before,
        "with_enhancement": after,
        "change": {k: round(after[k] - before[k], 6) for k in after.keys() & before.keys()},
    }
