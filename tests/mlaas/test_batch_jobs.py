"""Batch job records on SQLite and PostgreSQL: what every gateway replica reads."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mlaas import accounts, batch_jobs
from mlaas.errors import NotFoundError


@pytest.fixture
def tenant(database_url: str) -> str:
    return accounts.create_tenant(database_url, "acme", tier="pro").id


def test_a_job_goes_from_pending_to_succeeded_with_its_fields(
    database_url: str, tenant: str
) -> None:
    job_id = batch_jobs.create(database_url, tenant, model_version_id="mv_1", input="x.csv")

    pending = batch_jobs.read(database_url, tenant, job_id)
    batch_jobs.update(database_url, job_id, status="RUNNING", heartbeat_at=time.time())
    batch_jobs.update(database_url, job_id, rows=3)
    done = batch_jobs.update(database_url, job_id, status="SUCCEEDED", output_uri="s3://b/p")

    assert pending["status"] == "PENDING" and pending["input"] == "x.csv"
    assert done["status"] == "SUCCEEDED" and done["rows"] == 3
    assert batch_jobs.read(database_url, tenant, job_id) == done


def test_a_silent_running_job_is_failed_for_good_and_a_late_writer_cannot_revive_it(
    database_url: str, tenant: str
) -> None:
    job_id = batch_jobs.create(database_url, tenant)
    batch_jobs.update(database_url, job_id, status="RUNNING", heartbeat_at=time.time() - 60)

    lost = batch_jobs.read(database_url, tenant, job_id, heartbeat_timeout_s=30)
    late = batch_jobs.update(database_url, job_id, status="SUCCEEDED", rows=5)

    assert lost["status"] == "FAILED" and lost["error"].startswith("LOST:")
    assert late == lost and batch_jobs.read(database_url, tenant, job_id) == lost


def test_concurrent_beats_and_updates_lose_no_field(database_url: str, tenant: str) -> None:
    job_id = batch_jobs.create(database_url, tenant)

    def write(i: int) -> None:
        batch_jobs.update(database_url, job_id, **{f"f{i}": i}, heartbeat_at=time.time())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(16)))

    state = batch_jobs.read(database_url, tenant, job_id)
    assert all(state[f"f{i}"] == i for i in range(16))


def test_another_tenants_job_and_a_malformed_id_are_not_found(
    database_url: str, tenant: str
) -> None:
    other = accounts.create_tenant(database_url, "other", tier="free").id
    job_id = batch_jobs.create(database_url, tenant)

    with pytest.raises(NotFoundError):
        batch_jobs.read(database_url, other, job_id)
    with pytest.raises(NotFoundError):
        batch_jobs.read(database_url, tenant, "bp_../../x")
