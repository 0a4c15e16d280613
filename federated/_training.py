"""Local training with differential privacy (Opacus DP-SGD) and the node's privacy budget.

The accountant's history (noise multiplier, sample rate, steps) is kept by the node across
rounds and restarts, so the spent epsilon always covers every round it trained in. Before a
round, ``would_exceed`` adds the round's steps to a copy of that history: a node never
starts a round that would take it past its own (epsilon, delta).

The node's sample count leaves it exactly only as the weight inside its masked vector (the
server learns the sum of the survivors' capped counts, never one of them). The count it
states in the clear, for credits and for the pool's node table, is noised: Gaussian noise of
standard deviation ``COUNT_NOISE_STD`` samples, rounded and clipped at 0. That release is a
Gaussian mechanism of sensitivity 1 (adding or removing one record changes the count by 1),
so it is accounted in the same history as the training steps, as one step of noise
multiplier ``COUNT_NOISE_STD`` at sample rate 1: the epsilon a node reports covers it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from federated import _model

COUNT_NOISE_STD = 50.0  # samples: one release costs epsilon 0.1 alone at delta 1e-5
COUNT_RELEASE = (COUNT_NOISE_STD, 1.0, 1)  # (noise multiplier, sample rate, steps)


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
        """Whether a round of these training steps, and the noisy count sent with its
        update, would take the node past its epsilon."""
        planned = [*self.history, (noise_multiplier, sample_rate, steps), COUNT_RELEASE]
        return float(self._accountant(planned).get_epsilon(self.delta)) > self.epsilon

    def release_count(self, samples: int, rng: np.random.Generator) -> int:
        """The sample count to state in the clear: noised, and accounted in the history."""
        self.history.append(COUNT_RELEASE)
        return max(0, round(samples + rng.normal(0.0, COUNT_NOISE_STD)))


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
