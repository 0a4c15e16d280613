"""The model registry and training job records, on real SQLite and PostgreSQL databases."""

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError

from mlaas import accounts, registry, training_jobs
from mlaas.db import session_scope
from mlaas.errors import ConflictError, NotFoundError, ValidationError

WRITERS = 8


@pytest.fixture
def db(database_url: str) -> str:
    return database_url


@pytest.fixture
def tenant(db: str) -> str:
    return accounts.create_tenant(db, "acme", tier="free").id


def _register(
    db: str, tenant: str, name: str = "digits", **overrides: object
) -> registry.ModelVersionInfo:
    fields: dict = {
        "tenant_id": tenant,
        "model_name": name,
        "framework": "pytorch",
        "artifact_uri": "file:///tmp/x",
        "architecture": {"type": "mlp"},
        "input_schema": {"shape": [64]},
        "output_schema": {"classes": ["0", "1"]},
        "metrics": {"val_accuracy": 0.95},
        "training_job_id": "job_1",
    }
    fields.update(overrides)
    return registry.register_version(db, **fields)


def test_versions_are_numbered_per_model_and_keep_their_fields(db: str, tenant: str) -> None:
    first = _register(db, tenant)
    second = _register(db, tenant, metrics={"val_accuracy": 0.97})
    other = _register(db, tenant, "iris")

    assert (first.version, second.version, other.version) == (1, 2, 1)
    latest = registry.get_version(db, tenant, "digits")
    assert latest.id == second.id and latest.metrics == {"val_accuracy": 0.97}
    assert latest.framework == "pytorch" and latest.stage == "staging"
    assert latest.input_schema == {"shape": [64]} and latest.training_job_id == "job_1"
    assert latest.created_at.endswith("Z")
    assert [m.name for m in registry.list_models(db, tenant)] == ["digits", "iris"]


def test_promoting_a_version_to_production_demotes_the_previous_one(db: str, tenant: str) -> None:
    _register(db, tenant)
    _register(db, tenant)
    registry.set_stage(db, tenant, "digits", 1, "production")

    registry.set_stage(db, tenant, "digits", 2, "production")

    stages = {v.version: v.stage for v in registry.list_versions(db, tenant, "digits")}
    assert stages == {1: "staging", 2: "production"}
    assert registry.get_version(db, tenant, "digits", "production").version == 2


def test_another_tenants_model_is_not_found(db: str, tenant: str) -> None:
    intruder = accounts.create_tenant(db, "intruder", tier="free").id
    _register(db, tenant)

    with pytest.raises(NotFoundError):
        registry.get_version(db, intruder, "digits")
    assert registry.list_models(db, intruder) == []


def test_a_pinned_version_number_cannot_be_registered_twice(db: str, tenant: str) -> None:
    _register(db, tenant, version=1)

    with pytest.raises(ConflictError):
        _register(db, tenant, version=1)


def test_model_names_must_be_path_safe(db: str, tenant: str) -> None:
    with pytest.raises(ValidationError):
        _register(db, tenant, "../escape")


def test_idempotency_key_returns_the_same_job_and_refuses_a_different_body(
    db: str, tenant: str
) -> None:
    spec = {"name": "digits", "epochs": 3}
    job, created = training_jobs.create_job(
        db, tenant_id=tenant, name="digits", spec=spec, idempotency_key="k1"
    )

    again, created_again = training_jobs.create_job(
        db, tenant_id=tenant, name="digits", spec=spec, idempotency_key="k1"
    )

    assert created and not created_again and again.id == job.id
    with pytest.raises(ConflictError):
        training_jobs.create_job(
            db, tenant_id=tenant, name="digits", spec={**spec, "epochs": 4}, idempotency_key="k1"
        )


def test_progress_is_recorded_until_the_job_ends_and_the_first_end_wins(
    db: str, tenant: str
) -> None:
    job, _ = training_jobs.create_job(db, tenant_id=tenant, name="d", spec={"epochs": 4})

    training_jobs.record_progress(db, job.id, epoch=1, step=10, metrics={"loss": 1.0, "epoch": 1})
    mid = training_jobs.record_progress(
        db, job.id, epoch=2, step=20, metrics={"loss": 0.5, "epoch": 2}
    )
    stopped = training_jobs.finish_job(db, job.id, "STOPPED")
    late = training_jobs.finish_job(db, job.id, "FAILED", error_message="SIGTERM")
    after = training_jobs.record_progress(db, job.id, epoch=3, step=30, metrics={"loss": 0.1})

    assert mid.status == "RUNNING" and mid.progress == 50.0 and mid.epoch == 2 and mid.step == 20
    assert [m["loss"] for m in mid.metrics_history] == [1.0, 0.5]
    assert mid.eta_seconds is not None and mid.eta_seconds >= 0
    assert stopped.status == late.status == after.status == "STOPPED"
    assert after.epoch == 2 and late.error_message is None


def test_another_tenants_job_is_not_found(db: str, tenant: str) -> None:
    intruder = accounts.create_tenant(db, "intruder", tier="free").id
    job, _ = training_jobs.create_job(db, tenant_id=tenant, name="d", spec={})

    with pytest.raises(NotFoundError):
        training_jobs.get_job(db, job.id, tenant_id=intruder)
    assert training_jobs.get_job(db, job.id, tenant_id=tenant).id == job.id


def _all_at_once(work: Callable[[int], Any], count: int = WRITERS) -> list[Any]:
    """Run ``work(i)`` in ``count`` threads released together; results or raised errors."""
    start = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - the test asserts there are none
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_concurrent_promotions_leave_exactly_one_production_version(db: str, tenant: str) -> None:
    for _ in range(WRITERS):
        _register(db, tenant)

    results = _all_at_once(
        lambda i: registry.set_stage(db, tenant, "digits", i + 1, "production")
    )

    assert [r for r in results if isinstance(r, BaseException)] == []
    stages = [v.stage for v in registry.list_versions(db, tenant, "digits")]
    assert stages.count("production") == 1 and len(stages) == WRITERS


def test_concurrent_registrations_get_distinct_numbers(db: str, tenant: str) -> None:
    results = _all_at_once(lambda i: _register(db, tenant, metrics={"writer": i}))

    assert [r for r in results if isinstance(r, BaseException)] == []
    assert sorted(r.version for r in results) == list(range(1, WRITERS + 1))
    assert len(registry.list_models(db, tenant)) == 1


def test_registering_into_production_moves_the_previous_one_to_staging(
    db: str, tenant: str
) -> None:
    _register(db, tenant, stage="production")

    second = _register(db, tenant, stage="production")

    stages = {v.version: v.stage for v in registry.list_versions(db, tenant, "digits")}
    assert stages == {1: "staging", 2: "production"} and second.stage == "production"


def test_the_database_refuses_a_second_production_version(db: str, tenant: str) -> None:
    first = _register(db, tenant, stage="production")

    with pytest.raises(IntegrityError), session_scope(db) as session:
        session.add(
            registry.ModelVersion(
                id="mv_sneaky", model_id=first.model_id, version=2, framework="pytorch",
                artifact_uri="file:///tmp/y", stage="production",
            )
        )


def test_concurrent_submissions_with_one_idempotency_key_create_one_job(
    db: str, tenant: str
) -> None:
    spec = {"name": "digits", "epochs": 2}

    results = _all_at_once(
        lambda i: training_jobs.create_job(
            db, tenant_id=tenant, name="digits", spec=spec, idempotency_key="same-key"
        )
    )

    assert [r for r in results if isinstance(r, BaseException)] == []
    assert len({job.id for job, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert len(training_jobs.list_jobs(db, tenant)) == 1
