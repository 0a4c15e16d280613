"""A Gaussian copula over mixed tabular columns: per-column marginals, joint normal scores.

Numeric columns keep their empirical (or specified normal) marginal; categorical columns their
frequencies; the dependence between columns is the correlation of their normal scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats


@dataclass
class Marginal:
    """One column's distribution, with the inverse CDF that maps uniforms back to values."""

    name: str
    kind: str  # "numeric" or "categorical"
    integer: bool = False
    sorted_values: np.ndarray | None = None  # empirical numeric marginal
    mean: float = 0.0
    std: float = 1.0
    low: float | None = None
    high: float | None = None
    categories: list[object] = field(default_factory=list)
    probabilities: np.ndarray | None = None

    def inverse_cdf(self, u: np.ndarray) -> np.ndarray:
        if self.kind == "categorical":
            assert self.probabilities is not None
            index = np.searchsorted(np.cumsum(self.probabilities), u, side="right")
            index = np.minimum(index, len(self.categories) - 1)
            return np.asarray(self.categories, dtype=object)[index]
        if self.sorted_values is not None:
            values = np.quantile(self.sorted_values, u)
        else:
            values = stats.norm.ppf(u, loc=self.mean, scale=self.std)
        if self.low is not None or self.high is not None:
            values = np.clip(values, self.low, self.high)
        return np.round(values).astype(np.int64) if self.integer else values

    def normal_scores(self, column: pd.Series) -> np.ndarray:
        """Each value's position in the marginal, as a standard normal score."""
        if self.kind == "categorical":
            assert self.probabilities is not None
            upper = np.cumsum(self.probabilities)
            middle = dict(zip(self.categories, upper - self.probabilities / 2, strict=True))
            u = column.map(middle).to_numpy(dtype=float)
        else:
            u = column.rank(method="average").to_numpy(dtype=float) / (len(column) + 1)
        return stats.norm.ppf(np.clip(u, 1e-6, 1 - 1e-6))


def empirical_marginal(column: pd.Series) -> Marginal:
    name = str(column.name)
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.astype(float).to_numpy()
        integer = bool(pd.api.types.is_integer_dtype(column)) or bool(
            np.all(values == np.round(values))
        )
        return Marginal(
            name,
            "numeric",
            integer=integer,
            sorted_values=np.sort(values),
            low=float(values.min()),
            high=float(values.max()),
        )
    counts = column.value_counts()
    return Marginal(
        name,
        "categorical",
        categories=list(counts.index),
        probabilities=(counts / counts.sum()).to_numpy(dtype=float),
    )


def nearest_correlation(matrix: np.ndarray) -> np.ndarray:
    """The matrix made a valid correlation matrix (symmetric, unit diagonal, positive definite)."""
    symmetric = (matrix + matrix.T) / 2
    eigenvalues, eigenvectors = np.linalg.eigh(symmetric)
    fixed = eigenvectors @ np.diag(np.clip(eigenvalues, 1e-6, None)) @ eigenvectors.T
    scale = np.sqrt(np.diag(fixed))
    result = fixed / np.outer(scale, scale)
    np.fill_diagonal(result, 1.0)
    return result


@dataclass
class GaussianCopula:
    marginals: list[Marginal]
    correlation: np.ndarray

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> GaussianCopula:
        """Fit marginals and the correlation of normal scores on rows."""
        marginals = [empirical_marginal(frame[c]) for c in frame.columns]
        scores = np.column_stack([m.normal_scores(frame[m.name]) for m in marginals])
        if len(frame) > 2 and scores.shape[1] > 1:
            with np.errstate(invalid="ignore", divide="ignore"):
                correlation = np.nan_to_num(np.corrcoef(scores, rowvar=False))
        else:
            correlation = np.eye(len(marginals))
        np.fill_diagonal(correlation, 1.0)
        return cls(marginals, nearest_correlation(correlation))

    def sample(self, count: int, rng: np.random.Generator) -> pd.DataFrame:
        cholesky = np.linalg.cholesky(self.correlation)
        normal = rng.standard_normal((count, len(self.marginals))) @ cholesky.T
        uniform = stats.norm.cdf(normal)
        return pd.DataFrame(
            {m.name: m.inverse_cdf(uniform[:, i]) for i, m in enumerate(self.marginals)}
        )
