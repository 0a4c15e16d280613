"""The keyless ``local`` provider: statistical synthetic data, deterministic model analysis and
local embeddings, with no key and no network."""

from __future__ import annotations

import asyncio
import io
import secrets
import time
from typing import Any

import numpy as np

from mlaas.storage import Storage, synthetic_key
from serve_apps.providers.local.analysis import analyze
from serve_apps.providers.local.embeddings import LocalEmbedder
from serve_apps.providers.local.quality import quality_metrics
from serve_apps.providers.local.synthetic import (
    Source,
    augmentation_strategies,
    generate,
    json_rows,
    source_of,
)
from serve_apps.providers.schemas import AnalyzeRequest, ModelAnalysis, SyntheticDataRequest

__all__ = ["LocalProvider", "analyze", "synthetic_key"]


def prune_synthetic(storage: Storage, tenant_id: str, retention_s: float) -> int:
    """Delete the tenant's synthetic datasets older than the retention; returns how many."""
    import pyarrow.fs as pa_fs

    base = storage.path_of(f"synthetic/{tenant_id}")
    selector = pa_fs.FileSelector(base, allow_not_found=True)
    cutoff = time.time() - retention_s
    removed = 0
    for info in storage.filesystem.get_file_info(selector):
        if info.type == pa_fs.FileType.File and info.mtime is not None \
                and info.mtime.timestamp() < cutoff:  # fmt: skip
            storage.filesystem.delete_file(info.path)
            removed += 1
    return removed


class LocalProvider:
    """The local answers; large synthetic datasets go to the tenant's ``synthetic/`` prefix of
    the platform storage as Parquet, downloadable for ``retention_s``.

    Args:
        storage: the platform storage.
        inline_rows: the largest dataset returned in the response body itself.
        retention_s: how long a synthetic dataset is kept.
    """

    def __init__(
        self, *, storage: Storage, inline_rows: int = 1000, retention_s: float = 7 * 86_400
    ) -> None:
        self.storage = storage
        self.inline_rows = inline_rows
        self.retention_s = retention_s
        self.embedder = LocalEmbedder()

    def synthetic_data_now(
        self, request: SyntheticDataRequest, tenant_id: str = "anonymous"
    ) -> dict[str, Any]:
        source: Source = source_of(request)
        rng = np.random.default_rng(request.seed)
        frame = generate(source, request.target_count, request.quality_requirements.balance, rng)
        result: dict[str, Any] = {
            "generated_samples": len(frame),
            "format": "structured",
            "fitted_on": source.kind,
            "augmentation_strategies": augmentation_strategies(
                source, request.quality_requirements.balance
            ),
            "quality_metrics": quality_metrics(frame, source),
            "data_schema": {
                "features": [c for c in frame.columns if c != source.target],
                "target": source.target,
                "dtypes": {c: str(t) for c, t in frame.dtypes.items()},
            },
            "assumptions": source.assumptions,
        }
        if len(frame) > self.inline_rows:
            dataset_id = "syn_" + secrets.token_hex(8)
            buffer = io.BytesIO()
            frame.astype({c: str for c in frame.columns if frame[c].dtype == object}).to_parquet(
                buffer
            )
            prune_synthetic(self.storage, tenant_id, self.retention_s)
            self.storage.put_bytes(synthetic_key(tenant_id, dataset_id), buffer.getvalue())
            result["dataset_id"] = dataset_id
            result["dataset_url"] = f"/v1/ai/synthetic-data/{dataset_id}"
            result["expires_in_s"] = int(self.retention_s)
            result["rows"] = json_rows(frame.head(20))
            result["rows_are_sample"] = True
        else:
            result["rows"] = json_rows(frame)
        return result

    async def synthetic_data(
        self, request: SyntheticDataRequest, tenant_id: str = "anonymous"
    ) -> dict[str, Any]:
        """Generate off the event loop (a million rows take seconds)."""
        return await asyncio.get_running_loop().run_in_executor(
            None, self.synthetic_data_now, request, tenant_id
        )

    async def analyze(self, request: AnalyzeRequest) -> ModelAnalysis:
        return analyze(request)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await self.embedder.encode(texts)
