"""Deterministic model analysis: parameter count by shape propagation, layer checks, overfitting
signals from train/validation gaps, and suggestions that follow from what was found.

The overall score is 1 minus the weights of the failed checks (listed in ``_CHECK_WEIGHTS``).
"""

from __future__ import annotations

import math
import re
from typing import Any

from serve_apps.providers.schemas import (
    AnalyzeRequest,
    ArchitectureAssessment,
    LayerCheck,
    ModelAnalysis,
    PerformanceAnalysis,
    Suggestion,
)

_CHECK_WEIGHTS = {
    "normalization": 0.15,
    "regularization": 0.15,
    "output_activation": 0.1,
    "overfitting": 0.2,
    "depth_without_shortcuts": 0.1,
    "dense_after_conv": 0.05,
}
_NORMALIZATION = {
    "batchnorm",
    "batch_normalization",
    "batchnormalization",
    "layernorm",
    "layer_normalization",
    "groupnorm",
    "instancenorm",
}
_REGULARIZATION = {"dropout", "spatialdropout", "dropout2d", "alphadropout"}
_CONV = {"conv2d", "conv1d", "conv", "convolution"}
_DENSE = {"dense", "linear", "fc", "output"}
_SHAPE = re.compile(r"(\d+)\s*x\s*(\d+)(?:\s*x\s*(\d+))?", re.IGNORECASE)
_GAP_PAIRS = (
    ("train_accuracy", "val_accuracy"),
    ("training_accuracy", "validation_accuracy"),
    ("train_loss", "val_loss"),
    ("training_loss", "validation_loss"),
    ("train_f1", "val_f1"),
)


def _layer_type(layer: dict[str, Any]) -> str:
    return str(layer.get("type", "")).lower().replace("-", "_")


def input_shape(request: AnalyzeRequest) -> tuple[int, ...] | None:
    """From ``architecture.input_shape``, else "32x32 RGB"-style text in the data sample."""
    explicit = (request.architecture or {}).get("input_shape")
    if (
        isinstance(explicit, list | tuple)
        and explicit
        and all(isinstance(d, int) for d in explicit)
    ):
        return tuple(explicit)
    match = _SHAPE.search(request.data_sample or "")
    if not match:
        return None
    height, width = int(match.group(1)), int(match.group(2))
    channels = (
        int(match.group(3))
        if match.group(3)
        else (3 if re.search(r"rgb|colou?r", request.data_sample or "", re.I) else 1)
    )
    return (height, width, channels)


def _conv_output(shape: tuple[int, ...], layer: dict[str, Any]) -> tuple[int, ...]:
    kernel, stride = (
        int(layer.get("kernel_size", 3)),
        int(layer.get("strides", layer.get("stride", 1))),
    )
    height, width, _ = shape
    if str(layer.get("padding", "valid")).lower() == "same":
        return (math.ceil(height / stride), math.ceil(width / stride), int(layer["filters"]))
    return ((height - kernel) // stride + 1, (width - kernel) // stride + 1, int(layer["filters"]))


def count_parameters(
    layers: list[dict[str, Any]], shape: tuple[int, ...] | None
) -> tuple[int | None, list[str]]:
    """Trainable parameters, following the shape layer by layer; None when a shape is unknown."""
    total, notes = 0, list[str]()
    for index, layer in enumerate(layers):
        kind = _layer_type(layer)
        if shape is None:
            return None, notes + [
                f"layer {index} ({kind}): input shape unknown; send architecture.input_shape"
            ]
        if kind in _CONV and len(shape) == 3 and "filters" in layer:
            kernel = int(layer.get("kernel_size", 3))
            total += kernel * kernel * shape[2] * int(layer["filters"]) + int(layer["filters"])
            shape = _conv_output(shape, layer)
        elif kind in ("maxpool", "maxpooling2d", "avgpool", "pool") and len(shape) == 3:
            pool = int(layer.get("pool_size", 2))
            shape = (shape[0] // pool, shape[1] // pool, shape[2])
        elif kind in ("globalaveragepooling2d", "global_pool", "gap") and len(shape) == 3:
            shape = (shape[2],)
        elif kind in _DENSE and "units" in layer:
            inputs = math.prod(shape)
            total += inputs * int(layer["units"]) + int(layer["units"])
            shape = (int(layer["units"]),)
        elif kind in _NORMALIZATION:
            total += 2 * shape[-1]
        elif kind in _REGULARIZATION or kind == "flatten":
            shape = (math.prod(shape),) if kind == "flatten" else shape
        else:
            notes.append(f"layer {index} ({kind}): not counted (unknown layer type)")
    return total, notes


def _gaps(metrics: dict[str, Any]) -> list[tuple[str, float]]:
    gaps = []
    for train_key, val_key in _GAP_PAIRS:
        train, val = metrics.get(train_key), metrics.get(val_key)
        if isinstance(train, int | float) and isinstance(val, int | float):
            gaps.append((train_key.split("_", 1)[1], abs(float(val) - float(train))))
    return gaps


def _checks(layers: list[dict[str, Any]], metrics: dict[str, Any]) -> list[LayerCheck]:
    kinds = [_layer_type(layer) for layer in layers]
    conv_count = sum(k in _CONV for k in kinds)
    last = layers[-1] if layers else {}
    units = last.get("units")
    activation = str(last.get("activation", "")).lower()
    checks = [
        LayerCheck(
            check="normalization",
            passed=not layers or any(k in _NORMALIZATION for k in kinds),
            detail="normalization layers present"
            if any(k in _NORMALIZATION for k in kinds)
            else "no batch or layer normalization between layers",
        ),
        LayerCheck(
            check="regularization",
            passed=not layers or any(k in _REGULARIZATION for k in kinds),
            detail="dropout present"
            if any(k in _REGULARIZATION for k in kinds)
            else "no dropout or other regularization layer",
        ),
        LayerCheck(
            check="output_activation",
            passed=not isinstance(units, int)
            or (units == 1 and activation == "sigmoid")
            or (units > 1 and activation in ("softmax", "log_softmax"))
            or activation in ("", "linear"),
            detail=f"output of {units} units with activation {activation or 'none'}",
        ),
        LayerCheck(
            check="depth_without_shortcuts",
            passed=conv_count < 8 or any("residual" in k or k == "add" for k in kinds),
            detail=f"{conv_count} convolution layers, residual connections "
            f"{'present' if any('residual' in k for k in kinds) else 'absent'}",
        ),
        LayerCheck(
            check="dense_after_conv",
            passed=not any(
                a in _CONV and b in _DENSE for a, b in zip(kinds, kinds[1:], strict=False)
            ),
            detail="a dense layer directly after a convolution flattens a large feature map"
            if any(a in _CONV and b in _DENSE for a, b in zip(kinds, kinds[1:], strict=False))
            else "convolutions reduce before dense layers",
        ),
    ]
    return [*checks, _overfitting_check(metrics)]


def _overfitting_check(metrics: dict[str, Any]) -> LayerCheck:
    """Passed when every train/validation gap is under 0.05 (or none was reported)."""
    gaps = _gaps(metrics)
    worst = max((g for _, g in gaps), default=None)
    return LayerCheck(
        check="overfitting",
        passed=worst is None or worst < 0.05,
        detail="no train/validation pairs in the metrics"
        if worst is None
        else "largest train/validation gap " + ", ".join(f"{n} {g:.3f}" for n, g in gaps),
    )


_SUGGESTIONS = {  # check: (category, component, suggestion, expected effect)
    "normalization": (
        "architecture",
        "normalization_layers",
        "Add batch normalization after each convolution (layer normalization for sequence models)",
        "steadier, faster convergence; allows a higher learning rate",
    ),
    "regularization": (
        "regularization",
        "dropout",
        "Add dropout (0.3-0.5) before the dense layers",
        "a smaller train/validation gap",
    ),
    "output_activation": (
        "architecture",
        "output_layer",
        "Match the output to the task: softmax over N units for "
        "N classes, one sigmoid unit for binary",
        "correct probabilities and loss",
    ),
    "depth_without_shortcuts": (
        "architecture",
        "skip_connections",
        "Add residual (skip) connections across blocks of convolutions",
        "trainable depth without vanishing gradients",
    ),
    "dense_after_conv": (
        "architecture",
        "pooling",
        "Pool (or global-average-pool) before the first dense layer",
        "far fewer parameters in the dense layer",
    ),
    "overfitting": (
        "training",
        "training_schedule",
        "Stop early on validation loss and add data augmentation or weight decay",
        "closes the train/validation gap",
    ),
}


def _suggestion(check: LayerCheck) -> Suggestion:
    """The fix for a failed check; its rationale is what the check found."""
    category, component, suggestion, effect = _SUGGESTIONS[check.check]
    return Suggestion(
        category=category,
        component=component,
        suggestion=suggestion,
        expected_improvement=effect,
        rationale=f"{check.detail}; expected: {effect}",
    )


def _performance(metrics: dict[str, Any], checks: list[LayerCheck]) -> PerformanceAnalysis:
    accuracy = metrics.get(
        "accuracy", metrics.get("val_accuracy", metrics.get("validation_accuracy"))
    )
    if isinstance(accuracy, int | float):
        level = "high" if accuracy >= 0.9 else "moderate" if accuracy >= 0.75 else "low"
        accuracy_text = f"accuracy {accuracy:.3f} is {level}"
    else:
        accuracy_text = "no accuracy reported"
    overfit = next(c for c in checks if c.check == "overfitting")
    gaps = _gaps(metrics)
    if not gaps:
        risk = "unknown: report train and validation metrics (e.g. train_loss and val_loss)"
    else:
        worst = max(g for _, g in gaps)
        risk = "high" if worst >= 0.1 else "moderate" if worst >= 0.05 else "low"
    loss = metrics.get("loss", metrics.get("val_loss", metrics.get("validation_loss")))
    convergence = f"final loss {loss:.3f}" if isinstance(loss, int | float) else "no loss reported"
    signals = [] if overfit.passed else [overfit.detail]
    return PerformanceAnalysis(
        accuracy_assessment=accuracy_text,
        convergence_quality=convergence,
        overfitting_risk=risk,
        signals=signals,
    )


def analyze(request: AnalyzeRequest) -> ModelAnalysis:
    """The same answer for the same request, every time."""
    layers = [
        layer for layer in (request.architecture or {}).get("layers", []) if isinstance(layer, dict)
    ]
    metrics = request.performance_metrics or {}
    parameters, notes = count_parameters(layers, input_shape(request)) if layers else (None, [])
    checks = _checks(layers, metrics)
    failed = [c for c in checks if not c.passed]
    score = max(0.0, 1.0 - sum(_CHECK_WEIGHTS[c.check] for c in failed))
    strengths = [c.detail for c in checks if c.passed and c.check != "overfitting"]
    if parameters is not None:
        strengths.append(f"{parameters:,} trainable parameters")
    if not layers:
        notes.append("no architecture.layers sent: only the metrics were analysed")
    weaknesses = [c.detail for c in failed] + notes
    suggestions = [_suggestion(c) for c in failed]
    return ModelAnalysis(
        architecture_assessment=ArchitectureAssessment(
            strengths=strengths,
            weaknesses=weaknesses,
            overall_score=round(score, 3),
            parameter_count=parameters,
            layer_checks=checks,
        ),
        performance_analysis=_performance(metrics, checks),
        optimization_suggestions=suggestions,
    )
