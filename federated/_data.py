"""A node's own data: a scikit-learn builtin set, or a CSV / Parquet file with a label column.

Read locally with pyarrow (a node does not start Ray); features must be numeric.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlaas.errors import ValidationError

BUILTINS = ("digits", "iris", "wine", "breast_cancer")


def load_local_data(source: str, *, target: str = "target") -> tuple[np.ndarray, np.ndarray]:
    """Features (float32) and integer labels of ``source``.

    Raises:
        ValidationError: unknown builtin, missing file or column, non-numeric features.
    """
    if source.startswith("builtin:"):
        return _builtin(source.removeprefix("builtin:"))
    path = Path(source).expanduser()
    if not path.is_file():
        raise ValidationError(f"data file {source} does not exist", details={"field": "data"})
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    table = pq.read_table(path) if path.suffix.lower() in (".parquet", ".pq") \
        else pa_csv.read_csv(path)
    frame = table.to_pandas()
    if target not in frame.columns:
        raise ValidationError(f"{source} has no label column {target!r} (use --target)",
                              details={"field": "target", "columns": list(frame.columns)})
    features = frame.drop(columns=[target])
    not_numeric = [c for c in features.columns if features[c].dtype.kind not in "iuf"]
    if not_numeric:
        raise ValidationError(f"{source}: columns {not_numeric} are not numeric",
                              details={"field": "data"})
    return features.to_numpy(np.float32), frame[target].to_numpy().astype(np.int64)


def _builtin(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name not in BUILTINS:
        raise ValidationError(f"unknown builtin data set {name!r}; one of {BUILTINS}",
                              details={"field": "data"})
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")()
    return np.asarray(bunch.data, np.float32), np.asarray(bunch.target, np.int64)
