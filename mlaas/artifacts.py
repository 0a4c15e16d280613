"""Model versions on the platform storage: publish a folder as a version, fetch it on any node.

Publishing uploads the folder under a fresh version id (``models/<tenant>/<model>/<id>/``,
its ``MANIFEST.json`` last), then commits the registry row. The row is the only way to reach
the files, so a crash at any point leaves no half-published version, only unreferenced files.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlaas import registry
from mlaas.registry import ModelVersionInfo
from mlaas.settings import Settings
from mlaas.storage import Storage, StorageError, get_storage


def new_version_id() -> str:
    return "mv_" + secrets.token_hex(8)


def version_key(tenant_id: str, model_name: str, version_id: str) -> str:
    return f"models/{tenant_id}/{registry.check_model_name(model_name)}/{version_id}"


def publish_version(
    url: str,
    folder: Path,
    *,
    tenant_id: str,
    model_name: str,
    storage: Storage | None = None,
    **fields: Any,
) -> ModelVersionInfo:
    """Upload ``folder`` and register it as the model's next version.

    ``fields`` are :func:`mlaas.registry.register_version`'s (framework, schemas, metrics...).
    If the registration fails, the uploaded files are removed again.
    """
    storage = storage or get_storage()
    version_id = new_version_id()
    key = version_key(tenant_id, model_name, version_id)
    uri = storage.upload_folder(folder, key)
    try:
        return registry.register_version(
            url, tenant_id=tenant_id, model_name=model_name, artifact_uri=uri,
            version_id=version_id, **fields,
        )  # fmt: skip
    except BaseException:
        storage.delete(key)
        raise


def publish_with(
    url: str,
    write: Callable[[Path], None],
    *,
    tenant_id: str,
    model_name: str,
    storage: Storage | None = None,
    **fields: Any,
) -> ModelVersionInfo:
    """Let ``write`` fill a temporary folder, then publish it as the next version."""
    settings_storage = storage or get_storage()
    tmp_root = settings_storage.cache_dir / "publish"
    tmp_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_root) as tmp:
        write(Path(tmp))
        return publish_version(
            url, Path(tmp), tenant_id=tenant_id, model_name=model_name,
            storage=settings_storage, **fields,
        )  # fmt: skip


def local_folder(
    artifact_uri: str, version_id: str, *, settings: Settings | None = None
) -> Path:
    """A folder on this node with the version's files (fetched into the cache if remote).

    Raises:
        StorageError: the files are missing, incomplete, or in a place this platform does
            not store to.
    """
    storage = get_storage(settings)
    key = storage.key_of(artifact_uri)
    if key is not None:
        return storage.fetch_folder(key, cache_id=version_id)
    if artifact_uri.startswith("file://"):  # a version stored before MLAAS_STORAGE_URI moved
        path = Path(artifact_uri.removeprefix("file://"))
        if path.is_dir():
            return path
    raise StorageError(
        f"The files of version {version_id} are not in this platform's storage "
        f"({storage.scheme}://...)"
    )


def version_folder(version: ModelVersionInfo) -> Path:
    """:func:`local_folder` of a registry version."""
    return local_folder(version.artifact_uri, version.id)


def remove_version_files(artifact_uri: str) -> None:
    """Delete a version's files from the storage (after its row is gone)."""
    storage = get_storage()
    key = storage.key_of(artifact_uri)
    if key is not None and key.startswith("models/"):
        storage.delete(key)
