"""AI-enhanced training's steps without Ray: which settings a spec leaves open, the rows the
local provider adds to the training split (and never to the validation split), junk rows from
a provider, and the tier limit that counts the comparison run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cluster import enhance
from cluster.data import load_data
from cluster.errors import SpecError, TrainingFailed
from cluster.spec import validate_spec
from mlaas import work_limits
from mlaas.settings import Settings
from mlaas.storage import Storage, open_storage
from mlaas.tiers import WorkLimits
from serve_apps.providers.local import LocalProvider
from serve_apps.providers.local.training import suggest
from serve_apps.providers.schemas import SyntheticDataRequest, TrainingSettingsRequest

TENANT = {"tenant_id": "t_1", "tier": "pro", "endpoint": enhance.ENDPOINT}


class LocalProviders:
    """The router's calls answered by the keyless local provider in this process (the job
    reaches the real router through Serve; its answers have this shape)."""

    def __init__(self, storage: Storage) -> None:
        self.local = LocalProvider(storage=storage, inline_rows=1_000_000)

    def configured(self) -> set[str]:
        return {"local"}

    def synthetic_data(self, request: dict[str, Any], tenant: dict[str, Any]) -> dict[str, Any]:
        result = self.local.synthetic_data_now(
            SyntheticDataRequest.model_validate(request), tenant["tenant_id"])
        return {"provider": "local", "model": "local/statistical", "synthetic_data": result}

    def training_settings(
        self, request: dict[str, Any], tenant: dict[str, Any]
    ) -> dict[str, Any]:
        parsed = TrainingSettingsRequest.model_validate(request)
        names = {f.split(".", 1)[1] for f in parsed.open_fields}
        settings = suggest(parsed)
        values = settings.model_dump(exclude={"rationale"})
        return {"provider": "local", "model": "local/statistical",
                "settings": {k: v for k, v in values.items() if k in names and v is not None},
                "rationale": settings.rationale}  # fmt: skip

    def read_dataset(self, tenant_id: str, dataset_id: str) -> bytes:
        raise AssertionError("every row is inline")


def _storage(home: Path) -> Storage:
    return open_storage(Settings(home=home))


def _spec(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "iris-enhanced", "model": {"type": "mlp"}, "data": {"source": "builtin:iris"},
        "scaling": {"num_workers": 1}, "epochs": 3, "ai_enhancement": {},
    }  # fmt: skip
    spec.update(changes)
    return spec


def test_the_settings_a_spec_leaves_open_are_recorded_once_and_kept() -> None:
    spec = validate_spec(_spec(model={"type": "mlp", "dropout": 0.2},
                               hyperparameters={"lr": 0.01}))  # fmt: skip
    again = validate_spec(spec.model_dump(mode="json"))
    cnn = validate_spec(_spec(model={"type": "cnn"}, data={"source": "builtin:digits"}))

    expected = ["hyperparameters.batch_size", "hyperparameters.weight_decay", "model.hidden_sizes"]
    assert spec.ai_enhancement is not None and spec.ai_enhancement.open_fields == expected
    assert again.ai_enhancement is not None and again.ai_enhancement.open_fields == expected
    assert cnn.ai_enhancement is not None and "model.hidden_size" in cnn.ai_enhancement.open_fields
    assert spec.ai_enhancement.scheduled() == [
        "synthetic_data_generation", "architecture_optimization", "hyperparameter_tuning",
        "baseline_comparison"]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"model": {"type": "gpt"}, "data": {"source": "corpus.txt"}}, "ai_enhancement"),
        ({"tune": {"search_space": {"epochs": {"choice": [1, 2]}}}}, "ai_enhancement"),
        ({"ai_enhancement": {"open_fields": ["epochs"]}}, "ai_enhancement.open_fields"),
        ({"ai_enhancement": {"synthetic_rows": -1}}, "ai_enhancement.synthetic_rows"),
    ],
    ids=["language-model", "with-tune", "untunable-field", "negative-rows"],
)
def test_an_enhancement_that_cannot_run_is_refused_naming_the_field(
    changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(SpecError) as refused:
        validate_spec(_spec(**changes))

    assert refused.value.field == field


def test_the_local_provider_adds_rows_to_the_training_split_only(tmp_path: Path) -> None:
    spec = validate_spec(_spec(ai_enhancement={"synthetic_rows": 200}))
    data = load_data(spec)
    providers = LocalProviders(_storage(tmp_path))

    result = enhance.enhance(spec, data, providers, TENANT)

    rows = result.summary["synthetic_data"]
    assert rows["rows_added"] == 200 and rows["rows_rejected"] == 0
    assert len(result.data.x_train) == len(data.x_train) + 200
    np.testing.assert_array_equal(result.data.x_train[: len(data.x_train)], data.x_train)
    assert result.data.x_val is data.x_val and result.data.y_val is data.y_val
    assert set(np.unique(result.data.y_train[len(data.y_train):])) <= {0, 1, 2}
    assert result.data.x_train.dtype == np.float32
    applied = result.summary["settings"]["applied"]
    assert set(applied) == set(spec.ai_enhancement.open_fields or [])  # type: ignore[union-attr]
    assert result.spec.hyperparameters.lr == applied["hyperparameters.lr"]
    assert result.spec.model.hidden_sizes == applied["model.hidden_sizes"]  # type: ignore[union-attr]
    assert spec.hyperparameters.lr == 1e-3, "the comparison run keeps the spec as written"


def test_rows_a_provider_gets_wrong_are_dropped_and_counted() -> None:
    rows = [
        {"a": 1.0, "b": 2, "class": "x"},
        {"a": "nan", "b": 2, "class": "x"},  # not finite
        {"a": 1.0, "class": "y"},  # a feature missing
        {"a": 1.0, "b": 2, "class": "z"},  # no such class
        {"a": "3.5", "b": [1], "class": "y"},  # not a number
        {"a": -1, "b": 0.5, "class": "y"},
    ]

    x, y, rejected = enhance.to_arrays(rows, ["a", "b"], ["x", "y"], "class")

    np.testing.assert_array_equal(x, np.array([[1, 2], [-1, 0.5]], dtype=np.float32))
    assert y.tolist() == [0, 1] and rejected == 4


def test_a_job_on_a_cluster_without_the_platform_is_refused_with_the_reason(
    tmp_path: Path,
) -> None:
    import ray

    assert not ray.is_initialized()

    with pytest.raises(TrainingFailed, match="providers application"):
        enhance.providers_for(_storage(tmp_path))


def test_the_comparison_run_counts_against_the_tiers_epoch_limit() -> None:
    limits = WorkLimits(max_epochs=10)
    compared = validate_spec(_spec(epochs=6)).model_dump(mode="json")
    alone = validate_spec(_spec(epochs=6, ai_enhancement={"compare": False}))

    with pytest.raises(work_limits.WorkLimitError, match="twice"):
        work_limits.check_job_spec(limits, compared, "free")
    work_limits.check_job_spec(limits, alone.model_dump(mode="json"), "free")
