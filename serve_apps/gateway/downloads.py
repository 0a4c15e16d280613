"""Streaming an object of the platform storage to its tenant (batch predictions, synthetic
datasets): read in chunks from whichever filesystem the storage is on, never whole."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from mlaas.errors import NotFoundError
from mlaas.storage import Storage

PARQUET = "application/vnd.apache.parquet"
_CHUNK = 1024 * 1024


async def download(storage: Storage, key: str, filename: str, media_type: str = PARQUET) -> Any:
    """A streaming response of the object at ``key``.

    Raises:
        NotFoundError: the object does not exist (or is gone after its retention).
    """
    try:
        handle = await run_in_threadpool(storage.filesystem.open_input_stream, storage.path_of(key))
    except (FileNotFoundError, OSError) as exc:
        raise NotFoundError(f"No file {filename!r}", details={"file": filename}) from exc

    def chunks() -> Iterator[bytes]:
        with handle:
            while chunk := handle.read(_CHUNK):
                yield bytes(chunk)

    return StreamingResponse(
        chunks(), media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )  # fmt: skip
