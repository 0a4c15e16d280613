"""PyTorch DistributedDataParallel through Ray Train's ``TorchTrainer``.

Each worker trains on its shard; gradients are all-reduced by DDP (gloo on CPU, NCCL on GPU,
chosen by Ray Train). With ``hyperparameters.precision: bf16`` the forward and loss run under
bf16 autocast while weights and optimizer stay fp32. Rank 0 writes the checkpoint: full
weights as safetensors plus the optimizer state, so a restarted worker group resumes where the
last checkpoint left off.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from ray.train.torch import TorchTrainer
from torch import nn

from cluster.trainers._plan import TrainingPlan, TrainOutcome
from cluster.trainers._tasks import build_task
from cluster.trainers._worker import (
    STATE_FILE,
    WEIGHTS_FILE,
    epoch_metrics,
    is_checkpoint_epoch,
    load_weights,
    precision_autocast,
    report_epoch,
    restored_attempt,
    save_weights,
    teacher_model,
    worker_data,
)
from cluster.zoo import build_model


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One DDP worker: restore, then train epoch by epoch, reporting (and checkpointing)."""
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(config["seed"])
    data = worker_data(config)
    task = build_task(config, data, device, teacher_model(config))
    model = build_model(config["architecture"])
    task.prepare(model)
    optimizer_state = None
    with restored_attempt() as attempt:
        if attempt.folder is not None:
            load_weights(model, attempt.folder)
            optimizer_state = torch.load(attempt.folder / STATE_FILE, weights_only=True)[
                "optimizer"
            ]
    model = ray.train.torch.prepare_model(model)  # to the device, wrapped in DDP when world > 1
    hp = config["hyperparameters"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    _train_epochs(config, task, model, optimizer, attempt.start_epoch, attempt.step, rank, world)


def train_step(
    task: Any,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Any,
    precision: str = "fp32",
) -> torch.Tensor:
    """One optimizer step on a batch (forward and loss under ``precision``'s autocast);
    returns the detached loss."""
    with precision_autocast(batch[0].device, precision):
        loss = task.loss(model, batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _train_epochs(
    config: dict[str, Any],
    task: Any,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    start_epoch: int,
    step: int,
    rank: int,
    world: int,
) -> None:
    epochs, every = config["epochs"], config["checkpoint_every"]
    if rank == 0:
        print(
            f"[train] starting at epoch {start_epoch + 1}/{epochs} on {world} worker(s)", flush=True
        )
    precision = config["hyperparameters"].get("precision", "fp32")
    for epoch in range(start_epoch + 1, epochs + 1):
        started, total, samples = time.monotonic(), 0.0, 0
        model.train()
        for batch in task.train_batches(epoch, rank, world):
            loss = train_step(task, model, optimizer, batch, precision)
            step += 1
            total, samples = total + float(loss), samples + len(batch[0])
        steps = max(task.steps_per_epoch(world), 1)
        metrics = epoch_metrics(
            task.evaluate(_unwrap(model)),
            epoch=epoch,
            epochs=epochs,
            step=step,
            start_epoch=start_epoch,
            train_loss=total / steps,
            started=started,
            samples=samples * world,
        )

        def write(folder: Path, current_step: int = step) -> None:
            if rank == 0:
                save_weights(_unwrap(model).state_dict(), folder)
                torch.save(
                    {"optimizer": optimizer.state_dict(), "step": current_step}, folder / STATE_FILE
                )

        due = is_checkpoint_epoch(epoch, every, epochs)
        report_epoch(
            metrics,
            epoch=epoch,
            step=step,
            write_checkpoint=write if due else None,
            contributes_checkpoint=rank == 0,
        )


def fit(plan: TrainingPlan) -> TrainOutcome:
    """Run the plan with DDP; raises ``ray.train.TrainingFailedError`` if it cannot finish."""
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=plan.worker_config(),
        scaling_config=plan.scaling_config(),
        run_config=plan.run_config(),
    )
    result = trainer.fit()
    return TrainOutcome(result.checkpoint, dict(result.metrics or {}), "pytorch", WEIGHTS_FILE)
