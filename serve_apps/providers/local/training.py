"""Training settings from the size of the data: the ``local`` provider's answer to the settings
a job spec left open (AI-enhanced training). Published rules of thumb, each stated in the
answer's ``rationale``; the same request always gets the same answer."""

from __future__ import annotations

import math

from serve_apps.providers.schemas import TrainingSettings, TrainingSettingsRequest

_MIN_BATCH, _MAX_BATCH = 16, 256
_STEPS_PER_EPOCH = 16  # at least this many optimizer steps per epoch where the data allows
_SHORT_RUN_STEPS = 200  # fewer steps than this in the whole run: a higher learning rate


def _power_of_two(value: float, low: int, high: int) -> int:
    return int(min(max(2 ** round(math.log2(max(value, 1))), low), high))


def suggest(request: TrainingSettingsRequest) -> TrainingSettings:
    """Values for the request's open fields only."""
    data, open_fields = request.data, set(request.open_fields)
    per_worker = math.ceil(data.rows / request.num_workers)
    settings = TrainingSettings()
    batch = _power_of_two(per_worker / _STEPS_PER_EPOCH, _MIN_BATCH, _MAX_BATCH)
    if "hyperparameters.batch_size" in open_fields:
        settings.batch_size = batch
        settings.rationale.append(
            f"batch_size {batch}: about {_STEPS_PER_EPOCH} steps per epoch over {per_worker} "
            f"rows per worker, a power of two in [{_MIN_BATCH}, {_MAX_BATCH}]"
        )
    if "hyperparameters.lr" in open_fields:
        lr = 1e-3 * math.sqrt(batch / 64)  # square-root scaling of Adam's default with the batch
        steps = request.epochs * math.ceil(per_worker / batch)
        reason = f"lr {{lr:.2g}}: Adam's 1e-3 scaled by sqrt(batch {batch} / 64)"
        if steps < _SHORT_RUN_STEPS:
            lr *= 3
            reason += f", tripled for a short run ({steps} steps)"
        lr = float(f"{min(max(lr, 3e-4), 1e-2):.2g}")
        settings.lr = lr
        settings.rationale.append(reason.format(lr=lr))
    small = data.rows < 10_000
    if "hyperparameters.weight_decay" in open_fields:
        settings.weight_decay = 1e-4 if small else 0.0
        settings.rationale.append(
            f"weight_decay {settings.weight_decay:g}: "
            + ("a light penalty against overfitting a small training set" if small
               else "the training set is large enough without it")  # fmt: skip
        )
    width = _power_of_two(2 * (data.features + data.classes), 32, 512)
    if "model.hidden_sizes" in open_fields and request.model_type == "mlp":
        settings.hidden_sizes = [width, width // 2] if data.rows >= 5_000 else [width]
        settings.rationale.append(
            f"hidden_sizes {settings.hidden_sizes}: about twice the {data.features} inputs and "
            f"{data.classes} classes, a second layer only past 5,000 rows"
        )
    if "model.hidden_size" in open_fields and request.model_type == "cnn":
        settings.hidden_size = width
        settings.rationale.append(
            f"hidden_size {width}: about twice the {data.features} inputs and "
            f"{data.classes} classes"
        )
    if "model.dropout" in open_fields:
        settings.dropout = 0.1 if data.rows < 2_000 else 0.0
        settings.rationale.append(
            f"dropout {settings.dropout:g}: "
            + ("fewer than 2,000 training rows" if data.rows < 2_000
               else "enough rows that dropout mostly slows training")  # fmt: skip
        )
    return settings
