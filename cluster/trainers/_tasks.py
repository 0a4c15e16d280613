"""What a torch worker trains on: batches of its shard, the loss, and the validation metrics.

A task is the hook through which trainers stay generic: classification, language modelling
and distillation differ only in their batches, their loss and what they measure.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from cluster.data import PreparedData

Batch = tuple[torch.Tensor, torch.Tensor]


def shard_indices(n: int, rank: int, world: int, seed: int, epoch: int) -> np.ndarray:
    """This rank's examples for an epoch: a shuffled, equal-sized share of ``range(n)``.

    Every rank gets the same count (padding by wrapping, as ``DistributedSampler`` does), so
    ranks take the same number of steps and no collective waits for a rank that is done.
    """
    order = np.random.default_rng((seed, epoch)).permutation(n)
    per_rank = math.ceil(n / world)
    padded = np.resize(order, per_rank * world)
    return padded[rank::world]


class ClassificationTask:
    """Cross-entropy on labelled rows; accuracy and loss on the validation set."""

    def __init__(
        self, data: PreparedData, batch_size: int, seed: int, device: torch.device
    ) -> None:
        self.data, self.batch_size, self.seed, self.device = data, batch_size, seed, device
        self.x_train = torch.from_numpy(data.x_train.copy())  # object-store arrays are read-only
        self.y_train = torch.from_numpy(data.y_train.copy())

    def prepare(self, model: nn.Module) -> None:
        """Fit the model's input standardisation to the training set (before training starts)."""
        standardize = getattr(model, "standardize", None)
        if standardize is not None:
            standardize.fit(self.x_train)

    def steps_per_epoch(self, world: int) -> int:
        return math.ceil(math.ceil(len(self.x_train) / world) / self.batch_size)

    def train_batches(self, epoch: int, rank: int, world: int) -> Iterator[Batch]:
        indices = torch.from_numpy(shard_indices(len(self.x_train), rank, world, self.seed, epoch))
        for start in range(0, len(indices), self.batch_size):
            chosen = indices[start : start + self.batch_size]
            yield self.x_train[chosen].to(self.device), self.y_train[chosen].to(self.device)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        features, labels = batch
        return F.cross_entropy(model(features), labels)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        logits = _batched_logits(model, torch.from_numpy(self.data.x_val.copy()), self.device)
        labels = torch.from_numpy(self.data.y_val.copy())
        model.train(was_training)
        return {
            "val_loss": float(F.cross_entropy(logits, labels)),
            "val_accuracy": float((logits.argmax(dim=1) == labels).float().mean()),
        }


class DistillationTask(ClassificationTask):
    """Soft targets from a frozen teacher mixed with the hard labels (Hinton et al., 2015).

    ``loss = alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE``.
    """

    def __init__(
        self,
        data: PreparedData,
        batch_size: int,
        seed: int,
        device: torch.device,
        *,
        teacher: nn.Module,
        temperature: float,
        alpha: float,
    ) -> None:
        super().__init__(data, batch_size, seed, device)
        self.teacher = teacher.to(device).eval()
        for param in self.teacher.parameters():
            param.requires_grad_(False)
        self.temperature, self.alpha = temperature, alpha

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        features, labels = batch
        student_logits = model(features)
        with torch.no_grad():
            teacher_logits = self.teacher(features)
        return distillation_loss(
            student_logits, teacher_logits, labels, self.temperature, self.alpha
        )

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        metrics = super().evaluate(model)
        teacher_logits = _batched_logits(
            self.teacher, torch.from_numpy(self.data.x_val.copy()), self.device
        )
        labels = torch.from_numpy(self.data.y_val.copy())
        metrics["teacher_val_accuracy"] = float(
            (teacher_logits.argmax(dim=1) == labels).float().mean()
        )
        return metrics


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Soft-target KL divergence (scaled by T^2 to keep its gradients comparable) plus hard CE."""
    soft = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.log_softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    hard = F.cross_entropy(student_logits, labels)
    return alpha * temperature**2 * soft + (1 - alpha) * hard


class LanguageModelTask:
    """Next-character prediction on random windows of the token stream."""

    def __init__(
        self,
        data: PreparedData,
        batch_size: int,
        seed: int,
        device: torch.device,
        *,
        block_size: int,
        steps_per_epoch: int,
        eval_batches: int = 8,
    ) -> None:
        self.train_tokens = torch.from_numpy(data.x_train.copy())
        self.val_tokens = torch.from_numpy(data.x_val.copy())
        self.batch_size, self.seed, self.device = batch_size, seed, device
        self.block_size, self.steps = block_size, steps_per_epoch
        self.eval_batches = eval_batches

    def prepare(self, model: nn.Module) -> None:
        """Language models need no fitting before training."""

    def steps_per_epoch(self, world: int) -> int:
        return self.steps

    def _windows(self, tokens: torch.Tensor, starts: torch.Tensor) -> Batch:
        offsets = torch.arange(self.block_size)
        x = tokens[starts[:, None] + offsets]
        y = tokens[starts[:, None] + offsets + 1]
        return x.to(self.device), y.to(self.device)

    def train_batches(self, epoch: int, rank: int, world: int) -> Iterator[Batch]:
        generator = torch.Generator().manual_seed(hash((self.seed, epoch, rank)) & 0x7FFFFFFF)
        high = len(self.train_tokens) - self.block_size - 1
        for _ in range(self.steps):
            starts = torch.randint(0, high, (self.batch_size,), generator=generator)
            yield self._windows(self.train_tokens, starts)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        idx, targets = batch
        logits = model(idx)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        high = len(self.val_tokens) - self.block_size - 1
        generator = torch.Generator().manual_seed(self.seed)
        losses = []
        for _ in range(self.eval_batches):
            starts = torch.randint(0, high, (self.batch_size,), generator=generator)
            losses.append(float(self.loss(model, self._windows(self.val_tokens, starts))))
        model.train(was_training)
        val_loss = sum(losses) / len(losses)
        return {"val_loss": val_loss, "val_perplexity": math.exp(min(val_loss, 50))}


def _batched_logits(model: nn.Module, features: torch.Tensor, device: torch.device) -> torch.Tensor:
    chunks = [model(chunk.to(device)).float().cpu() for chunk in features.split(1024)]
    return torch.cat(chunks)


def build_task(
    config: dict[str, Any], data: PreparedData, device: torch.device, teacher: nn.Module | None
) -> Any:
    """The task of a worker's config (see ``cluster.trainers.worker_config``)."""
    hp, seed = config["hyperparameters"], config["seed"]
    if data.info.task == "language_modeling":
        return LanguageModelTask(
            data,
            hp["batch_size"],
            seed,
            device,
            block_size=config["architecture"]["config"]["block_size"],
            steps_per_epoch=hp["steps_per_epoch"],
        )
    if teacher is not None:
        distill = config["distill"]
        return DistillationTask(
            data,
            hp["batch_size"],
            seed,
            device,
            teacher=teacher,
            temperature=distill["temperature"],
            alpha=distill["alpha"],
        )
    return ClassificationTask(data, hp["batch_size"], seed, device)
