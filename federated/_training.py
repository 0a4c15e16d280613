"""Local training with differential privacy (Opacus DP-SGD) and the node's privacy budget.

The accountant's history (noise multiplier, sample rate, steps) is kept by the node across
rounds and restarts, so the spent epsilon always covers every round it trained in. Before a
round, ``would_exceed`` adds the round's steps to a copy of that history: a node never
starts a round that would take it past its own (epsilon, delta).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from federated import _model


@dataclass
class PrivacyBudget:
    epsilon: float
    delta: float
    accountant: str = "rdp"
    history: list[tuple[float, float, int]] = field(default_factory=list)

    def _accountant(self, history: list[tuple[float, float, int]]) -> Any:
        from opacus.accountants import PRVAccountant, RDPAccountant

        accountant = PRVAccountant() if self.accountant == "prv" else RDPAccountant()
        accountant.history = [tuple(h) for h in history]
        return accountant

    def spent(self) -> float:
        if not self.history:
            return 0.0
        return float(self._accountant(self.history).get_epsilon(self.delta))

    def would_exceed(self, noise_multiplier: float, sample_rate: float, steps: int) -> bool:
        planned = [*self.history, (noise_multiplier, sample_rate, steps)]
        return float(self._accountant(planned).get_epsilon(self.delta)) > self.epsilon


def round_plan(spec: dict[str, Any], samples: int) -> tuple[float, int]:
    """Sample rate and number of steps of one round of local training."""
    batch = min(spec["training"]["batch_size"], samples)
    steps_per_epoch = max(1, math.ceil(samples / batch))
    return batch / samples, steps_per_epoch * spec["training"]["local_epochs"]


def train_locally(
    spec: dict[str, Any], weights: bytes, x: np.ndarray, y: np.ndarray, budget: PrivacyBudget,
    seed: int | None = None,
) -> np.ndarray:
    """DP-SGD on the node's data from the global weights; returns the parameter update and
    records the round's steps in ``budget``."""
    from opacus import PrivacyEngine
    from opacus.validators import ModuleValidator
    from torch.utils.data import DataLoader, TensorDataset

    if seed is not None:
        torch.manual_seed(seed)
    model = ModuleValidator.fix(_model.load_weights(spec, weights))
    start = _model.flat_parameters(model)
    privacy, training = spec["privacy"], spec["training"]
    loader = DataLoader(TensorDataset(torch.tensor(x), torch.tensor(y)),  # copies: may be read-only
                        batch_size=min(training["batch_size"], len(x)), shuffle=True)
    engine = PrivacyEngine(accountant=budget.accountant)
    optimizer = torch.optim.SGD(model.parameters(), lr=training["lr"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Opacus warns about secure_mode and the RNG
        private, optimizer, loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader,
            noise_multiplier=privacy["noise_multiplier"], max_grad_norm=privacy["max_grad_norm"])
        for _ in range(training["local_epochs"]):
            for features, labels in loader:
                if len(labels) == 0:
                    continue  # Poisson sampling can draw an empty batch
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(private(features), labels).backward()
                optimizer.step()
    # Every sampling step counts, also the empty batches skipped above: record the plan.
    sample_rate, steps = round_plan(spec, len(x))
    budget.history.append((privacy["noise_multiplier"], sample_rate, steps))
    return _model.flat_parameters(private._module) - start
