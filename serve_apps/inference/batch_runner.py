"""The body of an asynchronous batch-prediction job (run as a Ray task on any node): read with
Ray Data, count the rows against the tenant's quota, ``map_batches`` the version over them,
write one Parquet file to the platform storage. Whatever goes wrong ends the job ``FAILED``
with the reason in its record."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from mlaas import batch_jobs
from mlaas.batch_jobs import now_text
from mlaas.errors import without_server_paths
from mlaas.settings import Settings
from serve_apps.inference.batch_jobs import BatchPredictor

BATCH_ROWS = 8192
TEXT_BATCH_ROWS = 1024
ENDPOINT = "/v1/batch_predict"


@contextmanager
def heartbeat(beat: Callable[[], Any], every_s: float) -> Iterator[None]:
    """Call ``beat`` every ``every_s`` while the block runs, from a daemon thread.

    A worker that dies stops the beats, which is how a reader tells a lost job from a slow
    one. The thread is stopped and joined before the block's final status is written.
    """
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every_s):
            try:
                beat()
            except Exception:  # noqa: BLE001 - a missed beat is retried; the job goes on
                continue

    thread = threading.Thread(target=run, name="batch-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _read(source: str, fmt: str, block_rows: int = 8192) -> Any:
    """The file as a Ray Dataset. Read here with pyarrow through the platform's filesystem
    (its endpoint and credentials), not by Ray Data's read tasks: those ask for a whole CPU
    each, which a two-core machine whose replicas hold fractions of both cannot grant."""
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.fs as pa_fs

    from mlaas.tenant_uris import filesystem_of

    fs, path = filesystem_of(source)
    if fmt == "numpy":
        if isinstance(fs, pa_fs.LocalFileSystem):  # also a pipe, which pyarrow cannot open
            rows = np.load(path, allow_pickle=False).astype(np.float32)
        else:
            with fs.open_input_file(path) as handle:
                rows = np.load(handle, allow_pickle=False).astype(np.float32)
        flat = rows.reshape(len(rows), -1)
        # An "inputs" column built here: a rename would be one more whole-CPU Ray Data task.
        inputs = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])
        return _blocks(pa.table({"inputs": inputs}), block_rows)
    if fmt == "json":
        import pyarrow.json as pajson

        with fs.open_input_stream(path) as handle:
            table = pajson.read_json(handle)
    else:
        table = pads.dataset(path, format=fmt, filesystem=fs).to_table()
    if not isinstance(table, pa.Table) or table.num_rows == 0:
        raise ValueError(f"{source} has no rows")
    return _blocks(table, block_rows)


def _blocks(table: Any, rows: int) -> Any:
    """The table as a Dataset of blocks of ``rows`` rows (zero-copy slices): one block would
    be one task, on one actor, with nothing written until it ends."""
    import ray.data

    return ray.data.from_arrow([table.slice(start, rows)
                                for start in range(0, table.num_rows, rows)])  # fmt: skip


def _write(predicted: Any, key: str) -> int:
    """Predictions as one Parquet file (a row group per batch, in input order) on the
    platform storage; returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlaas.storage import get_storage

    rows = 0
    writer: pq.ParquetWriter | None = None
    with get_storage().open_output(key) as sink:
        try:
            for batch in predicted.iter_batches(batch_size=None, batch_format="pyarrow"):
                table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
                if writer is None:
                    writer = pq.ParquetWriter(sink, table.schema)
                writer.write_table(table)
                rows += table.num_rows
        finally:
            if writer is not None:
                writer.close()
    return rows


def _charge(tenant: dict[str, str], rows: int) -> str | None:
    """Count the rows beyond the first against the quota; the refusal message, if any."""
    if rows <= 1:
        return None
    import ray

    from mlaas.admission import ACTOR_NAME, Refusal
    from mlaas.platform import NAMESPACE

    actor: Any = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)  # Ray types its methods as Never
    refusal: Refusal | None = ray.get(actor.consume.remote(
        tenant["tenant_id"], tenant["tier"], "inference_requests", rows - 1, ENDPOINT
    ))
    if refusal is None:
        return None
    return f"QUOTA_EXCEEDED: {rows} rows would exceed the monthly limit of {refusal[2]}"


def run_batch_job(
    database_url: str | None,
    job_id: str,
    spec: dict[str, Any],
    input_schema: dict[str, Any],
    source: str,
    fmt: str,
    tenant: dict[str, str],
    charge_rows: bool,
    heartbeat_s: float = 5.0,
) -> dict[str, Any]:
    """Predict every row of ``source``; returns the final status. Beats every
    ``heartbeat_s`` (a quarter of the time after which readers call the job lost).

    ``database_url`` is None when it carries a password: the task then reads it from its
    node's environment (as every platform process does), never from its arguments.
    """
    from mlaas.db import node_database_url

    url = node_database_url(database_url)
    started = time.monotonic()
    batch_jobs.update(url, job_id, status="RUNNING", started_at=now_text(),
                      worker_pid=os.getpid(), heartbeat_at=time.time())
    with heartbeat(lambda: batch_jobs.update(url, job_id, heartbeat_at=time.time()),
                   heartbeat_s):  # fmt: skip
        outcome = _run(job_id, spec, input_schema, source, fmt, tenant, charge_rows, started,
                       lambda **fields: batch_jobs.update(url, job_id, **fields))
    return batch_jobs.update(url, job_id, **outcome)


def _run(job_id: str, spec: dict[str, Any], input_schema: dict[str, Any], source: str,
         fmt: str, tenant: dict[str, str], charge_rows: bool, started: float,
         record: Callable[..., Any]) -> dict[str, Any]:
    """The job's work; returns the fields of its final status."""
    import ray.data

    from serve_apps.inference.batch_jobs import output_key

    try:
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        # Text: smaller batches, so that the actors share a few thousand rows evenly.
        batch_rows = TEXT_BATCH_ROWS if input_schema.get("type") == "text" else BATCH_ROWS
        dataset = _read(source, fmt, batch_rows)
        rows = dataset.count()
        refusal = _charge(tenant, rows) if charge_rows else None
        if refusal:
            return {"status": "FAILED", "error": refusal, "rows": rows, "finished_at": now_text()}
        record(rows=rows)
        settings = Settings()
        actors = min(settings.batch_actors, -(-rows // batch_rows))
        predicted = dataset.map_batches(
            BatchPredictor,
            fn_constructor_args=(spec, input_schema, settings.batch_torch_threads, actors),
            batch_size=batch_rows,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=0.25,
        )
        key = output_key(tenant["tenant_id"], job_id)
        _write(predicted, key)
        seconds = time.monotonic() - started
        return {"status": "SUCCEEDED", "rows": rows,
                "output_url": f"/v1/batch_predict/{job_id}/output",
                "seconds": round(seconds, 3), "rows_per_s": round(rows / max(seconds, 1e-9), 1),
                "finished_at": now_text()}
    except Exception as exc:  # unreadable file, bad columns, model that will not load...
        return {"status": "FAILED", "error": _reason(exc, source), "finished_at": now_text()}


# A line "SomeError: message" of a traceback, other than Ray's own wrappers.
_ERROR_LINE = re.compile(r"^(?!ray\.exceptions\.)[A-Za-z_][\w.]*(?:Error|Exception): .+")


def _innermost_error_line(text: str) -> str | None:
    """The first "XxxError: ..." line of a (remote) traceback: Python prints the innermost
    cause first, Ray Data's wrapper and its advice on retries last."""
    for line in text.splitlines():
        if _ERROR_LINE.match(line.strip()):
            return line.strip()
    return None


def _reason(exc: BaseException, source: str) -> str:
    """One line saying what went wrong, without the storage's server paths: the innermost
    error of a Ray task's traceback (not Ray Data's closing advice on retries)."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    message = lines[-1] if lines else type(exc).__name__
    inner = _innermost_error_line(str(exc))
    if inner is not None:
        name, _, message = inner.partition(": ")
        return _without_paths(f"{name.rsplit('.', 1)[-1]}: {message}", source, message)
    if isinstance(exc, FileNotFoundError) or "No such file" in message or "NoSuchKey" in message:
        return f"FileNotFoundError: {source.rsplit('/', 1)[-1]}: no such file in your datasets"
    return _without_paths(f"{type(exc).__name__}: {message}", source, message)


def _without_paths(reason: str, source: str, message: str) -> str:
    if "No such file" in message or "NoSuchKey" in message:
        return f"FileNotFoundError: {source.rsplit('/', 1)[-1]}: no such file in your datasets"
    from mlaas.storage import get_storage

    return without_server_paths(reason, {get_storage().root: "<storage>"})[:500]
