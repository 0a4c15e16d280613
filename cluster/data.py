"""Training data: scikit-learn's bundled sets, CSV/Parquet read with Ray Data, and text files.

``check_data`` is the cheap pre-flight the CLI and the gateway run before anything is
submitted (the file exists, the columns are there); ``load_data`` reads everything into
NumPy arrays on the driver, split into training and validation sets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.fs as pa_fs
import pyarrow.parquet as pq

from cluster.errors import SpecError
from cluster.spec import JobSpec
from mlaas.errors import ValidationError
from mlaas.settings import REPO_ROOT, Settings
from mlaas.storage import Storage, get_storage, tenant_data_prefix
from mlaas.tenant_uris import check_tenant_uri, check_uri_syntax, filesystem_of

_DIGITS_IMAGE_SHAPE = (1, 8, 8)
SAMPLE_DATA_DIR = (REPO_ROOT / "configs" / "data").resolve()


@dataclass
class DatasetInfo:
    """What a model needs to know about its data, and what the registry records as schema."""

    task: str
    num_features: int = 0
    num_classes: int = 0
    feature_names: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    image_shape: tuple[int, int, int] | None = None
    vocab: str = ""
    baseline: dict[str, float] = field(default_factory=dict)


@dataclass
class PreparedData:
    """Training and validation arrays: features and labels, or token ids for a language model."""

    info: DatasetInfo
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def resolve_data_source(
    spec: JobSpec,
    base_dir: Path,
    *,
    confine: bool,
    source: str,
    tenant_id: str | None = None,
    settings: Settings | None = None,
) -> JobSpec:
    """The spec with a local data path made absolute, or a tenant's URI checked.

    A relative path is looked up in ``base_dir``, then in the repository (for the sample
    data in ``configs/data``). With ``confine`` (the API), a local path must lie in
    ``base_dir``, the tenant's datasets folder of a local platform storage, or the sample
    data folder; a remote URI must pass :func:`mlaas.tenant_uris.check_tenant_uri` (the
    tenant's own storage prefix or an allow-listed bucket; no query, no credentials), and
    a relative name found nowhere locally names a file under the tenant's storage prefix.

    Raises:
        SpecError: 422 on ``data.source`` (or ``model.path``).
        ForbiddenError: 403 for a URI outside the tenant's prefix and the allow-list.
    """
    if spec.model.type == "huggingface" and confine:
        _confine_model_folder(spec.model.path, base_dir, source)
    text = spec.data.source
    if spec.data.builtin is not None:
        return spec
    if confine:
        resolved = _confined_source(text, base_dir, source, tenant_id, settings)
    elif "://" in text and not text.startswith("file://"):
        return spec
    else:
        path = Path(text.removeprefix("file://")).expanduser()
        resolved = str(_first_existing(path, [base_dir, REPO_ROOT]))
    data = spec.data.model_copy(update={"source": resolved})
    return spec.model_copy(update={"data": data})


def _first_existing(path: Path, roots: list[Path]) -> Path:
    candidates = [path] if path.is_absolute() else [root / path for root in roots]
    return next((c for c in candidates if c.exists()), candidates[0]).resolve()


def _confined_source(
    text: str, base_dir: Path, source: str, tenant_id: str | None, settings: Settings | None
) -> str:
    """Where an API spec's data is: a local path in an allowed folder, or a checked URI."""
    try:
        check_uri_syntax(text, field="data.source")
    except ValidationError as exc:
        raise SpecError(source, "data.source", exc.details["reason"], received=text) from exc
    remote = "://" in text and not text.startswith("file://")
    if tenant_id is None:
        if remote:
            raise SpecError(source, "data.source", "remote data needs a tenant")
        storage = None
    else:
        storage = get_storage(settings)
        if remote or _names_storage(storage, text, base_dir):
            return check_tenant_uri(text, tenant_id, settings, field="data.source")
    own = storage.local_path(tenant_data_prefix(tenant_id)) if storage and tenant_id else None
    roots = [base_dir, *([own] if own else []), REPO_ROOT]
    resolved = _first_existing(Path(text.removeprefix("file://")).expanduser(), roots)
    allowed = [base_dir.resolve(), *([own.resolve()] if own else []), SAMPLE_DATA_DIR]
    if not any(resolved.is_relative_to(root) for root in allowed):
        if storage is not None and tenant_id and storage.key_of(resolved.as_uri()) is not None:
            # Another tenant's files or the platform's own: the same 403 as for their URIs.
            check_tenant_uri(resolved.as_uri(), tenant_id, settings, field="data.source")
        raise SpecError(
            source,
            "data.source",
            "local data must be in your data folder (data/<tenant id>/ of the platform home, "
            "or datasets/<tenant id>/ of its storage) or in configs/data "
            "(or use builtin:<name> or a URI)",
            received=text,
        )
    return str(resolved)


def _names_storage(storage: Storage, text: str, base_dir: Path) -> bool:
    """Whether a local-looking source means the platform storage: a path inside a local
    storage, or (remote storage) a relative name that no local folder holds."""
    if text.startswith(("file://", "/")):
        uri = text if text.startswith("file://") else Path(text).as_uri()
        return storage.key_of(uri) is not None
    if storage.scheme == "file" or text.startswith("~"):
        return False
    return not any((root / text).exists() for root in (base_dir, REPO_ROOT))


def _confine_model_folder(path: str, base_dir: Path, source: str) -> None:
    # Through the API a folder must be the tenant's own; packages and cached hub repos are fine.
    if path.startswith("package:") or not path.startswith((".", "/", "~")):
        return
    if not Path(path).expanduser().resolve().is_relative_to(base_dir.resolve()):
        raise SpecError(
            source,
            "model.path",
            "a model folder must be in your data folder (data/<tenant id>/ of the platform home)",
            received=path,
        )


def _filesystem(source: str) -> tuple[pa_fs.FileSystem, str]:
    # The platform's filesystem (its endpoint and credentials), never from_uri on the string.
    if "://" in source:
        return filesystem_of(source)
    return pa_fs.LocalFileSystem(), str(Path(source).resolve())


def _columns_of(source: str) -> list[str]:
    fs, path = _filesystem(source)
    if source.lower().endswith((".parquet", ".pq")):
        with fs.open_input_file(path) as handle:
            return list(pq.read_schema(handle).names)
    with fs.open_input_stream(path) as handle:
        return list(pa_csv.open_csv(handle).schema.names)


def check_data(spec: JobSpec, source: str = "<request>") -> None:
    """Refuse a data source that does not exist or lacks a named column.

    Raises:
        SpecError: on ``data.source``, ``data.target`` or ``data.features``.
    """
    data = spec.data
    if spec.model.type == "huggingface":
        _check_model_folder(spec, source)
    if data.builtin is not None:
        if data.target is not None or data.features is not None:
            raise SpecError(
                source, "data.target", "builtin datasets have fixed features and labels"
            )
        return
    try:
        fs, path = _filesystem(data.source)
        exists = fs.get_file_info(path).type == pa_fs.FileType.File
    except ValidationError as exc:
        raise SpecError(source, "data.source", exc.message) from exc
    except (OSError, pa.ArrowInvalid) as exc:
        # The reason stays out of the answer: it can quote a server path or what a host sent.
        raise SpecError(source, "data.source", f"cannot open ({_kind_of(exc)})") from exc
    if not exists:
        raise SpecError(source, "data.source", "no such file")
    if data.is_text:
        return
    if not data.target:
        raise SpecError(source, "data.target", "name the label column of the CSV/Parquet file")
    try:
        columns = _columns_of(data.source)
    except (OSError, pa.ArrowInvalid) as exc:
        raise SpecError(
            source, "data.source", f"cannot read the header ({_kind_of(exc)})"
        ) from exc
    for name, where in [
        (data.target, "data.target"),
        *((f, "data.features") for f in data.features or []),
        *([(data.text_column, "data.text_column")] if data.text_column else []),
    ]:
        if name not in columns:
            raise SpecError(source, where, f"column {name!r} not in the file (columns: {columns})")


def _kind_of(exc: Exception) -> str:
    """What went wrong, in words that quote neither a path nor what a server answered."""
    kinds = {FileNotFoundError: "no such file", PermissionError: "permission denied",
             pa.ArrowInvalid: "not a readable CSV/Parquet file"}
    return next((k for t, k in kinds.items() if isinstance(exc, t)), type(exc).__name__)


def _check_model_folder(spec: JobSpec, source: str) -> None:
    from cluster.zoo.hf import resolve_model_folder

    try:
        resolve_model_folder(spec.model.path)  # type: ignore[union-attr]
    except (FileNotFoundError, ImportError, AttributeError) as exc:
        raise SpecError(source, "model.path", str(exc), received=spec.model.path) from exc  # type: ignore[union-attr]


def load_data(spec: JobSpec) -> PreparedData:
    """All of the spec's data as NumPy arrays, split with the spec's seed."""
    if spec.data.is_text:
        return _text_data(spec)
    if spec.model.type == "huggingface":
        x, y, info = _text_classification(spec)
    elif spec.data.builtin is not None:
        x, y, info = _builtin(spec.data.builtin)
    else:
        x, y, info = _tabular(spec)
    if spec.model.type == "cnn":
        info.image_shape = _image_shape(spec, info)
    order = np.random.default_rng(spec.seed).permutation(len(x))
    n_val = max(1, math.ceil(len(x) * spec.validation_split))
    val, train = order[:n_val], order[n_val:]
    majority = np.bincount(y[train], minlength=info.num_classes).argmax()
    info.baseline = {"accuracy": float(np.mean(y[val] == majority))}
    return PreparedData(info, x[train], y[train], x[val], y[val])


def _builtin(name: str) -> tuple[np.ndarray, np.ndarray, DatasetInfo]:
    from sklearn import datasets

    bunch: Any = getattr(datasets, f"load_{name}")()
    x = np.asarray(bunch.data, dtype=np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    names = [str(n) for n in getattr(bunch, "feature_names", [])] or [
        f"x{i}" for i in range(x.shape[1])
    ]
    classes = [str(c) for c in bunch.target_names]
    info = DatasetInfo("classification", x.shape[1], len(classes), names, classes)
    if name == "digits":
        info.image_shape = _DIGITS_IMAGE_SHAPE
    return x, y, info


def _read_frame(source: str) -> Any:
    """A CSV or Parquet file (path or URI) as a pandas frame, read with Ray Data."""
    import ray.data

    reader = (
        ray.data.read_parquet if source.lower().endswith((".parquet", ".pq")) else ray.data.read_csv
    )
    if "://" in source:
        fs, path = _filesystem(source)
        return reader(path, filesystem=fs, ray_remote_args={"num_cpus": 0.25}).to_pandas()
    return reader(source, ray_remote_args={"num_cpus": 0.25}).to_pandas()


def _tabular(spec: JobSpec) -> tuple[np.ndarray, np.ndarray, DatasetInfo]:
    data = spec.data
    frame = _read_frame(data.source)
    assert data.target is not None
    features = data.features or [c for c in frame.columns if c != data.target]
    numeric = frame[features].select_dtypes("number").columns
    not_numeric = [c for c in features if c not in numeric]
    if not_numeric:
        raise SpecError(data.source, "data.features", f"columns {not_numeric} are not numeric")
    x = frame[features].to_numpy(dtype=np.float32)
    if np.isnan(x).any():
        raise SpecError(data.source, "data.features", "feature columns contain missing values")
    classes, y = np.unique(frame[data.target].astype(str).to_numpy(), return_inverse=True)
    info = DatasetInfo(
        "classification", x.shape[1], len(classes), list(features), [str(c) for c in classes]
    )
    return x, y.astype(np.int64), info


def _text_classification(spec: JobSpec) -> tuple[np.ndarray, np.ndarray, DatasetInfo]:
    """A text column tokenized for the spec's huggingface model, and its labels."""
    from cluster.zoo.hf import tokenize

    data = spec.data
    assert data.text_column is not None and data.target is not None
    frame = _read_frame(data.source)
    texts = frame[data.text_column]
    if texts.isna().any() or not all(isinstance(t, str) and t.strip() for t in texts):
        raise SpecError(data.source, "data.text_column", "every row needs a non-empty text")
    x = tokenize(spec.model.path, texts.tolist(), spec.model.max_length).numpy()  # type: ignore[union-attr]
    classes, y = np.unique(frame[data.target].astype(str).to_numpy(), return_inverse=True)
    info = DatasetInfo(
        "classification", 0, len(classes), [data.text_column], [str(c) for c in classes]
    )
    return x, y.astype(np.int64), info


def _image_shape(spec: JobSpec, info: DatasetInfo) -> tuple[int, int, int]:
    shape = getattr(spec.model, "image_shape", None) or info.image_shape
    if shape is None or math.prod(shape) != info.num_features:
        raise SpecError(
            spec.data.source,
            "model.image_shape",
            f"give (channels, height, width) whose product is the {info.num_features} features",
        )
    return tuple(shape)  # type: ignore[return-value]


def read_text(source: str) -> str:
    fs, path = _filesystem(source)
    with fs.open_input_stream(path) as handle:
        return bytes(handle.read()).decode("utf-8", errors="replace")


def _text_data(spec: JobSpec) -> PreparedData:
    text = read_text(spec.data.source)
    vocab = "".join(sorted(set(text)))
    block = getattr(spec.model, "block_size", 64)
    index = {ch: i for i, ch in enumerate(vocab)}
    tokens = np.fromiter((index[ch] for ch in text), dtype=np.int64, count=len(text))
    n_val = max(block + 2, math.ceil(len(tokens) * spec.validation_split))
    if len(tokens) - n_val < block + 2:
        raise SpecError(spec.data.source, "data.source", f"text too short for block_size {block}")
    train, val = tokens[:-n_val], tokens[-n_val:]
    info = DatasetInfo("language_modeling", vocab=vocab)
    info.baseline = {"val_loss": _unigram_cross_entropy(train, val, len(vocab))}
    empty = np.zeros(0, dtype=np.int64)
    return PreparedData(info, train, empty, val, empty)


def _unigram_cross_entropy(train: np.ndarray, val: np.ndarray, vocab_size: int) -> float:
    """Loss (nats per character) of predicting each character by its training frequency."""
    counts = np.bincount(train, minlength=vocab_size) + 1.0
    log_probs = np.log(counts / counts.sum())
    return float(-log_probs[val].mean())
