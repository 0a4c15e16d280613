"""Quality of synthetic data, measured against its source (rows, or the specified distributions).

- per-column distance: Kolmogorov-Smirnov statistic (numeric) or total variation distance
  (categorical), 0 = identical distributions, 1 = disjoint;
- realism score: 1 - the mean column distance;
- diversity score: how much of the source's spread the synthetic columns keep (standard
  deviation ratio, or entropy ratio for categories, capped at 1), times the share of rows that
  are distinct;
- balance ratio: the rarest class's count over the commonest's in the target column;
- copies of source rows: the share of synthetic rows identical to a source row (memorisation).

Rows made from a description alone (an LLM's) have no reference distribution for their numeric
columns (a description names columns, it gives no values): ``description_metrics`` compares only
the declared categories (the target's classes) and leaves the realism score null; its diversity
is the mean normalised entropy of the columns (categories over the declared ones, numbers over 10
equal-width bins of their range) times the share of distinct rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from serve_apps.providers.local.copula import Marginal
from serve_apps.providers.local.synthetic import Source

_MAX_COMPARED_ROWS = 20_000


def _distribution(values: pd.Series) -> pd.Series:
    return values.astype(str).value_counts(normalize=True)


def _total_variation(left: pd.Series, right: pd.Series) -> float:
    aligned = pd.concat([left, right], axis=1).fillna(0.0)
    return float(0.5 * np.abs(aligned.iloc[:, 0] - aligned.iloc[:, 1]).sum())


def _entropy(shares: pd.Series | np.ndarray) -> float:
    p = np.asarray(shares, dtype=float)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _column_distance(
    synthetic: pd.Series, marginal: Marginal, source: pd.DataFrame | None
) -> float:
    if marginal.kind == "categorical":
        if source is not None:
            reference = _distribution(source[marginal.name])
        else:
            assert marginal.probabilities is not None
            reference = pd.Series(
                marginal.probabilities, index=[str(c) for c in marginal.categories]
            )
        return _total_variation(_distribution(synthetic), reference)
    values = synthetic.astype(float).to_numpy()
    if source is not None:
        return float(
            stats.ks_2samp(values, source[marginal.name].astype(float).to_numpy()).statistic
        )
    return float(stats.kstest(values, stats.norm(marginal.mean, marginal.std).cdf).statistic)


def _spread_ratio(synthetic: pd.Series, marginal: Marginal, source: pd.DataFrame | None) -> float:
    if marginal.kind == "categorical":
        assert marginal.probabilities is not None
        reference = _entropy(
            _distribution(source[marginal.name]) if source is not None else marginal.probabilities
        )
        return 1.0 if reference == 0 else min(1.0, _entropy(_distribution(synthetic)) / reference)
    reference_std = (
        float(source[marginal.name].astype(float).std()) if source is not None else marginal.std
    )
    if reference_std == 0:
        return 1.0
    return min(1.0, float(synthetic.astype(float).std()) / reference_std)


def quality_metrics(synthetic: pd.DataFrame, source: Source) -> dict[str, Any]:
    """Every figure computed from the data; see the module docstring for definitions."""
    compared = synthetic.head(_MAX_COMPARED_ROWS)
    rows = source.rows
    distances = {
        m.name: round(_column_distance(compared[m.name], m, rows), 4)
        for m in source.copula.marginals
    }
    if source.target is not None and source.target not in distances:
        distances[source.target] = (
            round(
                _total_variation(
                    _distribution(compared[source.target]), _distribution(rows[source.target])
                ),
                4,
            )
            if rows is not None
            else 0.0
        )
    spreads = [_spread_ratio(compared[m.name], m, rows) for m in source.copula.marginals]
    distinct_share = len(compared.astype(str).drop_duplicates()) / max(1, len(compared))
    metrics: dict[str, Any] = {
        "column_distances": distances,
        "realism_score": round(1 - float(np.mean(list(distances.values()))), 4),
        "diversity_score": round(float(np.mean(spreads)) * distinct_share, 4),
        "balance_ratio": None,
        "copies_of_source_rows": None,
    }
    if source.target is not None:
        metrics.update(_balance(synthetic[source.target]))
    if rows is not None:
        seen = set(map(tuple, rows.astype(str).to_numpy()))
        copies = sum(tuple(r) in seen for r in compared[list(rows.columns)].astype(str).to_numpy())
        metrics["copies_of_source_rows"] = round(copies / max(1, len(compared)), 4)
    return metrics


def _balance(target: pd.Series) -> dict[str, Any]:
    counts = target.astype(str).value_counts()
    return {
        "balance_ratio": round(float(counts.min() / counts.max()), 4),
        "class_counts": {str(k): int(v) for k, v in counts.items()},
    }


def _normalised_entropy(values: pd.Series, marginal: Marginal | None) -> float:
    """0 for a constant column, 1 for values spread evenly over the column's possible values."""
    numeric = pd.to_numeric(values, errors="coerce").astype(float)
    if (marginal is None or marginal.kind == "numeric") and np.isfinite(numeric).all():
        counts, _ = np.histogram(numeric.astype(float).to_numpy(), bins=10)
        return _entropy(counts / max(1, counts.sum())) / np.log(10)
    declared = len(marginal.categories) if marginal is not None and marginal.categories else 0
    shares = _distribution(values)
    possible = max(declared, len(shares))
    return 0.0 if possible < 2 else _entropy(shares) / float(np.log(possible))


def description_metrics(synthetic: pd.DataFrame, source: Source) -> dict[str, Any]:
    """Rows measured against a schema read from a description (see the module docstring)."""
    compared = synthetic.head(_MAX_COMPARED_ROWS)
    marginals = {m.name: m for m in source.copula.marginals}
    distances = {
        name: round(_column_distance(compared[name], marginal, None), 4)
        for name, marginal in marginals.items()
        if marginal.kind == "categorical" and name in compared
    }
    spreads = [_normalised_entropy(compared[c], marginals.get(c)) for c in compared.columns]
    distinct_share = len(compared.astype(str).drop_duplicates()) / max(1, len(compared))
    metrics: dict[str, Any] = {
        "column_distances": distances,
        "realism_score": None,
        "diversity_score": round(float(np.mean(spreads)) * distinct_share, 4) if spreads else None,
        "balance_ratio": None,
        "copies_of_source_rows": None,
        "reference": "description",
    }
    if source.target is not None and source.target in synthetic:
        metrics.update(_balance(synthetic[source.target]))
    return metrics
