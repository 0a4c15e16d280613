"""The body of an asynchronous batch-prediction job (run as a Ray task): read with Ray Data,
count the rows against the tenant's quota, ``map_batches`` the version over them, write
Parquet. Whatever goes wrong ends the job ``FAILED`` with the reason in its status."""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from serve_apps.inference.batch_jobs import BatchPredictor, _now, write_status

BATCH_ROWS = 8192
ENDPOINT = "/v1/batch_predict"


@contextmanager
def heartbeat(job: Path, every_s: float) -> Any:
    """Stamp ``heartbeat_at`` into the status while the block runs, from a daemon thread.

    A worker that dies stops the stamps, which is how a reader tells a lost job from a slow
    one. The thread is stopped and joined before the block's final status is written.
    """
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            write_status(job, heartbeat_at=time.time())

    thread = threading.Thread(target=beat, name="batch-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _read(source: str, fmt: str) -> Any:
    """The file as a Ray Dataset. Read here with pyarrow (local or remote URIs), not by Ray
    Data's read tasks: those ask for a whole CPU each, which a two-core machine whose
    replicas hold fractions of both cannot grant, so the job would wait forever."""
    import pyarrow as pa
    import pyarrow.dataset as pads
    import ray.data

    if fmt == "numpy":
        rows = np.load(source, allow_pickle=False).astype(np.float32)
        flat = rows.reshape(len(rows), -1)
        # An "inputs" column built here: a rename would be one more whole-CPU Ray Data task.
        inputs = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])
        return ray.data.from_arrow(pa.table({"inputs": inputs}))
    if fmt == "json":
        import pyarrow.json as pajson

        table = pajson.read_json(source)
    else:
        table = pads.dataset(source, format=fmt).to_table()
    if not isinstance(table, pa.Table) or table.num_rows == 0:
        raise ValueError(f"{source} has no rows")
    return ray.data.from_arrow(table)


def _write(predicted: Any, out: Path) -> int:
    """Predictions as Parquet parts in input order; returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True, exist_ok=True)
    rows = 0
    for index, batch in enumerate(predicted.iter_batches(batch_size=None, batch_format="pyarrow")):
        pq.write_table(pa.Table.from_batches(batch.to_batches()) if hasattr(batch, "to_batches")
                       else batch, out / f"part-{index:05d}.parquet")
        rows += batch.num_rows
    return rows


def _charge(tenant: dict[str, str], rows: int) -> str | None:
    """Count the rows beyond the first against the quota; the refusal message, if any."""
    if rows <= 1:
        return None
    import ray

    from mlaas.admission import ACTOR_NAME
    from mlaas.platform import NAMESPACE

    actor = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    refusal = ray.get(actor.consume.remote(
        tenant["tenant_id"], tenant["tier"], "inference_requests", rows - 1, ENDPOINT
    ))
    if refusal is None:
        return None
    return f"QUOTA_EXCEEDED: {rows} rows would exceed the monthly limit of {refusal[2]}"


def run_batch_job(
    folder: str,
    spec: dict[str, Any],
    input_schema: dict[str, Any],
    source: str,
    fmt: str,
    tenant: dict[str, str],
    charge_rows: bool,
    heartbeat_s: float = 5.0,
) -> dict[str, Any]:
    """Predict every row of ``source``; returns the final status. Beats every
    ``heartbeat_s`` (a quarter of the time after which readers call the job lost)."""
    job = Path(folder)
    started = time.monotonic()
    write_status(job, status="RUNNING", started_at=_now(), worker_pid=os.getpid(),
                 heartbeat_at=time.time())
    with heartbeat(job, heartbeat_s):
        outcome = _run(job, spec, input_schema, source, fmt, tenant, charge_rows, started)
    return write_status(job, **outcome)


def _run(job: Path, spec: dict[str, Any], input_schema: dict[str, Any], source: str, fmt: str,
         tenant: dict[str, str], charge_rows: bool, started: float) -> dict[str, Any]:
    """The job's work; returns the fields of its final status."""
    import ray.data

    try:
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        dataset = _read(source, fmt)
        rows = dataset.count()
        refusal = _charge(tenant, rows) if charge_rows else None
        if refusal:
            return {"status": "FAILED", "error": refusal, "rows": rows, "finished_at": _now()}
        write_status(job, rows=rows)
        predicted = dataset.map_batches(
            BatchPredictor,
            fn_constructor_args=(spec, input_schema),
            batch_size=BATCH_ROWS,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=0.25,
        )
        out = job / "predictions"
        _write(predicted, out)
        seconds = time.monotonic() - started
        return {"status": "SUCCEEDED", "rows": rows, "output_uri": out.resolve().as_uri(),
                "seconds": round(seconds, 3), "rows_per_s": round(rows / max(seconds, 1e-9), 1),
                "finished_at": _now()}
    except Exception as exc:  # unreadable file, bad columns, model that will not load...
        reason = str(exc).strip().splitlines()
        message = next((line for line in reversed(reason) if line.strip()), type(exc).__name__)
        return {"status": "FAILED", "error": f"{type(exc).__name__}: {message[:500]}",
                "finished_at": _now()}
