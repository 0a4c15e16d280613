"""Progress of a run: printed for the job's logs, and written into its training job record.

The callback runs in the Ray Train controller (not in the workers), so workers only call
``ray.train.report`` and never touch the database.
"""

from __future__ import annotations

import math
from typing import Any

from ray.train import UserCallback

from mlaas import training_jobs


def progress_line(metrics: dict[str, Any], prefix: str = "") -> str:
    """``epoch 3/10 step 84 loss=0.41 val_accuracy=0.93 ...`` for the logs."""
    shown = " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in metrics.items()
        if k not in ("epoch", "epochs", "step")
        and isinstance(v, int | float)
        and not isinstance(v, bool)
    )
    epoch = f"epoch {metrics.get('epoch', '?')}/{metrics.get('epochs', '?')}"
    return f"[progress]{prefix} {epoch} step {metrics.get('step', '?')} {shown}".rstrip()


class ProgressCallback(UserCallback):
    """Prints each report and stores it in the job record (when there is one).

    A job of several runs (AI-enhanced training's comparison run, then the enhanced one) gives
    each its ``phase``: ``(start, share)`` of the job's progress, and a ``run`` name that each
    of its reports carries.
    """

    def __init__(
        self,
        database_url: str | None,
        job_id: str | None,
        prefix: str = "",
        *,
        phase: tuple[float, float] | None = None,
        run: str | None = None,
    ) -> None:
        self.database_url, self.job_id, self.prefix = database_url, job_id, prefix
        self.phase, self.run = phase, run

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
    ) -> None:
        latest = dict(metrics[0]) if metrics else {}
        if checkpoint is not None:
            latest["checkpointed"] = True
        progress = None
        if self.run is not None:
            latest["run"] = self.run
        if self.phase is not None:
            start, share = self.phase
            done = (latest.get("epoch") or 0) / max(latest.get("epochs") or 1, 1)
            progress = start + share * min(done, 1.0)
        print(progress_line(latest, self.prefix), flush=True)
        if self.database_url and self.job_id:
            record(self.database_url, self.job_id, latest, progress)


def record(
    database_url: str, job_id: str, metrics: dict[str, Any], progress: float | None = None
) -> None:
    """Store one report in the job record; numbers that JSON cannot hold become ``None``."""
    clean = {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in metrics.items()
    }
    training_jobs.record_progress(
        database_url,
        job_id,
        epoch=int(clean.get("epoch") or 0),
        step=int(clean.get("step") or 0),
        metrics=clean,
        total_epochs=int(clean.get("epochs") or 0) or None,
        progress=progress,
    )
