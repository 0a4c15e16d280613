"""``mlaas hub push``: the real CLI and the official ``huggingface_hub`` client upload a
version's safetensors export to a local server speaking the hub's upload API (repo create,
preupload, NDJSON commit); the hub itself cannot be reached from here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlaas import accounts
from mlaas.db import migrate
from tests.cluster.hub.fake_hub import FakeHub

MLAAS = str(Path(sys.executable).parent / "mlaas")
TOKEN = "hf_test_" + "x" * 30


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, str]]:
    from serve_apps.inference.demo import register_torch_version, train_digits_mlp

    home = tmp_path_factory.mktemp("push-home")
    url = f"sqlite:///{home / 'mlaas.db'}"
    migrate(url)
    tenant = accounts.create_tenant(url, "pusher", tier="pro").id
    model, architecture, _ = train_digits_mlp(hidden=8, epochs=2)
    register_torch_version(url, home / "artifacts", tenant, "digits", model, architecture, {})
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLAAS_", "HF_HUB_OFFLINE", "HF_TOKEN"))}
    env.update(MLAAS_HOME=str(home), COLUMNS="200")
    return home, tenant, env


def _push(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MLAAS, "hub", "push", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def test_push_uploads_the_safetensors_export_to_a_private_repo(
    home: tuple[Path, str, dict[str, str]], tmp_path: Path
) -> None:
    root, tenant, env = home
    with FakeHub(TOKEN) as hub:
        # Execute
        result = _push({**env, "HF_TOKEN": TOKEN}, "digits@1", "acme/digits-mlp",
                       "--endpoint", hub.url, "--tenant", tenant)
        # Assert
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{hub.url}/acme/digits-mlp/commit/" in result.stdout
        assert hub.state.repos["acme/digits-mlp"]["visibility"] == "private"
        uploaded = hub.state.files["acme/digits-mlp"]
        artifact = next((root / "artifacts").rglob("model.safetensors"))
        assert uploaded["model.safetensors"] == artifact.read_bytes()
        assert "architecture.json" in uploaded
        assert len(hub.state.commits) == 1 and hub.state.unknown == []


def test_a_refused_token_fails_with_the_hubs_reason_and_no_token_in_the_output(
    home: tuple[Path, str, dict[str, str]]
) -> None:
    _, tenant, env = home
    wrong = "hf_wrong_" + "y" * 30
    with FakeHub(TOKEN) as hub:
        result = _push({**env, "HF_TOKEN": wrong}, "digits@1", "acme/digits-mlp",
                       "--endpoint", hub.url, "--tenant", tenant)
        assert hub.state.files == {}
    assert result.returncode == 1
    assert "refused the push (401)" in result.stdout
    assert "Invalid credentials" in result.stdout
    assert wrong not in result.stdout + result.stderr


def test_offline_mode_and_an_unreachable_hub_say_so(
    home: tuple[Path, str, dict[str, str]]
) -> None:
    _, tenant, env = home
    offline = _push({**env, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1"}, "digits@1", "a/b",
                    "--endpoint", "http://127.0.0.1:9", "--tenant", tenant)
    unreachable = _push({**env, "HF_TOKEN": TOKEN}, "digits@1", "a/b",
                        "--endpoint", "http://127.0.0.1:9", "--tenant", tenant)
    assert offline.returncode == 1 and "HF_HUB_OFFLINE" in offline.stdout
    assert unreachable.returncode == 1 and "could not be reached" in unreachable.stdout
