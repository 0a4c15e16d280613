"""Everything the platform keeps lives where a cluster can share it: train through the API, the
version lands on the platform storage, predict, then serve a version from storage alone, and
export it with the operator CLI. With ``MLAAS_TEST_BACKEND=cluster`` the shared platform runs
on PostgreSQL and SeaweedFS (S3), and the same tests prove the artifacts are ``s3://``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from mlaas import registry
from mlaas.model_store import version_by_id
from tests.conftest import TEST_BACKEND, Platform
from tests.serve_apps.inference.conftest import post_until
from tests.serve_apps.test_train_api import poll, tiny_spec

pytestmark = pytest.mark.cluster_state


@pytest.fixture(scope="module")
def trained(platform: Platform) -> dict[str, Any]:
    """A tenant and the version one ``POST /v1/train`` registered for it."""
    tenant_id, key = platform.new_tenant("pro")
    with platform.client(key) as client:
        submitted = client.post("/v1/train", json=tiny_spec("state-digits", epochs=2))
        assert submitted.status_code in (200, 201, 202), submitted.text
        job_id = submitted.json()["training_job_id"]
        final = poll(client, job_id, lambda s: s["status"] in ("SUCCEEDED", "FAILED", "STOPPED"))
    assert final["status"] == "SUCCEEDED", final
    version = final["model_version"]
    assert "artifact_uri" not in version, "the answer names no storage place"
    # Where the registry keeps its files: the database's record, which answers never show
    stored = version_by_id(platform.database_url, tenant_id, version["id"]).artifact_uri
    return {"tenant_id": tenant_id, "key": key, "version": version, "artifact_uri": stored}


def _forward(folder: Path, version: dict[str, Any], rows: np.ndarray) -> np.ndarray:
    """The MLP's logits computed from the stored weights alone (no platform code)."""
    import torch

    from cluster.zoo import build_model

    architecture = {k: version["architecture"][k] for k in ("type", "config")}
    model = build_model(architecture)
    weights = load_file(str(folder / "model.safetensors"))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    model.eval()
    with torch.inference_mode():
        return model(torch.from_numpy(rows)).numpy()  # type: ignore[no-any-return]


def test_a_trained_version_lives_on_the_platform_storage_and_predicts(
    platform: Platform, trained: dict[str, Any]
) -> None:
    from sklearn.datasets import load_digits

    version = trained["version"]
    storage = platform.storage
    rows = load_digits().data[:5].astype(np.float32)

    with platform.client(trained["key"]) as client:
        answer = post_until(client, "/v1/predict",
                            {"model": version["id"], "inputs": rows.tolist()},
                            lambda r: r.status_code != 503)  # fmt: skip

    assert trained["artifact_uri"].startswith(storage.base_uri + "/models/")
    if TEST_BACKEND == "cluster":
        assert trained["artifact_uri"].startswith("s3://")
        assert not (platform.home / "artifacts" / "models").exists(), "nothing on local disk"
    key = storage.key_of(trained["artifact_uri"])
    assert key is not None and storage.manifest(key) is not None
    assert answer.status_code == 200, answer.text
    local = storage.fetch_folder(key, cache_id=f"test-{version['id']}")
    expected = _forward(local, version, rows)
    assert np.allclose(np.asarray(answer.json()["outputs"]), expected, atol=1e-4)


def test_a_node_without_local_files_serves_a_version_from_storage(
    platform: Platform, trained: dict[str, Any]
) -> None:
    if TEST_BACKEND != "cluster":
        pytest.skip("with file:// storage, MLAAS_HOME/artifacts *is* the storage")
    from sklearn.datasets import load_digits

    from serve_apps.inference.demo import register_torch_version, train_digits_mlp

    # Prepare: a version no replica has loaded, then the replica's cache and artifacts go
    model, architecture, _ = train_digits_mlp(hidden=8, epochs=2)
    fresh = register_torch_version(platform.database_url, platform.storage,
                                   trained["tenant_id"], "state-fresh", model, architecture, {})
    for folder in (platform.home / "cache", platform.home / "artifacts"):
        shutil.rmtree(folder, ignore_errors=True)
    rows = load_digits().data[:3].astype(np.float32)
    # Execute
    with platform.client(trained["key"]) as client:
        answer = post_until(client, "/v1/predict",
                            {"model": fresh.id, "inputs": rows.tolist()},
                            lambda r: r.status_code != 503)  # fmt: skip
    # Assert
    assert answer.status_code == 200, answer.text
    assert (platform.home / "cache").is_dir(), "the replica fetched into its node's cache"
    assert not (platform.home / "artifacts" / "models").exists()


def test_hub_export_reads_the_version_from_the_platform_storage(
    platform: Platform, trained: dict[str, Any], tmp_path: Path
) -> None:
    version = trained["version"]
    out = tmp_path / "export"

    result = platform.cli("hub", "export", f"state-digits@{version['version']}", str(out),
                          "--tenant", trained["tenant_id"])  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    exported = load_file(str(next(out.rglob("*.safetensors"))))
    stored = registry.get_version(platform.database_url, trained["tenant_id"], "state-digits")
    assert stored.id == version["id"]
    assert exported and all(np.isfinite(v).all() for v in exported.values())


def test_version_numbers_stay_distinct_under_concurrent_publishes(
    platform: Platform, trained: dict[str, Any]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from serve_apps.inference.demo import register_torch_version, train_digits_mlp

    model, architecture, _ = train_digits_mlp(hidden=4, epochs=1)

    def publish(_: int) -> int:
        return register_torch_version(platform.database_url, platform.storage,
                                      trained["tenant_id"], "state-many", model, architecture,
                                      {}).version  # fmt: skip

    with ThreadPoolExecutor(4) as pool:
        numbers = sorted(pool.map(publish, range(4)))

    assert numbers == [1, 2, 3, 4], numbers
