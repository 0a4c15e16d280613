"""Statistical synthetic tabular data: fit a Gaussian copula on the caller's rows (or build one
from a schema), sample with the asked class balance, and measure the result against its source."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from serve_apps.providers.errors import RequestValidationError
from serve_apps.providers.local.copula import GaussianCopula, Marginal, nearest_correlation
from serve_apps.providers.schemas import ColumnSpec, SyntheticDataRequest, TabularSchema

_MIN_ROWS_PER_CLASS = 5
_FEATURES = re.compile(r"features?\s*[:=]\s*([^.;\n]+)", re.IGNORECASE)
_CLASSES = re.compile(r"(\d+)\s+classes", re.IGNORECASE)


@dataclass
class Source:
    """What the data is generated from: rows, or a copula built from a schema (then ``rows`` is
    None and distances are measured against the specified distributions)."""

    kind: str  # "rows" | "schema" | "description"
    copula: GaussianCopula
    target: str | None
    rows: pd.DataFrame | None = None
    assumptions: list[str] = field(default_factory=list)


def _schema_marginal(spec: ColumnSpec) -> Marginal:
    if spec.type in ("categorical", "boolean"):
        categories: list[object] = list(
            spec.categories or (["false", "true"] if spec.type == "boolean" else [])
        )
        if not categories:
            raise RequestValidationError(
                f"column {spec.name!r} is categorical but lists no categories",
                details={"field": f"data_schema.columns.{spec.name}"},
            )
        weights = np.asarray(spec.weights or [1.0] * len(categories), dtype=float)
        if len(weights) != len(categories) or weights.min() < 0 or weights.sum() <= 0:
            raise RequestValidationError(
                f"column {spec.name!r}: weights must be one non-negative number per category",
                details={"field": "weights"},
            )
        return Marginal(
            spec.name, "categorical", categories=categories, probabilities=weights / weights.sum()
        )
    return Marginal(
        spec.name,
        "numeric",
        integer=spec.type == "integer",
        mean=spec.mean,
        std=spec.std,
        low=spec.min,
        high=spec.max,
    )


def copula_from_schema(schema: TabularSchema) -> GaussianCopula:
    marginals = [_schema_marginal(c) for c in schema.columns]
    correlation = np.eye(len(marginals))
    if schema.correlations is not None:
        numeric = [i for i, m in enumerate(marginals) if m.kind == "numeric"]
        given = np.asarray(schema.correlations, dtype=float)
        if given.shape != (len(numeric), len(numeric)):
            raise RequestValidationError(
                f"correlations must be {len(numeric)}x{len(numeric)}: one row per numeric column",
                details={"field": "data_schema.correlations", "received": list(given.shape)},
            )
        correlation[np.ix_(numeric, numeric)] = given
    return GaussianCopula(marginals, nearest_correlation(correlation))


def schema_from_description(text: str) -> tuple[TabularSchema, list[str]]:
    """A schema read from prose ("features: amount, merchant"; "binary"; "10 classes").

    Every column it invents is standard normal, and it says so in the returned assumptions.
    """
    match = _FEATURES.search(text)
    names = [
        re.sub(r"\W+", "_", n.strip().lower()).strip("_")
        for n in (match.group(1) if match else "").split(",")
    ]
    names = [n for n in names if n][:50] or ["feature_1", "feature_2", "feature_3"]
    classes_match = _CLASSES.search(text)
    n_classes = (
        int(classes_match.group(1))
        if classes_match
        else (2 if re.search(r"binary|classif|detect", text, re.I) else 0)
    )
    columns = [ColumnSpec(name=n) for n in names]
    assumptions = [
        f"no rows or schema were sent: columns {names} were read from the description "
        "and each given a standard normal distribution; send existing_data rows or "
        "data_schema for data that matches yours"
    ]
    target = None
    if n_classes >= 2:
        target = "label"
        columns.append(
            ColumnSpec(
                name=target, type="categorical", categories=[str(i) for i in range(n_classes)]
            )
        )
        assumptions.append(f"a target 'label' with {n_classes} equally likely classes was assumed")
    return TabularSchema(columns=columns, target=target), assumptions


def source_of(request: SyntheticDataRequest) -> Source:
    """Rows when sent, else the schema, else a schema read from the descriptions."""
    if isinstance(request.existing_data, list):
        frame = pd.DataFrame(request.existing_data).dropna(axis=1, how="all")
        frame = frame.fillna(frame.median(numeric_only=True)).dropna()
        if len(frame) < 2:
            raise RequestValidationError(
                "existing_data needs at least 2 complete rows", details={"field": "existing_data"}
            )
        target = request.target_column
        if target is not None and target not in frame.columns:
            raise RequestValidationError(
                f"target_column {target!r} is not a column of existing_data",
                details={"field": "target_column", "expected": list(frame.columns)},
            )
        return Source("rows", GaussianCopula.fit(frame), target, rows=frame)
    if request.data_schema is not None:
        schema = request.data_schema
        return Source("schema", copula_from_schema(schema), request.target_column or schema.target)
    text = f"{request.model_description}. {request.existing_data or ''}"
    schema, assumptions = schema_from_description(text)
    return Source("description", copula_from_schema(schema), schema.target, assumptions=assumptions)


def class_shares(source: Source, balance: str) -> dict[object, float]:
    """The share of each target class in the output: as in the source, or equal."""
    if source.target is None:
        return {}
    if source.rows is not None:
        counts = source.rows[source.target].value_counts(normalize=True)
        shares = {k: float(v) for k, v in counts.items()}
    else:
        marginal = next(m for m in source.copula.marginals if m.name == source.target)
        if marginal.kind != "categorical":
            return {}
        assert marginal.probabilities is not None
        shares = dict(zip(marginal.categories, marginal.probabilities.tolist(), strict=True))
    if balance == "balanced":
        shares = {k: 1 / len(shares) for k in shares}
    return shares


def _sample_class(
    source: Source, label: object, count: int, rng: np.random.Generator
) -> pd.DataFrame:
    if source.rows is not None:
        subset = source.rows[source.rows[source.target] == label]
        if len(subset) >= _MIN_ROWS_PER_CLASS:
            sample = GaussianCopula.fit(subset.drop(columns=[source.target])).sample(count, rng)
            sample[source.target] = label
            return sample[list(source.rows.columns)]
    sample = source.copula.sample(count, rng)
    sample[source.target] = label  # too few rows of this class to fit its own dependence
    return sample


def generate(source: Source, count: int, balance: str, rng: np.random.Generator) -> pd.DataFrame:
    """``count`` rows. With a target and ``stratified`` or ``balanced``, each class is sampled
    from its own fit in exactly the asked shares; ``as_source`` samples the joint fit."""
    shares = class_shares(source, balance)
    if not shares or balance == "as_source":
        return source.copula.sample(count, rng)
    labels = list(shares)
    counts = np.floor(np.asarray([shares[k] for k in labels]) * count).astype(int)
    counts[np.argmax(counts)] += count - int(counts.sum())
    parts = [
        _sample_class(source, k, int(n), rng) for k, n in zip(labels, counts, strict=True) if n > 0
    ]
    frame = pd.concat(parts, ignore_index=True)
    return frame.sample(frac=1.0, random_state=int(rng.integers(2**31))).reset_index(drop=True)


def augmentation_strategies(source: Source, balance: str) -> list[str]:
    """How the local rows are made, in the order applied."""
    made = {
        "rows": "gaussian_copula_fitted_on_rows",
        "schema": "gaussian_copula_from_schema",
        "description": "gaussian_copula_from_description_schema",
    }[source.kind]
    strategies = [made]
    if class_shares(source, balance) and balance != "as_source":
        strategies.append(f"{balance}_class_sampling")
    return strategies


def json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows with plain JSON types (numpy scalars become Python numbers)."""
    return [
        {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]
