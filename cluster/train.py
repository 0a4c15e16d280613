"""``python -m cluster.train <spec.yaml> [--set key=value ...]``: run one training job.

Runs on whatever cluster ``ray.init()`` finds: a local one started on the spot, or the head a
``ray job submit`` sent it to. The job's record and model version go to the platform database
(``MLAAS_HOME`` / ``MLAAS_DATABASE_URL``). Exit codes: 0 registered, 1 training failed,
2 invalid spec or data (with the file, field and reason on stderr), 130 stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from types import FrameType

from cluster.data import resolve_data_source
from cluster.errors import SpecError
from cluster.job import JobContext, run_job
from cluster.spec import JobSpec, apply_overrides, read_spec_file, validate_spec
from mlaas import accounts, training_jobs
from mlaas.db import require_current_schema
from mlaas.errors import MlaasError, NotFoundError
from mlaas.settings import Settings
from mlaas.storage import get_storage

EXIT_FAILED, EXIT_INVALID, EXIT_STOPPED = 1, 2, 130
# Ray Train waits 60 s for its workers by default; a busy or autoscaling cluster needs longer.
WORKER_START_TIMEOUT = ("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")


class JobStopped(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an error
    """The job was asked to stop (SIGTERM from ``ray job stop`` or a cancel)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.train", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "spec",
        nargs="?",
        help="job spec YAML, e.g. configs/train/digits-mlp-ddp.yaml "
        "(default with --job-id: the spec stored in the job record)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field, e.g. --set epochs=3 --set scaling.num_workers=1",
    )
    parser.add_argument("--job-id", help="the training job record to report into (set by the API)")
    parser.add_argument(
        "--tenant", help="tenant id or name owning the model (default: the admin tenant)"
    )
    return parser


def _read_spec(args: argparse.Namespace, url: str) -> tuple[JobSpec, str]:
    if args.spec:
        source, raw = args.spec, read_spec_file(args.spec)
    elif args.job_id:
        source, raw = f"<job {args.job_id}>", dict(training_jobs.get_job(url, args.job_id).spec)
    else:
        raise SpecError("<command line>", "spec", "give a spec file, or --job-id of a job record")
    raw = apply_overrides(raw, args.overrides, source)
    spec = validate_spec(raw, source)
    return resolve_data_source(spec, Path.cwd(), confine=False, source=source), source


def _tenant_id(url: str, requested: str | None) -> str:
    if requested:
        return accounts.find_tenant(url, requested).id
    admin = accounts.admin_tenant(url)
    if admin is not None:
        return admin.id
    try:
        return accounts.find_tenant(url, "local").id
    except NotFoundError:
        return accounts.create_tenant(url, "local", tier="free").id


def _submission_id() -> str | None:
    """The Ray job submission id when running under ``ray job submit``."""
    try:
        config = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}"))
    except json.JSONDecodeError:
        return None
    return (config.get("metadata") or {}).get("job_submission_id")


def _job_record(url: str, spec: JobSpec, args: argparse.Namespace) -> training_jobs.TrainingJobInfo:
    if args.job_id:
        job = training_jobs.get_job(url, args.job_id)
        return training_jobs.mark_running(url, job.id, total_epochs=spec.epochs)
    job, _ = training_jobs.create_job(
        url,
        tenant_id=_tenant_id(url, args.tenant),
        name=spec.name,
        spec=spec.model_dump(mode="json"),
        status="RUNNING",
        ray_job_id=_submission_id(),
    )
    return job


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise JobStopped


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings()
    url = settings.resolved_database_url
    job_id = args.job_id
    try:
        if args.job_id:  # its spec is in the database
            require_current_schema(url)  # `mlaas migrate` is the one migrator, never a job
        spec, source = _read_spec(args, url)  # a bad spec file is refused before any database
        require_current_schema(url)
        job = _job_record(url, spec, args)
        job_id = job.id
        print(
            f"[train] job {job.id}: {spec.name} ({spec.strategy.type}, "
            f"{spec.scaling.num_workers} worker(s), {spec.epochs} epoch(s))",
            flush=True,
        )
        signal.signal(signal.SIGTERM, _on_sigterm)
        ray_job_id = _connect_ray()
        if not job.ray_job_id:
            training_jobs.set_ray_job_id(url, job.id, ray_job_id)
        context = JobContext(url, get_storage(settings), job.tenant_id, job.id, source)
        version = run_job(spec, context)
    except SpecError as exc:
        return _fail(url, job_id, exc.message, EXIT_INVALID)
    except JobStopped:
        if job_id:
            training_jobs.finish_job(url, job_id, "STOPPED", error_message="stopped on request")
        print("[train] stopped", file=sys.stderr, flush=True)
        return EXIT_STOPPED
    except MlaasError as exc:
        return _fail(url, job_id, exc.message, EXIT_FAILED)
    except Exception as exc:  # noqa: BLE001 - any crash must end the record as FAILED
        traceback.print_exc()
        return _fail(url, job_id, f"{type(exc).__name__}: {exc}", EXIT_FAILED)
    training_jobs.finish_job(
        url,
        job.id,
        "SUCCEEDED",
        model_version_id=version.id,
        metrics={"model_version": version.version, **context.job_metrics},
    )
    print(
        f"[train] registered {version.model_name} version {version.version} "
        f"({version.id}) at {version.artifact_uri}",
        flush=True,
    )
    print(
        json.dumps(
            {
                "training_job_id": job.id,
                "model_version_id": version.id,
                "model": version.model_name,
                "version": version.version,
                "metrics": version.metrics,
            }
        ),
        flush=True,
    )
    return 0


def _connect_ray() -> str:
    """Join (or start) the cluster; returns this run's Ray job id (the submission id if any)."""
    os.environ.setdefault(*WORKER_START_TIMEOUT)  # Ray Train passes it on to its controller
    import ray

    if not ray.is_initialized():
        # MLAAS_RAY_ADDRESS (set by the gateway) wins over the job supervisor's RAY_ADDRESS.
        address = os.environ.get("MLAAS_RAY_ADDRESS") or None
        ray.init(address, namespace="mlaas", log_to_driver=True, logging_level=logging.WARNING)
    return _submission_id() or ray.get_runtime_context().get_job_id()


def _fail(url: str, job_id: str | None, message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    if job_id:
        try:
            training_jobs.finish_job(url, job_id, "FAILED", error_message=message)
        except MlaasError as exc:
            print(f"error: could not record the failure: {exc.message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
