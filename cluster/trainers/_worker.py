"""Pieces every torch training worker uses: its config, weights on disk, checkpoints, reports."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cluster.data import PreparedData
from cluster.zoo import build_model

WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
ARCHITECTURE_FILE = "architecture.json"


def save_weights(state_dict: dict[str, torch.Tensor], folder: Path) -> Path:
    """Full weights as safetensors (contiguous CPU copies, so any worker's tensors are fine)."""
    path = folder / WEIGHTS_FILE
    save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(path))
    return path


def load_weights(model: nn.Module, folder: Path) -> nn.Module:
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return model


def load_registered_model(architecture: dict[str, Any], folder: Path) -> nn.Module:
    """A model of a registered version (architecture from the registry, weights from its folder)."""
    return load_weights(build_model(architecture), folder)


@dataclass
class Attempt:
    """Where this worker (re)starts: epoch and global step, and the state to load from."""

    start_epoch: int = 0
    step: int = 0
    folder: Path | None = None


@contextmanager
def restored_attempt() -> Any:
    """The latest checkpoint of the run, if Ray Train restarted us after a failure.

    Yields:
        An :class:`Attempt`; its ``folder`` is readable inside the ``with`` block.
    """
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        yield Attempt()
        return
    with checkpoint.as_directory() as folder:
        meta = json.loads((Path(folder) / "progress.json").read_text())
        yield Attempt(meta["epoch"], meta["step"], Path(folder))


def is_checkpoint_epoch(epoch: int, every: int, total: int) -> bool:
    """Checkpoint every ``every`` epochs and after the last one (``epoch`` counts from 1)."""
    return epoch % every == 0 or epoch == total


def report_epoch(
    metrics: dict[str, Any],
    *,
    epoch: int,
    step: int,
    write_checkpoint: Callable[[Path], None] | None,
    contributes_checkpoint: bool,
) -> None:
    """Report an epoch's metrics, with a checkpoint when ``write_checkpoint`` is given.

    Every worker must call this once per epoch. Ranks with ``contributes_checkpoint`` upload
    what ``write_checkpoint`` wrote (rank 0 for DDP; every rank for sharded DeepSpeed state).
    """
    if write_checkpoint is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="mlaas-ckpt-") as tmp:
        folder = Path(tmp)
        write_checkpoint(folder)
        checkpoint = None
        if contributes_checkpoint:
            (folder / "progress.json").write_text(json.dumps({"epoch": epoch, "step": step}))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def epoch_metrics(
    base: dict[str, float],
    *,
    epoch: int,
    epochs: int,
    step: int,
    start_epoch: int,
    train_loss: float,
    started: float,
    samples: int,
) -> dict[str, Any]:
    """The metrics every trainer reports after an epoch, in one shape."""
    elapsed = time.monotonic() - started
    return {
        **base,
        "loss": train_loss,
        "epoch": epoch,
        "epochs": epochs,
        "step": step,
        "resumed_from_epoch": start_epoch,
        "samples_per_s": round(samples / elapsed, 1) if elapsed > 0 else 0.0,
    }


def precision_autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast of a forward and its loss for ``precision: bf16``, a no-op for ``fp32``.

    Weights, gradients and optimizer state stay fp32 (bf16 has fp32's range: no loss scaling).
    """
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16"
    )


def worker_data(config: dict[str, Any]) -> PreparedData:
    """The dataset the driver put in the object store (one copy per node, not per worker)."""
    return ray.get(config["data_ref"])  # type: ignore[no-any-return]


def teacher_model(config: dict[str, Any]) -> nn.Module | None:
    teacher = config.get("teacher")
    if not teacher:
        return None
    from mlaas.artifacts import local_folder

    folder = local_folder(teacher["artifact_uri"], teacher["version_id"])
    return load_registered_model(teacher["architecture"], folder)
