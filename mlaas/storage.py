"""One storage layer for everything the platform keeps, on ``pyarrow.fs``.

``MLAAS_STORAGE_URI`` names the root: ``file://$MLAAS_HOME/artifacts`` by default (the
embedded single-machine default), or ``s3://bucket/prefix`` on a cluster, with the endpoint and
credentials from settings or the standard AWS variables. Everything lives under a *key*
relative to that root:

- ``models/<tenant>/<model>/<version id>/``: a registered version (files + ``MANIFEST.json``)
- ``runs/``: Ray Train and Tune checkpoints
- ``batch/<tenant>/<job id>/``: batch prediction inputs and outputs
- ``datasets/<tenant>/``: a tenant's own input files (training data, batch inputs)
- ``synthetic/<tenant>/``: synthetic datasets
- ``knowledge/<tenant>/``: knowledge index snapshots

A folder is *published* by uploading every file and then ``MANIFEST.json`` (names, sizes and
SHA-256 of every file) last: a folder without a manifest is incomplete and never served.
Readers on any node go through :func:`Storage.fetch_folder`, a local cache keyed by the
folder's id and the manifest's hash, so a node that has never seen a version serves it.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow.fs as pa_fs

from mlaas.errors import ConfigurationError, MlaasError
from mlaas.logs import get_logger
from mlaas.settings import Settings, get_settings

log = get_logger("mlaas.storage")
MANIFEST = "MANIFEST.json"
_CHUNK = 4 * 1024 * 1024


class StorageError(MlaasError, OSError):
    """A storage object is missing, incomplete or unreadable."""

    status_code = 503
    code = "SERVICE_UNAVAILABLE"


def tenant_data_prefix(tenant_id: str) -> str:
    """Where a tenant's own input files live (training data, batch inputs)."""
    return f"datasets/{tenant_id}/"


def synthetic_key(tenant_id: str, dataset_id: str) -> str:
    """Where a tenant's synthetic dataset lives (written by the providers' local generator,
    read by its download route and by AI-enhanced training jobs)."""
    return f"synthetic/{tenant_id}/{dataset_id}.parquet"


def _clean_key(key: str) -> str:
    """A normalised relative key; refuses ``..`` and absolute keys."""
    key = key.replace("\\", "/").strip("/")
    if not key:
        return ""
    parts = key.split("/")
    if any(part in ("..", ".") for part in parts) or "" in parts:
        raise StorageError(f"Invalid storage key {key!r}")
    return key


@dataclass(frozen=True)
class Manifest:
    """The files of a published folder and the hash that names its content."""

    files: dict[str, dict[str, Any]]  # relative path -> {"size", "sha256"}
    content_hash: str

    @classmethod
    def parse(cls, raw: bytes) -> Manifest:
        files = json.loads(raw)["files"]
        return cls(files=files, content_hash=hashlib.sha256(raw).hexdigest())


class Storage:
    """Keys under one root URI, read and written through one pyarrow filesystem.

    Args:
        base_uri: ``file:///abs/path`` or ``s3://bucket/prefix`` (no query, no credentials).
        filesystem: the pyarrow filesystem that reaches it (credentials, endpoint).
        root: the root's path on that filesystem (``/abs/path`` or ``bucket/prefix``).
        cache_dir: this node's local cache of fetched folders.
    """

    def __init__(
        self, *, base_uri: str, filesystem: pa_fs.FileSystem, root: str, cache_dir: Path
    ) -> None:
        self.base_uri = base_uri.rstrip("/")
        self.filesystem = filesystem
        self.root = root.rstrip("/")
        self.cache_dir = cache_dir
        self.scheme = urlsplit(self.base_uri).scheme

    # -- naming -------------------------------------------------------------------------
    def uri_of(self, key: str) -> str:
        key = _clean_key(key)
        return f"{self.base_uri}/{key}" if key else self.base_uri

    def path_of(self, key: str) -> str:
        """The path of a key on :attr:`filesystem`."""
        key = _clean_key(key)
        return f"{self.root}/{key}" if key else self.root

    def key_of(self, uri: str) -> str | None:
        """The key of a URI under this root, or None (another place, or ``..`` in it)."""
        parts = urlsplit(uri)
        if parts.query or parts.fragment or parts.username or parts.password:
            return None
        base = urlsplit(self.base_uri)
        if parts.scheme != base.scheme or parts.netloc != base.netloc:
            return None
        raw = parts.path
        if ".." in raw.split("/"):
            return None
        path = posixpath.normpath(raw) if raw else ""
        root = posixpath.normpath(base.path) if base.path else ""
        if root in ("", "/"):
            rel = path.lstrip("/")
        elif path == root:
            rel = ""
        elif path.startswith(root.rstrip("/") + "/"):
            rel = path[len(root.rstrip("/")) + 1 :]
        else:
            return None
        try:
            return _clean_key(rel)
        except StorageError:
            return None

    def is_local(self) -> bool:
        return isinstance(self.filesystem, pa_fs.LocalFileSystem)

    def local_path(self, key: str) -> Path | None:
        """The key's path on this node's disk when the storage is local, else None."""
        return Path(self.path_of(key)) if self.is_local() else None

    # -- objects ------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        info = self.filesystem.get_file_info(self.path_of(key))
        return info.type != pa_fs.FileType.NotFound

    def put_bytes(self, key: str, data: bytes) -> str:
        """Write one object (atomically on a local disk); returns its URI."""
        path = self.path_of(key)
        self._make_parent(path)
        if self.is_local():
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        else:
            with self.filesystem.open_output_stream(path) as handle:
                handle.write(data)
        return self.uri_of(key)

    def get_bytes(self, key: str) -> bytes:
        try:
            with self.filesystem.open_input_stream(self.path_of(key)) as handle:
                return bytes(handle.read())
        except (FileNotFoundError, OSError) as exc:
            raise StorageError(f"Storage object {key!r} is missing or unreadable") from exc

    def open_input(self, key: str) -> Any:
        """A seekable file of the object (for Parquet readers)."""
        return self.filesystem.open_input_file(self.path_of(key))

    def open_output(self, key: str) -> Any:
        path = self.path_of(key)
        self._make_parent(path)
        return self.filesystem.open_output_stream(path)

    def delete(self, key: str) -> None:
        """Remove an object or a whole folder; missing is fine."""
        path = self.path_of(key)
        info = self.filesystem.get_file_info(path)
        if info.type == pa_fs.FileType.Directory:
            self.filesystem.delete_dir(path)
        elif info.type == pa_fs.FileType.File:
            self.filesystem.delete_file(path)

    def list_files(self, key: str) -> dict[str, int]:
        """Every file below a folder key: relative path -> size."""
        base = self.path_of(key)
        selector = pa_fs.FileSelector(base, recursive=True, allow_not_found=True)
        found: dict[str, int] = {}
        for info in self.filesystem.get_file_info(selector):
            if info.type == pa_fs.FileType.File:
                found[info.path[len(base.rstrip("/")) + 1 :]] = int(info.size or 0)
        return found

    def _make_parent(self, path: str) -> None:
        if self.is_local():
            Path(path).parent.mkdir(parents=True, exist_ok=True)

    # -- folders ------------------------------------------------------------------------
    def upload_folder(self, local: Path, key: str) -> str:
        """Publish a local folder under ``key``: every file, then ``MANIFEST.json`` last.

        Returns the folder's URI. A crash part-way leaves a folder without a manifest,
        which readers refuse, so a half-uploaded folder is never served.
        """
        key = _clean_key(key)
        files: dict[str, dict[str, Any]] = {}
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            rel = path.relative_to(local).as_posix()
            if rel == MANIFEST:
                continue
            digest = hashlib.sha256()
            target = self.path_of(f"{key}/{rel}")
            self._make_parent(target)
            if self.is_local():
                tmp = f"{target}.{uuid.uuid4().hex}.tmp"
                with open(path, "rb") as src, open(tmp, "wb") as dst:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        dst.write(chunk)
                os.replace(tmp, target)
            else:
                with open(path, "rb") as src, self.filesystem.open_output_stream(target) as dst:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        dst.write(chunk)
            files[rel] = {"size": path.stat().st_size, "sha256": digest.hexdigest()}
        manifest = json.dumps({"files": files}, sort_keys=True, indent=1).encode()
        self.put_bytes(f"{key}/{MANIFEST}", manifest)
        return self.uri_of(key)

    def manifest(self, key: str) -> Manifest | None:
        """The folder's manifest, or None when it has none (incomplete, or written before
        manifests existed)."""
        try:
            return Manifest.parse(self.get_bytes(f"{_clean_key(key)}/{MANIFEST}"))
        except StorageError:
            return None

    def fetch_folder(self, key: str, *, cache_id: str) -> Path:
        """A local folder with the content of ``key``, through this node's cache.

        Local storage is read in place. Remote storage is downloaded once per ``cache_id``
        (a version id) and content hash into the cache, each file checked against the
        manifest, and renamed into place whole: concurrent readers never see part of it.

        Raises:
            StorageError: the folder is missing, has no manifest, or a file does not match.
        """
        key = _clean_key(key)
        manifest = self.manifest(key)
        local = self.local_path(key)
        if local is not None:
            if manifest is None and not local.is_dir():
                raise StorageError(f"Storage folder {key!r} is missing")
            return local
        if manifest is None:
            raise StorageError(f"Storage folder {key!r} is missing or incomplete (no manifest)")
        safe_id = "".join(c for c in cache_id if c.isalnum() or c in "-_") or "folder"
        target = self.cache_dir / f"{safe_id}-{manifest.content_hash[:16]}"
        if (target / MANIFEST).exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.parent / f".{target.name}.{uuid.uuid4().hex}.partial"
        try:
            for rel, meta in manifest.files.items():
                _clean_key(rel)
                dest = partial / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with self.filesystem.open_input_stream(self.path_of(f"{key}/{rel}")) as src, \
                        open(dest, "wb") as dst:  # fmt: skip
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        dst.write(chunk)
                if digest.hexdigest() != meta["sha256"]:
                    raise StorageError(f"File {rel!r} of {key!r} does not match its manifest")
            (partial / MANIFEST).write_text(json.dumps({"files": manifest.files}))
            try:
                partial.rename(target)
            except OSError:
                if not (target / MANIFEST).exists():
                    raise
        except StorageError:
            raise
        except OSError as exc:  # the reason (endpoint, bucket, local path) stays in the log
            log.warning("storage fetch failed", extra={"fields": {"key": key, "reason": str(exc)}})
            raise StorageError(f"Could not fetch {key!r} from storage") from exc
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        return target


# ---------------------------------------------------------------------------------------
def storage_uri(settings: Settings) -> str:
    """The configured root URI, or ``file://`` of the home's artifacts folder."""
    return (settings.storage_uri or settings.artifacts_dir.as_uri()).rstrip("/")


def s3_filesystem(settings: Settings) -> pa_fs.S3FileSystem:
    """The S3 filesystem of the platform: endpoint and credentials from settings, else the
    standard AWS variables (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``...)."""
    options: dict[str, Any] = {}
    endpoint = settings.storage_endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or \
        os.environ.get("AWS_ENDPOINT_URL")  # fmt: skip
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options["endpoint_override"] = parts.netloc
        options["scheme"] = parts.scheme
    if settings.storage_access_key is not None:
        options["access_key"] = settings.storage_access_key.get_secret_value()
        secret = settings.storage_secret_key
        options["secret_key"] = secret.get_secret_value() if secret else ""
    options["region"] = settings.storage_region or os.environ.get("AWS_REGION") or \
        os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"  # fmt: skip
    options["connect_timeout"] = 5
    options["request_timeout"] = 60
    return pa_fs.S3FileSystem(**options)


def open_storage(settings: Settings) -> Storage:
    """The storage the settings name.

    Raises:
        ConfigurationError: an unsupported scheme, or a URI with a query or credentials.
    """
    uri = storage_uri(settings)
    parts = urlsplit(uri)
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigurationError(
            "MLAAS_STORAGE_URI must carry no query, fragment or credentials; set the endpoint "
            "with MLAAS_STORAGE_ENDPOINT and credentials with MLAAS_STORAGE_ACCESS_KEY / "
            "MLAAS_STORAGE_SECRET_KEY (or the AWS_* variables)"
        )
    cache_dir = settings.cache_dir
    if parts.scheme == "file":
        root = parts.path
        Path(root).mkdir(parents=True, exist_ok=True)
        return Storage(
            base_uri=Path(root).resolve().as_uri(),
            filesystem=pa_fs.LocalFileSystem(),
            root=str(Path(root).resolve()),
            cache_dir=cache_dir,
        )
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigurationError("MLAAS_STORAGE_URI s3://bucket/prefix needs a bucket")
        root = f"{parts.netloc}{parts.path}".rstrip("/")
        return Storage(
            base_uri=uri, filesystem=s3_filesystem(settings), root=root, cache_dir=cache_dir
        )
    raise ConfigurationError(
        f"MLAAS_STORAGE_URI must be file:// or s3:// (got scheme {parts.scheme!r})"
    )


_storages: dict[tuple[str, str], Storage] = {}
_storages_lock = threading.Lock()


def get_storage(settings: Settings | None = None) -> Storage:
    """One :class:`Storage` per process and root URI."""
    settings = settings or get_settings()
    cache_key = (storage_uri(settings), str(settings.cache_dir))
    with _storages_lock:
        storage = _storages.get(cache_key)
        if storage is None:
            storage = open_storage(settings)
            _storages[cache_key] = storage
        return storage


def local_storage(folder: Path, cache_dir: Path | None = None) -> Storage:
    """A storage rooted at a local folder (tests, tools working on one home)."""
    folder = Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return Storage(
        base_uri=folder.as_uri(), filesystem=pa_fs.LocalFileSystem(), root=str(folder),
        cache_dir=cache_dir or folder.parent / "cache",
    )  # fmt: skip


def as_storage(where: Storage | Settings | Path | str | None) -> Storage:
    """A storage from what a caller has: a storage, settings, or a local artifacts folder."""
    if isinstance(where, Storage):
        return where
    if where is None or isinstance(where, Settings):
        return get_storage(where)
    return local_storage(Path(where))
