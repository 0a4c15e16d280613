"""The training job spec: what to train, on what data, how, and for how long.

Specs are YAML files in ``configs/train/`` (or the JSON body of ``POST /v1/train``),
validated here by pydantic. Every refusal names the file, the field and the reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from cluster.errors import SpecError
from mlaas.settings import REPO_ROOT

BUILTIN_DATASETS = ("digits", "iris", "wine", "breast_cancer")
TABULAR_SUFFIXES = (".csv", ".parquet", ".pq")


class _FieldProblem(ValueError):
    """A cross-field problem that knows which field to blame."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MLPModel(_Strict):
    """A multilayer perceptron for tabular (or flattened image) features."""

    type: Literal["mlp"] = "mlp"
    hidden_sizes: list[Annotated[int, Field(ge=1, le=65_536)]] = Field(
        default_factory=lambda: [128]
    )
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)


class CNNModel(_Strict):
    """A small convolutional network for single-image inputs (``image_shape`` = C, H, W)."""

    type: Literal["cnn"] = "cnn"
    channels: list[Annotated[int, Field(ge=1, le=4096)]] = Field(default_factory=lambda: [16, 32])
    hidden_size: int = Field(default=64, ge=1, le=65_536)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    image_shape: tuple[int, int, int] | None = Field(
        default=None, description="(channels, height, width); known for builtin:digits"
    )


class GPTModel(_Strict):
    """A small GPT-style causal language model (character level)."""

    type: Literal["gpt"] = "gpt"
    n_layer: int = Field(default=2, ge=1, le=96)
    n_head: int = Field(default=2, ge=1, le=128)
    n_embd: int = Field(default=64, ge=8, le=16_384)
    block_size: int = Field(default=64, ge=2, le=8192)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> GPTModel:
        if self.n_embd % self.n_head:
            raise _FieldProblem(
                "model.n_embd", f"must be a multiple of n_head ({self.n_head}), got {self.n_embd}"
            )
        return self


class HuggingFaceModel(_Strict):
    """A transformers encoder fine-tuned with a classification head on a text column."""

    type: Literal["huggingface"] = "huggingface"
    path: str = Field(
        min_length=1,
        description="a model folder, package:<module> (a folder shipped in a Python package), "
        "or a hub repo id in the Hugging Face cache",
    )
    max_length: int = Field(default=64, ge=8, le=512, description="tokens per text")
    freeze_encoder: bool = Field(default=False, description="train the head only")


ModelSpec = Annotated[
    MLPModel | CNNModel | GPTModel | HuggingFaceModel, Field(discriminator="type")
]


class DataSpec(_Strict):
    """Where the examples come from.

    ``source`` is ``builtin:<name>`` (scikit-learn's bundled sets), a path or URI of a CSV or
    Parquet file (read with Ray Data), or a text file for the language model.
    """

    source: str = Field(min_length=1)
    target: str | None = Field(default=None, description="label column of a CSV/Parquet file")
    features: list[str] | None = Field(
        default=None, description="feature columns (default: all others)"
    )
    text_column: str | None = Field(
        default=None, description="the text column a huggingface model reads"
    )

    @property
    def builtin(self) -> str | None:
        return self.source.removeprefix("builtin:") if self.source.startswith("builtin:") else None

    @property
    def is_text(self) -> bool:
        return self.builtin is None and not self.source.lower().endswith(TABULAR_SUFFIXES)


class DDPStrategy(_Strict):
    type: Literal["ddp"] = "ddp"


class DeepSpeedStrategy(_Strict):
    type: Literal["deepspeed"] = "deepspeed"
    config: str = Field(default="configs/deepspeed/zero2.json", description="DeepSpeed JSON config")
    zero_stage: Literal[0, 1, 2, 3] | None = Field(default=None, description="overrides the JSON")
    offload_optimizer: bool | None = Field(default=None, description="overrides the JSON")
    offload_params: bool | None = Field(default=None, description="overrides the JSON (stage 3)")


class TensorflowStrategy(_Strict):
    type: Literal["tensorflow"] = "tensorflow"


StrategySpec = Annotated[
    DDPStrategy | DeepSpeedStrategy | TensorflowStrategy, Field(discriminator="type")
]


class ScalingSpec(_Strict):
    num_workers: int = Field(default=2, ge=1, le=1024)
    use_gpu: bool = False
    resources_per_worker: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: {"CPU": 1.0}
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        default="PACK",
        description="how the workers' bundles land on nodes: STRICT_SPREAD puts each worker "
        "on a node of its own (and waits until there are that many nodes)",
    )


class Hyperparameters(_Strict):
    lr: float = Field(default=1e-3, gt=0, le=10)
    batch_size: int = Field(default=64, ge=1, le=1_000_000, description="per worker")
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    steps_per_epoch: int = Field(default=50, ge=1, description="language model only")
    precision: Literal["fp32", "bf16"] = Field(
        default="fp32",
        description="ddp: bf16 autocast of the forward and loss (deepspeed: its JSON's bf16)",
    )


class TeacherRef(_Strict):
    model: str = Field(min_length=1, description="a registered model of the same tenant")
    version: int | str = Field(default="latest", description="number, 'latest' or a stage")


class DistillSpec(_Strict):
    teacher: TeacherRef
    temperature: float = Field(default=4.0, gt=0, le=100)
    alpha: float = Field(default=0.7, ge=0, le=1, description="weight of the soft-target loss")


class TuneSpec(_Strict):
    """A Ray Tune search: each trial is this spec with the sampled values set at their paths."""

    search_space: dict[str, dict[str, Any]] = Field(min_length=1)
    num_samples: int = Field(default=4, ge=1, le=10_000)
    metric: Literal["val_accuracy", "val_loss", "loss"] = "val_accuracy"
    mode: Literal["min", "max"] = "max"
    max_concurrent_trials: int = Field(default=2, ge=1)
    grace_period: int = Field(default=1, ge=1, description="ASHA: epochs before a trial may stop")
    reduction_factor: float = Field(default=2, gt=1)


# The settings AI-enhanced training may fill in when the spec leaves them open, by model type.
TUNABLE_FIELDS = {
    "mlp": ("hyperparameters.lr", "hyperparameters.batch_size", "hyperparameters.weight_decay",
            "model.hidden_sizes", "model.dropout"),
    "cnn": ("hyperparameters.lr", "hyperparameters.batch_size", "hyperparameters.weight_decay",
            "model.hidden_size", "model.dropout"),
}  # fmt: skip


class AIEnhancementSpec(_Strict):
    """What the AI providers do before training: synthetic rows added to the training split
    (never to the validation split), values for the settings the spec left open, and a
    comparison run without either, so the job's metrics show what the enhancement changed."""

    synthetic_rows: int | None = Field(
        default=None, ge=0, le=100_000,
        description="rows generated from the training split and added to it (default: half "
        "its size, at most 10,000; 0: none)",
    )  # fmt: skip
    suggest_settings: bool = Field(
        default=True, description="ask for values of the settings the spec leaves open"
    )
    compare: bool = Field(
        default=True, description="also train without the enhancement, on the same split"
    )
    providers: list[str] = Field(
        default_factory=list, max_length=10,
        description="providers to prefer, in order (default: the router's routing; the keyless "
        "local provider answers when no other is configured)",
    )  # fmt: skip
    open_fields: list[str] | None = Field(
        default=None,
        description="set when the spec is validated: the settings it left open, to be suggested",
    )

    def scheduled(self) -> list[str]:
        """The enhancements a job with this block carries out, in the documented names."""
        open_fields = self.open_fields or []
        steps = [] if self.synthetic_rows == 0 else ["synthetic_data_generation"]
        if self.suggest_settings and any(f.startswith("model.") for f in open_fields):
            steps.append("architecture_optimization")
        if self.suggest_settings and any(f.startswith("hyperparameters.") for f in open_fields):
            steps.append("hyperparameter_tuning")
        if self.compare:
            steps.append("baseline_comparison")
        return steps


class RegistrySpec(_Strict):
    model_name: str | None = Field(default=None, description="default: the job's name")
    stage: Literal["staging", "production"] = "staging"


class JobSpec(_Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    model: ModelSpec
    data: DataSpec
    strategy: StrategySpec = Field(default_factory=DDPStrategy)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    epochs: int = Field(default=5, ge=1, le=100_000)
    validation_split: float = Field(default=0.2, gt=0, lt=1)
    checkpoint_every: int = Field(default=1, ge=1, description="epochs between checkpoints")
    max_failures: int = Field(default=2, ge=-1, description="worker failures to recover from")
    seed: int = 0
    tune: TuneSpec | None = None
    distill: DistillSpec | None = None
    ai_enhancement: AIEnhancementSpec | None = None
    target_accuracy: float | None = Field(
        default=None, gt=0, le=1,
        description="the validation accuracy aimed at; the job reports whether it was met",
    )  # fmt: skip
    registry: RegistrySpec = Field(default_factory=RegistrySpec)

    @property
    def model_name(self) -> str:
        return self.registry.model_name or self.name

    @property
    def task(self) -> str:
        return "language_modeling" if self.model.type == "gpt" else "classification"

    @model_validator(mode="after")
    def _parts_fit_together(self) -> JobSpec:
        for field, problem in _combination_problems(self):
            raise _FieldProblem(field, problem)
        enhancement = self.ai_enhancement
        if enhancement is not None and enhancement.open_fields is None:
            enhancement.open_fields = self._left_open()
        return self

    def _left_open(self) -> list[str]:
        """The tunable settings this spec was given no value for (defaults count as open)."""
        given = {
            "hyperparameters": self.hyperparameters.model_fields_set
            if "hyperparameters" in self.model_fields_set else set(),
            "model": self.model.model_fields_set,
        }  # fmt: skip
        return [
            path for path in TUNABLE_FIELDS.get(self.model.type, ())
            if path.split(".")[1] not in given[path.split(".")[0]]
        ]  # fmt: skip


_BF16_ELSEWHERE = {
    "deepspeed": "DeepSpeed takes bf16 from its JSON config: set strategy.config to "
    "configs/deepspeed/zero2-gpu-bf16.json (or bf16.enabled in yours) and keep precision fp32",
    "tensorflow": "bf16 autocast is for the ddp strategy; the tensorflow strategy trains in fp32",
}


def _combination_problems(spec: JobSpec) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if spec.model.type == "gpt" and not spec.data.is_text:
        problems.append(("data.source", "a gpt model trains on a text file"))
    if spec.model.type != "gpt" and spec.data.is_text:
        problems.append(
            (
                "data.source",
                f"must be builtin:{{{'|'.join(BUILTIN_DATASETS)}}} or a .csv/.parquet file",
            )
        )
    if spec.data.builtin is not None and spec.data.builtin not in BUILTIN_DATASETS:
        problems.append(("data.source", f"unknown builtin dataset; use one of {BUILTIN_DATASETS}"))
    if spec.model.type == "huggingface" and (spec.data.is_text or spec.data.builtin):
        problems.append(("data.source", "a huggingface model trains on a .csv/.parquet file"))
    if spec.model.type == "huggingface" and not spec.data.text_column:
        problems.append(("data.text_column", "name the text column the huggingface model reads"))
    if spec.model.type != "huggingface" and spec.data.text_column:
        problems.append(("data.text_column", "only huggingface models read a text column"))
    if spec.strategy.type == "tensorflow" and spec.model.type != "mlp":
        problems.append(("model.type", "the tensorflow strategy trains Keras MLPs only"))
    torch_vision_model = spec.model.type in ("mlp", "cnn")
    if spec.distill and (not torch_vision_model or spec.strategy.type == "tensorflow"):
        problems.append(("distill", "distillation trains a torch (ddp/deepspeed) MLP or CNN"))
    if spec.ai_enhancement is not None:
        problems.extend(_enhancement_problems(spec, spec.ai_enhancement))
    if spec.tune and spec.strategy.type != "ddp":
        problems.append(("tune", "Tune searches run with the ddp strategy"))
    if spec.hyperparameters.precision == "bf16" and spec.strategy.type != "ddp":
        problems.append(("hyperparameters.precision", _BF16_ELSEWHERE[spec.strategy.type]))
    if spec.scaling.use_gpu and spec.scaling.resources_per_worker.get("GPU", 1) <= 0:
        problems.append(("scaling.resources_per_worker.GPU", "use_gpu needs a GPU per worker"))
    return problems


def _enhancement_problems(spec: JobSpec, enhancement: AIEnhancementSpec) -> list[tuple[str, str]]:
    problems = []
    if spec.model.type not in TUNABLE_FIELDS:
        problems.append(
            ("ai_enhancement", "AI-enhanced training is for mlp and cnn models on tabular data")
        )
    if spec.tune is not None:
        problems.append(("ai_enhancement", "a Tune search chooses settings itself: use one"))
    unknown = set(enhancement.open_fields or ()) - set(TUNABLE_FIELDS.get(spec.model.type, ()))
    if unknown:
        problems.append(("ai_enhancement.open_fields", f"not tunable: {sorted(unknown)}"))
    return problems


def _field_of(loc: tuple[Any, ...]) -> str:
    # Drop the tag pydantic inserts for discriminated unions: ("model", "mlp", "dropout").
    tags = {"mlp", "cnn", "gpt", "huggingface", "ddp", "deepspeed", "tensorflow"}
    parts = [
        str(part)
        for i, part in enumerate(loc)
        if not (i > 0 and loc[i - 1] in ("model", "strategy") and part in tags)
    ]
    return ".".join(parts) or "(root)"


def validate_spec(raw: Any, source: str = "<request>") -> JobSpec:
    """A validated spec from a dict.

    Raises:
        SpecError: naming ``source``, the first invalid field, and the reason.
    """
    if not isinstance(raw, dict):
        raise SpecError(source, "(root)", "a job spec is a mapping of fields")
    try:
        spec = JobSpec.model_validate(raw)
    except PydanticValidationError as exc:
        first = exc.errors()[0]
        cause = (first.get("ctx") or {}).get("error")
        if isinstance(cause, _FieldProblem):
            raise SpecError(source, cause.field, str(cause)) from exc
        reason = first["msg"].removeprefix("Value error, ")
        raise SpecError(
            source, _field_of(tuple(first["loc"])), reason, received=first.get("input")
        ) from exc
    if spec.tune is not None:
        _check_search_space(spec, source)
    return spec


SEARCH_KINDS = ("choice", "grid", "uniform", "loguniform", "randint")


def _check_search_space(spec: JobSpec, source: str) -> None:
    """Each search dimension is one known distribution whose values make a valid spec."""
    assert spec.tune is not None
    base = spec.model_dump(mode="json", exclude={"tune"})
    for path, definition in spec.tune.search_space.items():
        field = f"tune.search_space.{path}"
        if path.split(".")[0] == "tune":
            raise SpecError(source, field, "a search cannot change the tune settings")
        if len(definition) != 1 or next(iter(definition)) not in SEARCH_KINDS:
            raise SpecError(source, field, f"give exactly one of {SEARCH_KINDS}")
        kind, values = next(iter(definition.items()))
        if not isinstance(values, list) or not values:
            raise SpecError(source, field, f"{kind} needs a non-empty list")
        if kind in ("uniform", "loguniform", "randint"):
            if (
                len(values) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
                or not values[0] < values[1]
                or (kind == "loguniform" and values[0] <= 0)
            ):
                raise SpecError(
                    source, field, f"{kind} needs numbers [low, high] with 0 < low < high"
                )
            values = values[:1]
        for value in values:
            raw = json.loads(json.dumps(base))
            try:
                set_path(raw, path, value)
                validate_spec(raw, source)
            except (SpecError, ValueError) as exc:
                reason = getattr(exc, "reason", str(exc))
                raise SpecError(source, field, f"{value!r} does not fit: {reason}") from exc


def set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, making the intermediate mappings."""
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {} if child is None else child
            if not isinstance(child, dict):
                raise ValueError(f"{part!r} in {dotted!r} is not a mapping")
        node = child
    node[leaf] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Apply ``--set key.path=value`` overrides; values are YAML (``3``, ``[64]``, ``true``)."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(source, item, "--set needs key=value, for example epochs=3")
        try:
            set_path(raw, key.strip(), yaml.safe_load(text))
        except (ValueError, yaml.YAMLError) as exc:
            raise SpecError(source, key.strip(), str(exc)) from exc
    return raw


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a YAML (or JSON) spec file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SpecError(
            str(path), "(file)", f"cannot read the file: {exc.strerror or exc}"
        ) from exc
    except yaml.YAMLError as exc:
        raise SpecError(str(path), "(file)", f"not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(str(path), "(root)", "a job spec is a mapping of fields")
    return raw


def load_spec(path: str | Path, overrides: list[str] | None = None) -> JobSpec:
    """Read, override and validate a spec file."""
    raw = apply_overrides(read_spec_file(path), overrides or [], str(path))
    return validate_spec(raw, str(path))


SHIPPED_DEEPSPEED_DIR = REPO_ROOT / "configs" / "deepspeed"
NO_DEEPSPEED_CONFIG = (
    "no such DeepSpeed JSON config where you may name one: use a file shipped in "
    "configs/deepspeed/ (e.g. configs/deepspeed/zero2.json) or one in your data folder"
)


def confined_path(
    text: str,
    search: list[Path],
    allowed: list[Path],
    *,
    exists: Callable[[Path], bool] = Path.exists,
) -> Path | None:
    """``text`` normalised (``~``, ``..``, symlinks) to the first match that lies in one of
    ``allowed``: as given when absolute, else relative to each folder of ``search``.

    None when there is none, whether the path is missing or lies elsewhere: a caller refuses
    both the same way, so the answer says nothing about the rest of the filesystem.
    """
    for candidate in candidate_paths(text, search):
        try:
            resolved = candidate.resolve()
            if is_within(resolved, allowed) and exists(resolved):
                return resolved
        except (OSError, RuntimeError, ValueError):  # a loop, a NUL, a name too long
            continue
    return None


def candidate_paths(text: str, search: list[Path]) -> list[Path]:
    """Where a tenant's path could be: itself when absolute, else under each search folder."""
    try:
        path = Path(text).expanduser()
    except (RuntimeError, ValueError):  # ~user of no such user
        return []
    return [path] if path.is_absolute() else [root / path for root in search]


def is_within(resolved: Path, allowed: list[Path]) -> bool:
    """Whether a resolved path is one of the ``allowed`` folders or under one (resolved too)."""
    return any(resolved.is_relative_to(root.resolve()) for root in allowed)


def confined_deepspeed_config(spec: JobSpec, tenant_dir: Path, source: str) -> JobSpec:
    """The spec with ``strategy.config`` made the absolute path of an allowed, valid config.

    A config is allowed in the shipped ``configs/deepspeed/`` or in the tenant's folder; any
    other path, existing or not, gets the same refusal.

    Raises:
        SpecError: on ``strategy.config``, naming the path only as the tenant wrote it.
    """
    strategy = spec.strategy
    assert isinstance(strategy, DeepSpeedStrategy)
    found = confined_path(
        strategy.config,
        [tenant_dir, REPO_ROOT],
        [tenant_dir, SHIPPED_DEEPSPEED_DIR],
        exists=Path.is_file,
    )
    if found is None:
        raise SpecError(source, "strategy.config", NO_DEEPSPEED_CONFIG, received=strategy.config)
    confined = spec.model_copy(
        update={"strategy": strategy.model_copy(update={"config": str(found)})}
    )
    deepspeed_config(confined, source)
    return confined


def resolve_config_path(relative: str) -> Path:
    """A config file named in a spec: as given, else relative to the repository root."""
    candidate = Path(relative).expanduser()
    if candidate.is_absolute() or candidate.exists():
        return candidate.resolve()
    return (REPO_ROOT / relative).resolve()


def deepspeed_config(spec: JobSpec, source: str = "<request>") -> dict[str, Any]:
    """The DeepSpeed JSON config of a deepspeed spec with the spec's overrides applied.

    Errors name the field, never the file's path: in a job it is a path on the server.
    """
    strategy = spec.strategy
    assert isinstance(strategy, DeepSpeedStrategy)
    config = _read_json_object(resolve_config_path(strategy.config), source)
    zero = config.setdefault("zero_optimization", {})
    if not isinstance(zero, dict):
        raise SpecError(source, "strategy.config", "zero_optimization must be a JSON object")
    if strategy.zero_stage is not None:
        zero["stage"] = strategy.zero_stage
    if strategy.offload_optimizer is not None:
        _set_offload(zero, "offload_optimizer", strategy.offload_optimizer)
    if strategy.offload_params is not None:
        _set_offload(zero, "offload_param", strategy.offload_params)
    if zero.get("stage", 0) not in (0, 1, 2, 3):
        raise SpecError(source, "strategy.config", "zero_optimization.stage must be 0-3")
    if "offload_param" in zero and zero.get("stage") != 3:
        raise SpecError(source, "strategy.offload_params", "parameter offload needs ZeRO stage 3")
    return config


def _read_json_object(path: Path, source: str) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SpecError(source, "strategy.config", f"cannot read the file ({reason})") from exc
    except json.JSONDecodeError as exc:
        raise SpecError(
            source,
            "strategy.config",
            f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
        ) from exc
    except UnicodeDecodeError as exc:
        raise SpecError(source, "strategy.config", "not valid JSON (not UTF-8 text)") from exc
    if not isinstance(config, dict):
        raise SpecError(source, "strategy.config", "a DeepSpeed config is a JSON object")
    return config


def _set_offload(zero: dict[str, Any], key: str, enabled: bool) -> None:
    if enabled:
        zero[key] = {"device": "cpu", "pin_memory": False}
    else:
        zero.pop(key, None)
