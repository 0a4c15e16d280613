"""The storage layer on a local folder and on a real S3-compatible server (SeaweedFS)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from mlaas import accounts, artifacts, registry
from mlaas.db import migrate
from mlaas.settings import Settings
from mlaas.storage import MANIFEST, Storage, StorageError, local_storage, open_storage
from tests.services.seaweed import SeaweedS3


@pytest.fixture(params=["file", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "file":
        return local_storage(tmp_path / "artifacts", cache_dir=tmp_path / "cache")
    server: SeaweedS3 = request.getfixturevalue("seaweed")
    env = server.env(prefix=f"t-{secrets.token_hex(4)}")
    settings = Settings(
        home=tmp_path, storage_uri=env["MLAAS_STORAGE_URI"],
        storage_endpoint=env["MLAAS_STORAGE_ENDPOINT"],
        storage_access_key=env["MLAAS_STORAGE_ACCESS_KEY"],
        storage_secret_key=env["MLAAS_STORAGE_SECRET_KEY"],
    )  # fmt: skip
    return open_storage(settings)


def _folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "model.safetensors").write_bytes(b"\x00weights" * 1000)
    (root / "sub" / "config.json").write_text('{"a": 1}')
    return root


def test_a_published_folder_comes_back_whole_through_the_cache(
    storage: Storage, tmp_path: Path
) -> None:
    uri = storage.upload_folder(_folder(tmp_path / "src"), "models/t1/m/mv_1")

    assert uri == storage.uri_of("models/t1/m/mv_1") and storage.key_of(uri) == "models/t1/m/mv_1"
    local = storage.fetch_folder("models/t1/m/mv_1", cache_id="mv_1")
    assert (local / "model.safetensors").read_bytes() == b"\x00weights" * 1000
    assert (local / "sub" / "config.json").read_text() == '{"a": 1}'
    assert set(storage.manifest("models/t1/m/mv_1").files) == {  # type: ignore[union-attr]
        "model.safetensors", "sub/config.json"}


def test_a_remote_folder_is_downloaded_once_per_content(storage: Storage, tmp_path: Path) -> None:
    if storage.is_local():
        pytest.skip("a local storage is read in place")
    storage.upload_folder(_folder(tmp_path / "src"), "models/t1/m/mv_2")
    first = storage.fetch_folder("models/t1/m/mv_2", cache_id="mv_2")
    storage.delete("models/t1/m/mv_2/model.safetensors")  # the cache answers from now on

    again = storage.fetch_folder("models/t1/m/mv_2", cache_id="mv_2")

    assert again == first and (again / "model.safetensors").exists()
    assert first.is_relative_to(storage.cache_dir)


def test_a_folder_without_its_manifest_is_never_served(storage: Storage, tmp_path: Path) -> None:
    storage.upload_folder(_folder(tmp_path / "src"), "models/t1/m/mv_3")
    storage.delete(f"models/t1/m/mv_3/{MANIFEST}")  # as a crash before the last write leaves it

    if storage.is_local():
        assert storage.manifest("models/t1/m/mv_3") is None
    else:
        with pytest.raises(StorageError, match="incomplete"):
            storage.fetch_folder("models/t1/m/mv_3", cache_id="mv_3")


def test_a_tampered_file_is_refused(storage: Storage, tmp_path: Path) -> None:
    if storage.is_local():
        pytest.skip("a local storage is read in place")
    storage.upload_folder(_folder(tmp_path / "src"), "models/t1/m/mv_4")
    storage.put_bytes("models/t1/m/mv_4/model.safetensors", b"swapped")

    with pytest.raises(StorageError, match="does not match"):
        storage.fetch_folder("models/t1/m/mv_4", cache_id="mv_4")
    assert not list(storage.cache_dir.glob("mv_4*")), "nothing half-fetched stays in the cache"


@pytest.mark.parametrize(
    "suffix",
    ["/../other", "?endpoint_override=127.0.0.1:1", "#frag", "/a/../../b"],
)
def test_key_of_refuses_what_is_not_plainly_under_the_root(storage: Storage, suffix: str) -> None:
    assert storage.key_of(storage.base_uri + "/datasets" + suffix) is None


def test_key_of_refuses_another_root(storage: Storage) -> None:
    assert storage.key_of("s3://another-bucket/datasets/x.csv") is None
    assert storage.key_of("file:///etc/passwd") is None


def test_a_failed_registration_leaves_neither_row_nor_files(
    storage: Storage, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'mlaas.db'}"
    migrate(url)
    tenant = accounts.create_tenant(url, "acme", tier="free").id

    with pytest.raises(registry.ValidationError):
        artifacts.publish_version(
            url, _folder(tmp_path / "src"), tenant_id=tenant, model_name="m", storage=storage,
            framework="pytorch", architecture={}, input_schema={}, output_schema={},
            metrics={}, stage="nonsense",  # refused by the registry after the upload
        )  # fmt: skip

    assert storage.list_files(f"models/{tenant}") == {}
    with pytest.raises(registry.NotFoundError):
        registry.list_versions(url, tenant, "m")


def test_a_published_version_is_read_back_by_its_id(storage: Storage, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mlaas.db'}"
    migrate(url)
    tenant = accounts.create_tenant(url, "acme", tier="free").id

    version = artifacts.publish_version(
        url, _folder(tmp_path / "src"), tenant_id=tenant, model_name="m", storage=storage,
        framework="pytorch", architecture={}, input_schema={}, output_schema={}, metrics={},
    )  # fmt: skip

    assert version.artifact_uri == storage.uri_of(f"models/{tenant}/m/{version.id}")
    folder = storage.fetch_folder(storage.key_of(version.artifact_uri) or "", cache_id=version.id)
    assert (folder / "sub" / "config.json").exists()
