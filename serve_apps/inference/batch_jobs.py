"""Asynchronous batch prediction: a Ray task that runs a Ray Data ``map_batches`` pipeline over
a file (or the rows of a large request saved as one), writes the predictions as Parquet to
the artifact store, and keeps its state in a ``status.json`` beside them.

Layout under ``<artifacts>/batch/<tenant>/<job id>/``: ``status.json``, ``inputs.parquet`` (for
rows sent inline), ``predictions/`` (Parquet files, one row per input row, in input order).
Readable inputs are the tenant's own files under ``<artifacts>/datasets/<tenant>/`` (by name)
and remote URIs Ray Data reads (``s3://``, ``gs://``...); any other local path is refused.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mlaas.errors import ForbiddenError, NotFoundError, ValidationError

STATUS_FILE = "status.json"
FORMATS = ("parquet", "csv", "json", "numpy")
_WRITE_LOCK = threading.Lock()
_REMOTE = ("s3://", "gs://", "gcs://", "abfs://", "az://", "hf://")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def job_folder(artifacts_dir: Path, tenant_id: str, job_id: str) -> Path:
    if not job_id.startswith("bp_") or not job_id[3:].isalnum():
        raise NotFoundError(f"No batch job {job_id!r}", details={"id": job_id})
    return artifacts_dir / "batch" / tenant_id / job_id


def datasets_folder(artifacts_dir: Path, tenant_id: str) -> Path:
    """Where a tenant's input files live (name them by file name in ``input_uri``)."""
    return artifacts_dir / "datasets" / tenant_id


def resolve_input(artifacts_dir: Path, tenant_id: str, uri: str) -> str:
    """A readable location for ``input_uri``, or a 403 for another tenant's or a system path."""
    if uri.startswith(_REMOTE):
        return uri
    own = datasets_folder(artifacts_dir, tenant_id).resolve()
    path = Path(uri.removeprefix("file://"))
    resolved = (own / path).resolve() if not path.is_absolute() else path.resolve()
    if not resolved.is_relative_to(own):
        raise ForbiddenError(
            f"input_uri must name a file under your datasets folder or a remote URI "
            f"({', '.join(_REMOTE)})",
            details={"field": "input_uri", "received": uri},
        )
    return str(resolved)


def format_of(uri: str, declared: str | None) -> str:
    if declared:
        return declared
    suffix = uri.rsplit(".", 1)[-1].lower() if "." in uri.rsplit("/", 1)[-1] else ""
    guessed = {"parquet": "parquet", "csv": "csv", "json": "json", "jsonl": "json",
               "npy": "numpy"}.get(suffix)
    if guessed is None:
        raise ValidationError(
            f"Cannot tell the format of {uri!r}; give format: one of {FORMATS}",
            details={"field": "format", "expected": list(FORMATS)},
        )
    return guessed


def write_status(folder: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the job's status (written atomically; one writer at a time per
    process, so the runner's heartbeat never undoes its own other updates)."""
    path = folder / STATUS_FILE
    with _WRITE_LOCK:
        status = json.loads(path.read_text()) if path.exists() else {}
        status.update(fields, updated_at=_now())
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")  # one per writer
        tmp.write_text(json.dumps(status))
        os.replace(tmp, path)
    return status


def lost_job_reason(status: dict[str, Any], timeout_s: float, now: float | None = None) -> str:
    """Why a RUNNING job is known dead (its task's heartbeat stopped), or "" if it is not."""
    beat = status.get("heartbeat_at")
    if status.get("status") != "RUNNING" or beat is None:
        return ""
    silent_s = (now if now is not None else time.time()) - float(beat)
    if silent_s <= timeout_s:
        return ""
    return (f"LOST: the batch task stopped without finishing (no heartbeat for {silent_s:.0f} s; "
            "its worker died or its node left the cluster); submit the job again")


def read_status(
    artifacts_dir: Path, tenant_id: str, job_id: str, heartbeat_timeout_s: float = 30.0
) -> dict[str, Any]:
    """The job's status; a RUNNING job whose task stopped beating is marked FAILED for good."""
    folder = job_folder(artifacts_dir, tenant_id, job_id)
    path = folder / STATUS_FILE
    if not path.exists():
        raise NotFoundError(f"No batch job {job_id!r}", details={"id": job_id})
    status: dict[str, Any] = json.loads(path.read_text())
    reason = lost_job_reason(status, heartbeat_timeout_s)
    if reason:
        status = write_status(folder, status="FAILED", error=reason, finished_at=_now())
    return status


def new_job(artifacts_dir: Path, tenant_id: str, **fields: Any) -> tuple[str, Path]:
    job_id = "bp_" + secrets.token_hex(8)
    folder = job_folder(artifacts_dir, tenant_id, job_id)
    write_status(folder, id=job_id, status="PENDING", created_at=_now(), **fields)
    return job_id, folder


def feature_matrix(batch: dict[str, np.ndarray], schema: dict[str, Any]) -> np.ndarray:
    """Rows of a Ray Data batch as float32: the schema's feature columns, or an ``inputs``
    column of arrays."""
    features = list(schema.get("features") or [])
    if "inputs" in batch:
        return np.stack([np.asarray(r, dtype=np.float32).ravel() for r in batch["inputs"]])
    missing = [f for f in features if f not in batch]
    if not features or missing:
        raise ValueError(
            f"the file needs the feature columns {features[:5]}... or an 'inputs' column "
            f"(missing: {missing[:5]})"
        )
    return np.stack([np.asarray(batch[f], dtype=np.float32) for f in features], axis=1)


class BatchPredictor:
    """The ``map_batches`` callable: loads the version once per actor, predicts per batch."""

    def __init__(self, spec: dict[str, Any], input_schema: dict[str, Any]) -> None:
        import torch

        from serve_apps.inference.runners import load_runner

        torch.set_num_threads(1)
        self.runner = load_runner(spec)
        self.classes = [str(c) for c in (spec.get("output_schema") or {}).get("classes") or []]
        self.input_schema = input_schema

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        rows = feature_matrix(batch, self.input_schema)
        outputs = self.runner.predict(rows)
        result: dict[str, Any] = {"outputs": list(outputs)}
        if self.classes and outputs.ndim == 2:
            shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
            probabilities = shifted / shifted.sum(axis=1, keepdims=True)
            result["prediction"] = np.asarray(self.classes)[probabilities.argmax(axis=1)]
            result["probability"] = probabilities.max(axis=1)
        return result
