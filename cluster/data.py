"""Training data: scikit-learn's bundled sets, CSV/Parquet read with Ray Data, and text files.

``check_data`` is the cheap pre-flight the CLI and the gateway run before anything is
submitted (the file exists, the columns are there); ``load_data`` reads everything into
NumPy arrays on the driver, split into training and validation sets.
"""

from __future__ import annotations

import math
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.fs as pa_fs
import pyarrow.parquet as pq

from cluster.errors import SpecError
from cluster.spec import JobSpec, candidate_paths, confined_path, is_within
from mlaas.errors import ValidationError
from mlaas.settings import REPO_ROOT, Settings, get_settings
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


NO_LOCAL_DATA = (
    "no such file where you may read data: your data folder (data/<tenant id>/ of the "
    "platform home, or datasets/<tenant id>/ of its storage) or configs/data; or use "
    "builtin:<name> or a URI"
)
NO_MODEL_FOLDER = (
    "no transformers model folder (one with a config.json) there: name a folder in your data "
    "folder, package:<module> of a package the operator allows, or a hub repo id cached on "
    "the platform"
)
_HUB_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")


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
    data in ``configs/data``). With ``confine`` (the API), every path is normalised (``..``,
    symlinks) first: a local data path must lie in ``base_dir``, the tenant's datasets
    folder of a local platform storage, or the sample data folder; a model folder in
    ``base_dir`` (or be ``package:`` of an allow-listed package, or a cached hub repo id); a
    remote URI must pass :func:`mlaas.tenant_uris.check_tenant_uri` (the tenant's own storage
    prefix or an allow-listed bucket; no query, no credentials), and a relative name found
    nowhere locally names a file under the tenant's storage prefix. A path that is missing
    and one that is elsewhere get the same refusal, so it tells nothing of other files.

    Raises:
        SpecError: 422 on ``data.source`` (or ``model.path``).
        ForbiddenError: 403 for a URI outside the tenant's prefix and the allow-list.
    """
    if spec.model.type == "huggingface" and confine:
        folder = _confined_model_path(
            spec.model.path, base_dir, source, settings or get_settings()
        )
        spec = spec.model_copy(update={"model": spec.model.model_copy(update={"path": folder})})
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
            return _own_storage_uri(storage, text, source, tenant_id, settings)
    own = storage.local_path(tenant_data_prefix(tenant_id)) if storage and tenant_id else None
    local = [base_dir, *([own] if own else [])]
    allowed = [*local, SAMPLE_DATA_DIR]
    path = text.removeprefix("file://")
    found = confined_path(path, [*local, REPO_ROOT], allowed, exists=Path.is_file)
    if found is not None:
        return str(found)
    # Not there (yet): a name in the tenant's folder is left to check_data, which refuses a
    # missing file with the very words used here for a path elsewhere.
    mine = next(iter(candidate_paths(path, local)), None)
    try:
        if mine is not None and is_within(mine.resolve(), allowed):
            return str(mine.resolve())
    except (OSError, RuntimeError, ValueError):
        pass
    raise SpecError(source, "data.source", NO_LOCAL_DATA)


def _own_storage_uri(
    storage: Storage, text: str, source: str, tenant_id: str, settings: Settings | None
) -> str:
    """The checked URI of a file of the platform storage, which must stay under the tenant's
    prefix even when a local storage's folders are followed through their symlinks."""
    uri = check_tenant_uri(text, tenant_id, settings, field="data.source")
    key = storage.key_of(uri)
    own = storage.local_path(tenant_data_prefix(tenant_id))
    local = storage.local_path(key) if key is not None else None
    if local is not None and own is not None:
        try:
            inside = is_within(local.resolve(), [own])
        except (OSError, RuntimeError, ValueError):
            inside = False
        if not inside:
            raise SpecError(source, "data.source", NO_LOCAL_DATA)
    return uri


def _names_storage(storage: Storage, text: str, base_dir: Path) -> bool:
    """Whether a local-looking source means the platform storage: a path inside a local
    storage, or (remote storage) a relative name that no allowed local folder holds."""
    if text.startswith(("file://", "/")):
        uri = text if text.startswith("file://") else Path(text).as_uri()
        return storage.key_of(uri) is not None
    if storage.scheme == "file" or text.startswith("~"):
        return False
    name = posixpath.normpath(text)
    if name == ".." or name.startswith("../"):
        return False  # it climbs out: refused as a local path, like any other escape
    found = confined_path(
        text, [base_dir, REPO_ROOT], [base_dir, SAMPLE_DATA_DIR], exists=Path.is_file
    )
    return found is None


def _confined_model_path(path: str, base_dir: Path, source: str, settings: Settings) -> str:
    """A model path a tenant may name, as the job is to read it: an absolute folder in their
    data folder, ``package:<module>`` of an allow-listed package, or a cached hub repo id."""
    if path.startswith("package:"):
        # Only allow-listed modules are imported: importing runs the module's code.
        if path.removeprefix("package:") in settings.package_allowlist and _has_model(path):
            return path
        raise SpecError(source, "model.path", NO_MODEL_FOLDER, received=path)
    folder = confined_path(path, [base_dir], [base_dir], exists=_is_model_folder)
    if folder is not None:
        return str(folder)
    if _HUB_REPO_ID.match(path) and ".." not in path and _is_cached_hub_repo(path):
        return path
    raise SpecError(source, "model.path", NO_MODEL_FOLDER, received=path)


def _is_model_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file()


def _has_model(path: str) -> bool:
    from cluster.zoo.hf import resolve_model_folder

    try:
        return _is_model_folder(resolve_model_folder(path))
    except Exception:  # noqa: BLE001 - a package that breaks on import has no model either
        return False


def _is_cached_hub_repo(repo_id: str) -> bool:
    from huggingface_hub import snapshot_download

    try:
        return _is_model_folder(Path(snapshot_download(repo_id=repo_id, local_files_only=True)))
    except Exception:  # noqa: BLE001 - not cached, or not a repo id after all
        return False


def shown_path(source: str, settings: Settings | None = None) -> str:
    """A data path as an error may show it: relative to the tenant's folder (or storage
    prefix) or to the repository, or a URI the tenant wrote; never a server's own path."""
    settings = settings or get_settings()
    if "://" in source:
        key = get_storage(settings).key_of(source)
        if key is not None:
            return key.split("/", 2)[-1] if key.startswith("datasets/") else Path(key).name
        return Path(source).name if source.startswith("file://") else source
    path = Path(source)
    if not path.is_absolute():
        return source  # as written
    if path.is_relative_to(settings.home / "data") and len(path.parts) > len(
        (settings.home / "data").parts
    ) + 1:
        return str(Path(*path.parts[len((settings.home / "data").parts) + 1 :]))
    if path.is_relative_to(REPO_ROOT):
        return str(path.relative_to(REPO_ROOT))
    return path.name


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
        raise SpecError(source, "data.source", NO_LOCAL_DATA)
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

    path = spec.model.path  # type: ignore[union-attr]
    try:
        resolve_model_folder(path)
    except (FileNotFoundError, ImportError, AttributeError) as exc:
        # What was tried is a server path: the refusal names the path only as written.
        shown = path if path.startswith("package:") or "://" in path else shown_path(path)
        raise SpecError(source, "model.path", NO_MODEL_FOLDER, received=shown) from exc


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
        raise SpecError(
            shown_path(data.source), "data.features", f"columns {not_numeric} are not numeric"
        )
    x = frame[features].to_numpy(dtype=np.float32)
    if np.isnan(x).any():
        raise SpecError(
            shown_path(data.source), "data.features", "feature columns contain missing values"
        )
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
        raise SpecError(
            shown_path(data.source), "data.text_column", "every row needs a non-empty text"
        )
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
            shown_path(spec.data.source),
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
        raise SpecError(
            shown_path(spec.data.source), "data.source", f"text too short for block_size {block}"
        )
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
