"""Inputs checked against a version's input schema, before anything reaches a replica.

A text schema (``{"type": "text"}``, Hugging Face models) accepts each row as a non-empty
string. A tabular schema
(``{"type": "tabular", "dtype": "float32", "features": [...], "shape": [n]}``, optionally
``image_shape``) accepts each row as ``n`` numbers, as numbers nested in the image shape, or
as an object keyed by feature name. Wrong shape or type is a 422 that says what was
expected; more rows than allowed is a 413.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mlaas.errors import PayloadTooLargeError, ValidationError

MAX_TEXT_CHARS = 20_000


def expected_row_shape(schema: dict[str, Any]) -> list[int]:
    """The shape one row must have (without the batch dimension)."""
    shape = schema.get("shape")
    if shape:
        return [int(s) for s in shape]
    features = schema.get("features") or []
    return [len(features)] if features else []


def _rows_from_objects(rows: list[Any], features: list[str]) -> list[Any]:
    out = []
    for index, row in enumerate(rows):
        missing = [f for f in features if f not in row]
        unknown = [k for k in row if k not in features]
        if missing or unknown:
            raise ValidationError(
                f"inputs[{index}] must have exactly the features {features}",
                details={"field": f"inputs[{index}]", "missing": missing[:10],
                         "unknown": unknown[:10], "expected": features},
            )
        out.append([row[f] for f in features])
    return out


def _as_numbers(rows: list[Any], row_shape: list[int]) -> np.ndarray:
    expected = f"a list of rows, each {row_shape} numbers"
    try:
        array = np.asarray(rows)
    except ValueError:
        raise ValidationError(
            f"inputs are ragged: every row must have shape {row_shape}",
            details={"field": "inputs", "expected": expected},
        ) from None
    if array.dtype.kind not in "iuf":
        kind = "booleans" if array.dtype.kind == "b" else "non-numbers"
        raise ValidationError(
            f"inputs must be numbers (got {kind})",
            details={"field": "inputs", "expected": expected, "received_type": str(array.dtype)},
        )
    return array


def _texts(inputs: list[Any], max_chars: int) -> np.ndarray:
    """Rows of a text model: non-empty strings, as an object array."""
    for index, row in enumerate(inputs):
        if not isinstance(row, str) or not row.strip():
            raise ValidationError(
                f"inputs[{index}] must be a non-empty string (this model takes text)",
                details={"field": f"inputs[{index}]", "expected": "a list of strings",
                         "received_type": type(row).__name__},
            )
        if len(row) > max_chars:
            raise ValidationError(
                f"inputs[{index}] has {len(row)} characters; at most {max_chars} are allowed",
                details={"field": f"inputs[{index}]", "max_chars": max_chars},
            )
    return np.asarray(inputs, dtype=object)


def validate_inputs(
    schema: dict[str, Any], inputs: Any, *, max_rows: int
) -> np.ndarray:
    """The rows as a float32 array of shape ``(rows, *shape)``.

    Raises:
        ValidationError: wrong type or shape (422), with what was expected.
        PayloadTooLargeError: more than ``max_rows`` rows (413).
    """
    if not isinstance(inputs, list) or not inputs:
        raise ValidationError(
            "inputs must be a non-empty list of rows",
            details={"field": "inputs", "expected": "list of rows"},
        )
    if len(inputs) > max_rows:
        raise PayloadTooLargeError(
            f"{len(inputs)} rows is more than the {max_rows} allowed per request; split the "
            "request or use POST /v1/batch_predict with a file",
            details={"field": "inputs", "rows": len(inputs), "max_rows": max_rows},
        )
    if schema.get("type") == "text":
        return _texts(inputs, int(schema.get("max_chars") or MAX_TEXT_CHARS))
    row_shape = expected_row_shape(schema)
    features = list(schema.get("features") or [])
    if features and all(isinstance(row, dict) for row in inputs):
        inputs = _rows_from_objects(inputs, features)
    array = _as_numbers(inputs, row_shape)
    if not row_shape:
        return array.astype(np.float32)
    image_shape = [int(s) for s in schema.get("image_shape") or []]
    got = list(array.shape[1:])
    if got != row_shape and not (image_shape and got == image_shape):
        raise ValidationError(
            f"each row must have shape {row_shape}"
            + (f" (or {image_shape})" if image_shape else "")
            + f"; got rows of shape {got}",
            details={"field": "inputs", "expected": row_shape, "received": got},
        )
    array = array.reshape(len(array), *row_shape).astype(np.float32)
    if not np.isfinite(array).all():
        raise ValidationError(
            "inputs must be finite numbers (no NaN or infinity)",
            details={"field": "inputs", "expected": "finite numbers"},
        )
    return array


def row_count_of(schema: dict[str, Any]) -> int:
    """Numbers per row (for sizing batches)."""
    return math.prod(expected_row_shape(schema)) or 1
