"""Training jobs behind the API: validate a spec, write its record, submit it to Ray, and keep
the record in step with what Ray knows about the job.

Jobs are submitted through Ray's ``JobSubmissionClient`` with the entrypoint
``python -m cluster.train --job-id <id>``; the job reads its spec from the record and
reports progress into it. Blocking calls (database, job server, file checks) run in threads.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from cluster.data import check_data, resolve_data_source
from cluster.errors import SpecError
from cluster.spec import JobSpec, TuneSpec, confined_deepspeed_config, set_path, validate_spec
from mlaas import registry, training_jobs
from mlaas.errors import (
    ConflictError,
    NotFoundError,
    ServiceUnavailableError,
    without_server_paths,
)
from mlaas.settings import Settings

WORKER_START_TIMEOUT_S = "600"
# (connect, read) seconds for calls to the job server. Ray's client sets none, so a dashboard
# that stops answering (its node busy, or a node being declared lost) held a status read, and
# the caller, for as long as it lasted. Reads give up sooner: a status read then answers from
# the record, which the job itself keeps up to date.
JOB_SERVER_READ_TIMEOUT_S = (3.05, 10.0)
JOB_SERVER_WRITE_TIMEOUT_S = (3.05, 60.0)
_RAY_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def tenant_data_dir(settings: Settings, tenant_id: str) -> Path:
    """Where a tenant's own data files live; API specs may read only there (and sample data)."""
    return settings.home / "data" / tenant_id


def checked_spec(raw: Any, *, settings: Settings, database_url: str, tenant_id: str) -> JobSpec:
    """Validate a spec from a request, including its data, DeepSpeed config and teacher.

    Every path the spec names, the values of a Tune search included, is confined to the
    tenant's folder (or the shipped data and configs) and made the absolute path the job
    reads; a path elsewhere and a missing one get the same refusal.

    Raises:
        SpecError: a 422 naming the field.
        ForbiddenError: a 403 for a data URI outside the tenant's storage prefix.
    """
    spec = validate_spec(raw, "<request>")
    checked = _confined(spec, settings, tenant_id)
    if spec.tune is not None:
        checked = checked.model_copy(
            update={"tune": _confined_search(spec, spec.tune, settings, tenant_id)}
        )
    if spec.distill is not None:
        ref = spec.distill.teacher
        try:
            registry.get_version(database_url, tenant_id, ref.model, ref.version)
        except NotFoundError as exc:
            raise SpecError(
                "<request>", "distill.teacher", exc.message, received=ref.model
            ) from exc
    return checked


def _confined(spec: JobSpec, settings: Settings, tenant_id: str) -> JobSpec:
    """The spec with its data, model folder and DeepSpeed config checked and made absolute."""
    tenant_dir = tenant_data_dir(settings, tenant_id)
    spec = resolve_data_source(
        spec, tenant_dir, confine=True, source="<request>", tenant_id=tenant_id, settings=settings
    )
    check_data(spec, "<request>")
    if spec.strategy.type == "deepspeed":
        spec = confined_deepspeed_config(spec, tenant_dir, "<request>")
    return spec


def _confined_search(
    spec: JobSpec, search: TuneSpec, settings: Settings, tenant_id: str
) -> TuneSpec:
    """The search with each listed value held to the base spec's rules (a trial reads what
    it names), and kept as the trial is to read it (an absolute path, as in the base)."""
    base = spec.model_dump(mode="json", exclude={"tune"})
    space: dict[str, dict[str, Any]] = {}
    for path, definition in search.search_space.items():
        (kind, values), *_ = definition.items()
        if kind not in ("choice", "grid"):
            space[path] = definition  # numeric bounds name no path
            continue
        checked = []
        for value in values:
            raw = json.loads(json.dumps(base))
            set_path(raw, path, value)
            try:
                variant = _confined(validate_spec(raw, "<request>"), settings, tenant_id)
            except SpecError as exc:
                # The value goes in details only, so the words are the same for any refusal.
                raise SpecError(
                    "<request>",
                    f"tune.search_space.{path}",
                    f"a value does not fit: field {exc.field}: {exc.reason}",
                    received=value,
                ) from exc
            checked.append(_value_at(variant.model_dump(mode="json"), path))
        space[path] = {kind: checked}
    return search.model_copy(update={"search_space": space})


def _value_at(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node[part]
    return node


def cluster_address() -> str | None:
    """The GCS address of the cluster this process belongs to (None outside Ray)."""
    import ray

    return ray.get_runtime_context().gcs_address if ray.is_initialized() else None


class JobServer:
    """The cluster's Ray job server, reached lazily and shared by the routes of a replica.

    It is found through this cluster's GCS, never by Ray's "latest cluster on this machine"
    guess, which picks another cluster when several share a machine.
    """

    def __init__(self, address: str | None = None) -> None:
        self._address = address
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from ray.job_submission import JobSubmissionClient

                class BoundedJobSubmissionClient(JobSubmissionClient):  # type: ignore[misc]
                    """Every call with a timeout: ``_do_request`` is the one place Ray's
                    client sends through, and passes extra arguments on to ``requests``."""

                    def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
                        read = method.upper() in ("GET", "HEAD")
                        kwargs.setdefault("timeout", JOB_SERVER_READ_TIMEOUT_S if read
                                          else JOB_SERVER_WRITE_TIMEOUT_S)  # fmt: skip
                        return super()._do_request(method, endpoint, **kwargs)

                try:
                    self._client = BoundedJobSubmissionClient(
                        self._address or cluster_address()
                    )
                except (ConnectionError, RuntimeError, ValueError, OSError) as exc:
                    raise ServiceUnavailableError(
                        f"The Ray job server is not reachable: {exc}"
                    ) from exc
            return self._client


@dataclass(frozen=True)
class Submission:
    job: training_jobs.TrainingJobInfo
    created: bool


def submit(
    spec: JobSpec,
    *,
    settings: Settings,
    database_url: str,
    tenant_id: str,
    idempotency_key: str | None,
    job_server: JobServer,
    admit: Callable[[int], None] | None = None,
) -> Submission:
    """Write the job record (or find the one of an earlier request with this key) and submit it.

    ``admit`` checks the tenant's count of jobs not yet ended as the record is written
    (:func:`mlaas.training_jobs.create_job`).

    Raises:
        ConflictError: the key was used for a different spec.
        ServiceUnavailableError: the job server refused the job (the record ends FAILED).
    """
    model = registry.ensure_model(database_url, tenant_id, spec.model_name, task=spec.task)
    job, created = training_jobs.create_job(
        database_url,
        tenant_id=tenant_id,
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        model_id=model.id,
        idempotency_key=idempotency_key,
        admit=admit,
    )
    if not created:
        return Submission(job, False)
    training_jobs.set_ray_job_id(database_url, job.id, job.id)
    try:
        job_server.client().submit_job(
            entrypoint=f"{shlex.quote(sys.executable)} -m cluster.train --job-id {job.id}",
            submission_id=job.id,
            runtime_env={"env_vars": job_env(settings, cluster_address())},
            # With resources of its own the driver is placed by Ray's scheduler on a node with
            # room; without, Ray runs it on the head, whatever the head's load.
            entrypoint_num_cpus=settings.training_driver_num_cpus or None,
            metadata={"tenant_id": tenant_id, "training_job_id": job.id, "name": spec.name},
        )
    except Exception as exc:  # noqa: BLE001 - any refusal leaves a FAILED record, not a PENDING one
        training_jobs.finish_job(
            database_url, job.id, "FAILED", error_message=f"submission failed: {exc}"
        )
        if isinstance(exc, ServiceUnavailableError):
            raise
        raise ServiceUnavailableError(f"The Ray job server refused the job: {exc}") from exc
    return Submission(training_jobs.get_job(database_url, job.id), True)


def job_env(settings: Settings, ray_address: str | None) -> dict[str, str]:
    """What the job process needs: the same database, artifact store and Ray cluster.

    ``MLAAS_RAY_ADDRESS`` pins the cluster: Ray's job supervisor hands the driver an address
    it resolves as "the latest cluster started on this machine", wrong when there are several.
    A database URL carrying a password is left out: a job's runtime_env is shown in the Ray
    dashboard and job API, and the driver inherits ``MLAAS_DATABASE_URL`` from the node's
    environment anyway (Ray's processes start with the environment `mlaas up` started Ray in).
    In cluster mode the driver runs on any node, whose own ``MLAAS_HOME`` it keeps: this
    replica's home is a path of another machine.
    """
    env = {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": WORKER_START_TIMEOUT_S}
    if not settings.cluster_mode:
        env["MLAAS_HOME"] = str(settings.home)
    if ray_address:
        env["MLAAS_RAY_ADDRESS"] = ray_address
    if settings.database_url and make_url(settings.database_url).password is None:
        env["MLAAS_DATABASE_URL"] = settings.database_url
    if os.environ.get("MLAAS_TIERS_FILE"):
        env["MLAAS_TIERS_FILE"] = os.environ["MLAAS_TIERS_FILE"]
    return env


def reconciled(
    job: training_jobs.TrainingJobInfo, database_url: str, job_server: JobServer
) -> training_jobs.TrainingJobInfo:
    """The record, corrected when Ray saw the job end but the job could not say so itself
    (killed, out of memory, or its process never started)."""
    if job.is_terminal or not job.ray_job_id:
        return job
    try:
        info = job_server.client().get_job_info(job.ray_job_id)
    except Exception:  # noqa: BLE001 - the job server being away must not break status reads
        return job
    ray_status = str(getattr(info.status, "value", info.status))
    if ray_status not in _RAY_TERMINAL:
        return job
    job = training_jobs.get_job(database_url, job.id)  # the job may have just written its end
    if job.is_terminal:
        return job
    status: training_jobs.JobStatus = "STOPPED" if ray_status == "STOPPED" else "FAILED"
    message = info.message or f"the Ray job ended {ray_status} without reporting a result"
    return training_jobs.finish_job(database_url, job.id, status, error_message=message)


def cancel(
    job: training_jobs.TrainingJobInfo, database_url: str, job_server: JobServer
) -> training_jobs.TrainingJobInfo:
    """Mark the job STOPPED, then ask Ray to stop it (SIGTERM, then SIGKILL).

    Raises:
        ConflictError: the job had already ended.
    """
    if job.is_terminal:
        raise ConflictError(
            f"Training job {job.id} already ended ({job.status})",
            details={"training_job_id": job.id, "status": job.status},
        )
    stopped = training_jobs.finish_job(
        database_url, job.id, "STOPPED", error_message="cancelled on request"
    )
    if stopped.status == "STOPPED" and job.ray_job_id:
        # The record is STOPPED already; a job that is gone by now is fine.
        with contextlib.suppress(Exception):
            job_server.client().stop_job(job.ray_job_id)
    return stopped


def job_logs(job: training_jobs.TrainingJobInfo, job_server: JobServer, tail_lines: int) -> str:
    if not job.ray_job_id:
        return ""
    try:
        text = str(job_server.client().get_job_logs(job.ray_job_id))
    except Exception:  # noqa: BLE001 - logs of a job that never started are empty
        return ""
    return "\n".join(text.splitlines()[-tail_lines:])


def status_body(job: training_jobs.TrainingJobInfo) -> dict[str, Any]:
    """The status document of ``GET /v1/train/{id}/status``."""
    return {
        "training_job_id": job.id,
        "name": job.name,
        "model_id": job.model_id,
        "status": job.status,
        "progress": {
            "percent": job.progress,
            "epoch": job.epoch,
            "total_epochs": job.total_epochs,
            "step": job.step,
        },
        "metrics": job.metrics,
        "metrics_history": job.metrics_history,
        "eta_seconds": job.eta_seconds,
        "estimated_completion": estimated_completion(job),
        "error_message": job.error_message and without_server_paths(job.error_message),
        "model_version_id": job.model_version_id,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def estimated_completion(job: training_jobs.TrainingJobInfo) -> str | None:
    """When the job should end, from its measured progress (an ISO UTC timestamp).

    Now plus the ETA while it runs (null until its first progress report makes the ETA
    measurable), its end time once it succeeded, and null for a job that failed or stopped:
    it will not complete.
    """
    if job.status == "SUCCEEDED":
        return job.finished_at
    if job.is_terminal or job.eta_seconds is None:
        return None
    at = datetime.now(UTC) + timedelta(seconds=job.eta_seconds)
    return at.replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def model_status_body(
    model: dict[str, Any], job: training_jobs.TrainingJobInfo | None
) -> dict[str, Any]:
    """The document of ``GET /v1/models/{id}/status``: the model with its versions
    (:func:`mlaas.model_store.model_detail`), its latest training job and when that ends.

    ``status`` is ``training`` while that job is pending or running, else the model's own
    (``ready`` with a version, ``empty`` without); the job's outcome is ``training_job.status``.
    """
    in_training = job is not None and not job.is_terminal
    return {
        **model,
        "model_id": model["id"],
        "status": "training" if in_training else model["status"],
        "training_job": status_body(job) if job is not None else None,
        "estimated_completion": estimated_completion(job) if job is not None else None,
    }
