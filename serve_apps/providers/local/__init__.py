"""The keyless ``local`` provider: statistical synthetic data, deterministic model analysis and
local embeddings, with no key and no network."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from serve_apps.providers.local.analysis import analyze
from serve_apps.providers.local.embeddings import LocalEmbedder
from serve_apps.providers.local.quality import quality_metrics
from serve_apps.providers.local.synthetic import Source, generate, json_rows, source_of
from serve_apps.providers.schemas import AnalyzeRequest, ModelAnalysis, SyntheticDataRequest

__all__ = ["LocalProvider", "analyze"]


class LocalProvider:
    """The local answers; large synthetic datasets go to a Parquet file under ``artifacts_dir``.

    Args:
        artifacts_dir: where datasets over ``inline_rows`` rows are written.
        inline_rows: the largest dataset returned in the response body itself.
    """

    def __init__(self, *, artifacts_dir: Path, inline_rows: int = 1000) -> None:
        self.artifacts_dir = artifacts_dir
        self.inline_rows = inline_rows
        self.embedder = LocalEmbedder()

    def synthetic_data_now(self, request: SyntheticDataRequest) -> dict[str, Any]:
        source: Source = source_of(request)
        rng = np.random.default_rng(request.seed)
        frame = generate(source, request.target_count, request.quality_requirements.balance, rng)
        result: dict[str, Any] = {
            "generated_samples": len(frame),
            "format": "structured",
            "fitted_on": source.kind,
            "quality_metrics": quality_metrics(frame, source),
            "data_schema": {
                "features": [c for c in frame.columns if c != source.target],
                "target": source.target,
                "dtypes": {c: str(t) for c, t in frame.dtypes.items()},
            },
            "assumptions": source.assumptions,
        }
        if len(frame) > self.inline_rows:
            path = self.artifacts_dir / "synthetic" / f"{uuid.uuid4().hex}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.astype({c: str for c in frame.columns if frame[c].dtype == object}).to_parquet(
                path
            )
            result["dataset_uri"] = path.as_uri()
            result["rows"] = json_rows(frame.head(20))
            result["rows_are_sample"] = True
        else:
            result["rows"] = json_rows(frame)
        return result

    async def synthetic_data(self, request: SyntheticDataRequest) -> dict[str, Any]:
        """Generate off the event loop (a million rows take seconds)."""
        return await asyncio.get_running_loop().run_in_executor(
            None, self.synthetic_data_now, request
        )

    async def analyze(self, request: AnalyzeRequest) -> ModelAnalysis:
        return analyze(request)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await self.embedder.encode(texts)
