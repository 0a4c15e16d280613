"""Tenant URIs: the one check of a location a tenant names (a training ``data.source``, a batch
``input_uri``), and the one way to open a checked location.

A tenant reads only under its own prefix of the platform storage (``datasets/<tenant>/``) or
in a bucket the operator allow-listed (``MLAAS_STORAGE_ALLOWED_BUCKETS``). A URI that could
steer the reader elsewhere is refused before anything is fetched: pyarrow's
``FileSystem.from_uri`` honours query parameters such as ``endpoint_override`` and ``scheme``,
so a query would otherwise make the platform send its credentials to any host.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pa_fs

from mlaas.errors import ForbiddenError, ValidationError
from mlaas.settings import Settings, get_settings
from mlaas.storage import Storage, get_storage, s3_filesystem, tenant_data_prefix

SCHEMES = ("file", "s3")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_tenant_uri(
    uri: str, tenant_id: str, settings: Settings | None = None, *, field: str = "input_uri"
) -> str:
    """The canonical URI of a location the tenant may read, or a refusal.

    A relative name means a file under the tenant's prefix of the platform storage
    (``x.csv`` is ``datasets/<tenant>/x.csv``); an absolute path is a ``file://`` URI.

    Raises:
        ValidationError: 422 for a URI with a query, fragment, credentials, control
            characters, or a scheme other than file/s3.
        ForbiddenError: 403 for a location outside the tenant's prefix and the allow-list.
    """
    settings = settings or get_settings()
    check_uri_syntax(uri, field=field)
    storage = get_storage(settings)
    own = tenant_data_prefix(tenant_id)
    if "://" not in uri and not uri.startswith("/"):
        name = posixpath.normpath(uri)
        if name in (".", "..") or name.startswith("../"):
            raise _outside(field, uri)
        return storage.uri_of(own + name)
    absolute = uri if "://" in uri else Path(uri).as_uri()
    key = storage.key_of(absolute)
    if key is not None:
        if not key.startswith(own):
            raise _outside(field, uri)
        return storage.uri_of(key)
    parts = urlsplit(absolute)
    if parts.scheme == "s3" and parts.netloc in settings.storage_allowed_buckets:
        return f"s3://{parts.netloc}/{_clean_object_path(parts.path, field, uri)}"
    raise _outside(field, uri)


def check_uri_syntax(uri: str, *, field: str = "input_uri") -> None:
    """Refuse (422) what could steer a reader: a query, fragment, credentials, another scheme.

    Raises:
        ValidationError: naming the field and the rule.
    """
    if not uri or uri != uri.strip() or _CONTROL.search(uri) or "\\" in uri:
        raise _invalid(field, uri, "must be a file name or URI without surrounding spaces, "
                       "backslashes or control characters")
    if "?" in uri or "#" in uri:
        raise _invalid(field, uri, "must not carry a query or fragment (no ?endpoint_override=...)")
    if "://" not in uri:
        return
    parts = urlsplit(uri)
    if parts.scheme not in SCHEMES:
        raise _invalid(field, uri, f"scheme must be one of {', '.join(SCHEMES)}")
    if "@" in parts.netloc:
        raise _invalid(field, uri, "must not carry credentials; the platform uses its own")
    if parts.scheme == "s3" and not _BUCKET.match(parts.netloc):
        raise _invalid(field, uri, "s3:// URIs name a bucket, not a host or port")
    if parts.scheme == "file" and parts.netloc not in ("", "localhost"):
        raise _invalid(field, uri, "file:// URIs name a path on the platform, not a host")


def filesystem_of(uri: str, settings: Settings | None = None) -> tuple[pa_fs.FileSystem, str]:
    """The platform's filesystem and path for a URI (or a local path), never
    ``FileSystem.from_uri`` on the caller's string: credentials and endpoint come from settings.

    Raises:
        ValidationError: the URI fails :func:`check_uri_syntax`.
    """
    if "://" not in uri:
        return pa_fs.LocalFileSystem(), uri
    check_uri_syntax(uri, field="uri")
    settings = settings or get_settings()
    storage = get_storage(settings)
    key = storage.key_of(uri)
    if key is not None:
        return storage.filesystem, storage.path_of(key)
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return pa_fs.LocalFileSystem(), parts.path
    path = f"{parts.netloc}/{_clean_object_path(parts.path, 'uri', uri)}"
    return _s3(storage, settings), path


def _s3(storage: Storage, settings: Settings) -> pa_fs.FileSystem:
    if storage.scheme == "s3":
        return storage.filesystem
    return s3_filesystem(settings)


def _clean_object_path(path: str, field: str, uri: str) -> str:
    segments = path.strip("/").split("/")
    if not path.strip("/") or any(s in ("", ".", "..") for s in segments):
        raise _invalid(field, uri, "must name an object: no empty, '.' or '..' segments")
    return "/".join(segments)


def _invalid(field: str, uri: str, reason: str) -> ValidationError:
    return ValidationError(
        f"{field} {reason}", details={"field": field, "reason": reason, "received": uri}
    )


def _outside(field: str, uri: str) -> ForbiddenError:
    return ForbiddenError(
        f"{field} must name a file under your own datasets prefix (a plain file name, or "
        "datasets/<your tenant id>/... of the platform storage) or a bucket the operator "
        "allow-listed",
        details={"field": field, "received": uri},
    )
