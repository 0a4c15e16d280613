"""Leave-one-out value of each node's update on a validation set (pools without secure
aggregation only: it needs every node's update).

With ``S`` the sum of the survivors' weighted inputs and ``x_i`` node i's input, the model of
a sum is the round's global model plus the sum's weighted mean update (as the coordinator
applies it). Node i's value is ``v_i = m(S) - m(S - x_i)``: how much better the round's model
is with node i than without it, where ``m`` is the validation metric, higher is better
(accuracy, or minus the mean cross-entropy for ``log_loss``). A round of n nodes costs n + 1
forward passes over the validation set.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from federated import _model
from federated._quantize import dequantize_mean


def leave_one_out(
    spec: dict[str, Any], base: np.ndarray, inputs: dict[str, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray], metric: str = "log_loss",
) -> dict[str, float]:
    """``{node: v_i}`` for every node of ``inputs`` (needs two or more)."""
    sa = spec["secure_aggregation"]
    modulus = np.uint64(1 << sa["modulus_bits"])
    total = np.zeros_like(next(iter(inputs.values())), dtype=np.uint64)
    for vector in inputs.values():
        np.add(total, vector, out=total)
    total %= modulus
    model = _model.build(spec)
    features, labels = torch.from_numpy(validation[0]), torch.from_numpy(validation[1])

    def score(aggregate: np.ndarray) -> float:
        update, _ = dequantize_mean(aggregate, clip=sa["clip_range"],
                                    bits=sa["quantization_bits"])
        _model.set_flat_parameters(model, base + update)
        with torch.no_grad():
            logits = model(features)
        if metric == "accuracy":
            return float((logits.argmax(dim=1) == labels).double().mean())
        return -float(torch.nn.functional.cross_entropy(logits, labels))

    with_all = score(total)
    return {node: round(with_all - score((total - vector) % modulus), 6)
            for node, vector in inputs.items()}
