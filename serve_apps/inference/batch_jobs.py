"""Asynchronous batch prediction: a Ray task that runs a Ray Data ``map_batches`` pipeline over
a file (or the rows of a large request saved as one) and writes the predictions as one Parquet
file to the platform storage. The job's state is a database record (:mod:`mlaas.batch_jobs`),
so every gateway replica on every node reads the same status.

Layout under ``batch/<tenant>/<job id>/`` of the storage: the rows sent inline (``inputs.npy``;
for a text model ``inputs.parquet`` with an ``inputs`` string column) and
``predictions.parquet`` (one row per input row, in input order; downloadable through
``GET /v1/batch_predict/{id}/output``). Readable inputs are the tenant's own files under
``datasets/<tenant>/`` and allow-listed buckets (:mod:`mlaas.tenant_uris`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from mlaas.errors import ValidationError
from mlaas.settings import Settings
from mlaas.tenant_uris import check_tenant_uri

FORMATS = ("parquet", "csv", "json", "numpy")


def job_key(tenant_id: str, job_id: str) -> str:
    """The job's folder in the platform storage."""
    return f"batch/{tenant_id}/{job_id}"


def output_key(tenant_id: str, job_id: str) -> str:
    return f"{job_key(tenant_id, job_id)}/predictions.parquet"


def resolve_input(settings: Settings, tenant_id: str, uri: str) -> str:
    """The checked URI of ``input_uri``: a file name under the tenant's datasets prefix, a URI
    inside it, or an allow-listed bucket (see :func:`mlaas.tenant_uris.check_tenant_uri`).

    Raises:
        ValidationError: 422 for a query, fragment, credentials or another scheme.
        ForbiddenError: 403 for another tenant's or a system location.
    """
    return check_tenant_uri(uri, tenant_id, settings, field="input_uri")


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


TEXT_COLUMNS = ("inputs", "text")


def feature_matrix(batch: dict[str, np.ndarray], schema: dict[str, Any]) -> np.ndarray:
    """Rows of a Ray Data batch as the model takes them: for a text model the strings of an
    ``inputs`` (or ``text``) column; else float32, the schema's feature columns or an
    ``inputs`` column of arrays."""
    if schema.get("type") == "text":
        column = next((name for name in TEXT_COLUMNS if name in batch), None)
        if column is None:
            raise ValueError(f"this model takes text: the file needs a string column "
                             f"{' or '.join(map(repr, TEXT_COLUMNS))}")
        texts = batch[column]
        empty = sum(1 for t in texts if not isinstance(t, str) or not t.strip())
        if empty:
            raise ValueError(f"{empty} row(s) of column {column!r} are empty or not strings")
        return np.asarray(texts, dtype=object)
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

    def __init__(self, spec: dict[str, Any], input_schema: dict[str, Any],
                 torch_threads: int = 0, actors: int = 1) -> None:
        import torch

        from serve_apps.inference.runners import load_runner

        # Ray caps a worker's OpenMP threads at its (here fractional, so 1) CPU share; a model
        # whose forward dominates a batch job should have the node's cores (shared among the
        # job's actors) unless told otherwise.
        torch.set_num_threads(torch_threads or max(1, len(os.sched_getaffinity(0)) // actors))
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
