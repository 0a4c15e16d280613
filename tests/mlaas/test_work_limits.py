"""The tiers' limits on the size of work: per-job checks of specs (Tune searches too), count
limits, the shipped tiers, and the store counts the gateway reads. No Ray."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from cluster.spec import validate_spec
from mlaas import accounts, batch_jobs, training_jobs
from mlaas.errors import QuotaExceededError, ValidationError
from mlaas.tiers import TiersConfig, WorkLimits, load_tiers
from mlaas.work_limits import (
    MAX_SEARCH_COMBINATIONS,
    WorkLimitError,
    check_count,
    check_job_spec,
    job_spec_problems,
    planned_trials,
)

REPO = Path(__file__).resolve().parents[2]
FREE = WorkLimits()  # the defaults are the free tier's shipped limits


def spec(**changes: Any) -> dict[str, Any]:
    """A validated spec as the gateway checks it: the JSON dump of a ``JobSpec``."""
    raw: dict[str, Any] = {
        "name": "digits",
        "model": {"type": "mlp", "hidden_sizes": [16]},
        "data": {"source": "builtin:digits"},
        "scaling": {"num_workers": 1, "resources_per_worker": {"CPU": 0.5}},
        "epochs": 3,
        "max_failures": 0,
    }
    raw.update(changes)
    return validate_spec(raw).model_dump(mode="json")


def tune(**changes: Any) -> dict[str, Any]:
    search = {"search_space": {"hyperparameters.lr": {"loguniform": [1e-4, 1e-2]}},
              "num_samples": 4, "max_concurrent_trials": 2}
    search.update(changes)
    return search


def completed(raw: dict[str, Any]) -> dict[str, Any]:
    """A trial's spec with its defaults, the hook the gateway passes."""
    return validate_spec(raw).model_dump(mode="json")


def refusal(limits: WorkLimits, job: dict[str, Any], tier: str = "free") -> dict[str, Any]:
    with pytest.raises(WorkLimitError) as caught:
        check_job_spec(limits, job, tier, trial_spec=completed)
    return caught.value.details


def test_a_small_spec_and_the_spec_defaults_fit_the_free_tier() -> None:
    # Prepare
    defaults = validate_spec({"name": "d", "model": {"type": "mlp"},
                              "data": {"source": "builtin:digits"}}).model_dump(mode="json")

    # Execute
    problems = job_spec_problems(FREE, spec()) + job_spec_problems(FREE, defaults)

    # Assert
    assert problems == []


@pytest.mark.parametrize(
    ("changes", "field", "limit_name", "limit", "received"),
    [
        ({"scaling": {"num_workers": 64, "resources_per_worker": {"CPU": 0.25}}},
         "scaling.num_workers", "max_workers_per_job", 2, 64),
        ({"scaling": {"num_workers": 2, "resources_per_worker": {"CPU": 0.001}}},
         "scaling.resources_per_worker.CPU", "min_cpus_per_worker", 0.25, 0.001),
        ({"scaling": {"num_workers": 2, "resources_per_worker": {"CPU": 4}}},
         "scaling.resources_per_worker.CPU", "max_cpus_per_job", 2, 8),
        ({"scaling": {"num_workers": 1, "use_gpu": True}}, "scaling.use_gpu",
         "max_gpus_per_job", 0, 1),
        ({"scaling": {"num_workers": 1, "use_gpu": True,
                      "resources_per_worker": {"CPU": 1, "GPU": 2}}},
         "scaling.resources_per_worker.GPU", "max_gpus_per_job", 0, 2),
        ({"epochs": 100_000}, "epochs", "max_epochs", 100, 100_000),
        ({"max_failures": -1}, "max_failures", "max_failures", 3, -1),
        ({"max_failures": 50}, "max_failures", "max_failures", 3, 50),
    ],
    ids=["workers", "tiny-cpu", "cpus", "gpu", "gpus", "epochs", "retry-forever", "failures"],
)
def test_a_spec_over_a_per_job_limit_is_refused_naming_field_limit_and_tier(
    changes: dict[str, Any], field: str, limit_name: str, limit: float, received: float
) -> None:
    # Prepare
    job = spec(**changes)

    # Execute
    details = refusal(FREE, job)

    # Assert
    assert details["field"] == field and details["limit_name"] == limit_name
    assert details["limit"] == limit and details["received"] == received
    assert details["tier"] == "free" and details["reason"]


def test_the_refusal_is_a_422_validation_error_that_says_the_limit() -> None:
    # Prepare
    job = spec(scaling={"num_workers": 64, "resources_per_worker": {"CPU": 0.25}})

    # Execute
    with pytest.raises(ValidationError) as caught:
        check_job_spec(FREE, job, "free")

    # Assert
    assert caught.value.status_code == 422 and caught.value.code == "VALIDATION_ERROR"
    assert "at most 2 workers" in caught.value.message and "free tier" in caught.value.message


def test_language_model_steps_are_limited_but_other_models_ignore_them() -> None:
    # Prepare
    gpt = spec(model={"type": "gpt"}, data={"source": "corpus.txt"},
               hyperparameters={"steps_per_epoch": 10**9})
    mlp = spec(hyperparameters={"steps_per_epoch": 10**9})

    # Execute
    details = refusal(FREE, gpt)

    # Assert
    assert details["field"] == "hyperparameters.steps_per_epoch" and details["limit"] == 1000
    assert job_spec_problems(FREE, mlp) == []


def test_a_search_is_limited_in_trials_counting_grid_points() -> None:
    # Prepare: 2 samples of a 3 x 2 grid are 12 trials
    search = tune(num_samples=2, search_space={
        "hyperparameters.lr": {"grid": [1e-3, 1e-2, 1e-1]},
        "hyperparameters.batch_size": {"grid": [16, 32]}})

    # Execute
    details = refusal(FREE, spec(tune=search))

    # Assert
    assert planned_trials(search) == 12
    assert details["field"] == "tune.num_samples" and details["limit"] == 8
    assert details["received"] == 12


def test_a_search_is_limited_in_concurrent_trials_and_their_cpus_add_up() -> None:
    # Prepare: 2 concurrent trials of 2 workers x 0.5 CPU hold 2 CPUs, 3 would hold 3
    scaling = {"num_workers": 2, "resources_per_worker": {"CPU": 0.5}}
    fits = spec(scaling=scaling, tune=tune(max_concurrent_trials=2))
    roomy = WorkLimits(max_concurrent_trials=4)

    # Execute
    too_many = refusal(FREE, spec(scaling=scaling, tune=tune(max_concurrent_trials=3)))
    too_big = refusal(roomy, spec(scaling=scaling, tune=tune(max_concurrent_trials=3)))

    # Assert
    assert job_spec_problems(FREE, fits) == []
    assert too_many["field"] == "tune.max_concurrent_trials" and too_many["limit"] == 2
    assert too_big["limit_name"] == "max_cpus_per_job" and too_big["received"] == 3
    assert "3 concurrent trials" in too_big["reason"]


def test_only_as_many_trials_as_the_search_runs_count_as_concurrent() -> None:
    # Prepare: 1 sample allows 2 at once but only ever runs 1
    job = spec(scaling={"num_workers": 2, "resources_per_worker": {"CPU": 1}},
               tune=tune(num_samples=1, max_concurrent_trials=2))

    # Execute
    problems = job_spec_problems(FREE, job)

    # Assert
    assert problems == []


@pytest.mark.parametrize(
    ("path", "definition", "limit_name"),
    [
        ("scaling.num_workers", {"choice": [1, 64]}, "max_workers_per_job"),
        ("scaling.num_workers", {"randint": [1, 100]}, "max_workers_per_job"),
        ("scaling.resources_per_worker.CPU", {"uniform": [0.25, 8.0]}, "max_cpus_per_job"),
        ("epochs", {"grid": [1, 100_000]}, "max_epochs"),
        ("max_failures", {"choice": [0, -1]}, "max_failures"),
        ("scaling", {"choice": [{"num_workers": 2}, {"num_workers": 2, "use_gpu": True}]},
         "max_gpus_per_job"),
    ],
    ids=["choice", "randint", "uniform", "grid", "retry-forever", "whole-mapping"],
)
def test_searched_values_are_checked_as_the_trials_would_run_them(
    path: str, definition: dict[str, Any], limit_name: str
) -> None:
    # Prepare
    job = spec(scaling={"num_workers": 1, "resources_per_worker": {"CPU": 0.25}},
               tune=tune(num_samples=1, search_space={path: definition}))

    # Execute
    details = refusal(FREE, job)

    # Assert
    assert details["field"] == f"tune.search_space.{path}"
    assert details["limit_name"] == limit_name


def test_the_exclusive_upper_bound_of_randint_is_not_held_against_a_search() -> None:
    # Prepare: randint [1, 3) gives 1 or 2 workers, both within the free tier's 2
    job = spec(scaling={"num_workers": 1, "resources_per_worker": {"CPU": 0.5}},
               tune=tune(num_samples=1, search_space={
                   "scaling.num_workers": {"randint": [1, 3]}}))

    # Execute
    problems = job_spec_problems(FREE, job)

    # Assert
    assert problems == []


def test_searched_sizes_combine_across_dimensions() -> None:
    # Prepare: 2 workers fit, 1 CPU each fits, both together (2 CPUs x 2 trials) do not
    job = spec(scaling={"num_workers": 1, "resources_per_worker": {"CPU": 0.5}},
               tune=tune(num_samples=2, search_space={
                   "scaling.num_workers": {"choice": [1, 2]},
                   "scaling.resources_per_worker.CPU": {"choice": [0.5, 1.0]}}))

    # Execute
    details = refusal(FREE, job)

    # Assert
    assert details["limit_name"] == "max_cpus_per_job" and details["received"] == 4


def test_a_search_over_too_many_sized_combinations_is_refused() -> None:
    # Prepare
    values = list(range(1, 8))
    search = {f"scaling.resources_per_worker.r{i}": {"choice": values} for i in range(3)}
    job = spec(tune=tune(num_samples=1, search_space=search))

    # Execute
    details = refusal(WorkLimits(max_tune_trials=10**6), job)

    # Assert
    assert details["field"] == "tune.search_space"
    assert details["limit"] == MAX_SEARCH_COMBINATIONS and details["received"] == 7**3


def test_a_count_within_the_limit_passes_and_one_past_it_is_429_quota_exceeded() -> None:
    # Prepare
    limits = WorkLimits(max_knowledge_documents=10)

    # Execute
    check_count(limits, "max_knowledge_documents", current=7, adding=3, tier="free")
    with pytest.raises(QuotaExceededError) as caught:
        check_count(limits, "max_knowledge_documents", current=7, adding=4, tier="free")

    # Assert
    error = caught.value
    assert error.status_code == 429 and error.code == "QUOTA_EXCEEDED"
    assert error.details == {"limit": 10, "limit_name": "max_knowledge_documents", "current": 7,
                             "requested": 4, "tier": "free", "retry_after_seconds": 30}
    assert "DELETE /v1/knowledge/documents" in error.message and error.headers["Retry-After"]


def test_shipped_tiers_give_paying_tiers_more_of_every_limit() -> None:
    # Prepare
    tiers = load_tiers(REPO / "configs" / "tiers.yaml")

    # Execute
    free, pro, enterprise = (tiers.work_limits(t) for t in ("free", "pro", "enterprise"))

    # Assert
    assert free == WorkLimits(), "the defaults are the free tier's limits"
    for name in WorkLimits.model_fields:
        if name == "min_cpus_per_worker":
            assert free.min_cpus_per_worker >= pro.min_cpus_per_worker
            continue
        assert getattr(free, name) < getattr(pro, name) <= getattr(enterprise, name), name
    assert tiers.work_limits("no-such-tier") == free


def test_a_tiers_file_without_limits_gets_the_free_tiers_and_partial_limits_fill_in() -> None:
    # Prepare
    raw = {"tiers": {"free": {"quotas": {}},
                     "pro": {"quotas": {}, "limits": {"max_epochs": 500}}}}

    # Execute
    tiers = TiersConfig.model_validate(raw)
    again = TiersConfig.model_validate(tiers.model_dump())  # as the admission actor gets it

    # Assert
    assert tiers.work_limits("free") == WorkLimits()
    assert tiers.work_limits("pro").max_epochs == 500
    assert tiers.work_limits("pro").max_workers_per_job == WorkLimits().max_workers_per_job
    assert again == tiers


def test_an_unknown_limit_in_the_tiers_file_is_refused(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "tiers.yaml"
    path.write_text("tiers:\n  free:\n    limits: {max_worker: 4}\n")

    # Execute
    with pytest.raises(ValueError, match="tiers.free.limits.max_worker") as caught:
        load_tiers(path)

    # Assert
    assert "Extra inputs" in str(caught.value)


def test_only_jobs_that_have_not_ended_are_counted(database_url: str) -> None:
    # Prepare
    tenant = accounts.create_tenant(database_url, "acme", tier="free").id
    other = accounts.create_tenant(database_url, "other", tier="free").id
    jobs = [training_jobs.create_job(database_url, tenant_id=tenant, name=f"j{i}",
                                     spec={"epochs": 1})[0] for i in range(3)]
    training_jobs.mark_running(database_url, jobs[1].id)
    training_jobs.finish_job(database_url, jobs[2].id, "STOPPED")
    training_jobs.create_job(database_url, tenant_id=other, name="theirs", spec={})

    # Execute
    active = training_jobs.active_jobs(database_url, tenant)

    # Assert
    assert [job.id for job in active] == [jobs[0].id, jobs[1].id]


def test_batch_jobs_that_ended_or_were_lost_do_not_count(database_url: str) -> None:
    # Prepare
    tenant = accounts.create_tenant(database_url, "acme", tier="free").id
    pending, running, lost, done = (batch_jobs.create(database_url, tenant) for _ in range(4))
    batch_jobs.update(database_url, running, status="RUNNING", heartbeat_at=time.time())
    batch_jobs.update(database_url, lost, status="RUNNING", heartbeat_at=time.time() - 600)
    batch_jobs.update(database_url, done, status="SUCCEEDED")

    # Execute
    active = batch_jobs.count_active(database_url, tenant, heartbeat_timeout_s=30)

    # Assert
    assert active == 2


def _write_concurrently(write: Any, writers: int = 8) -> tuple[int, int]:
    """``write()`` from ``writers`` threads released at once: (written, refused)."""
    import threading

    start = threading.Barrier(writers)
    outcomes: list[str] = []

    def one() -> None:
        start.wait()
        try:
            write()
            outcomes.append("written")
        except QuotaExceededError:
            outcomes.append("refused")

    threads = [threading.Thread(target=one) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes.count("written"), outcomes.count("refused")


def _slow_admit(limit_name: str) -> Any:
    """The gateway's check, slowed down so that unserialised writers would all see room."""
    limits = WorkLimits()

    def admit(current: int) -> None:
        time.sleep(0.05)
        check_count(limits, limit_name, current=current, tier="free")

    return admit


def test_concurrent_training_submissions_never_pass_the_count_limit(database_url: str) -> None:
    # Prepare: the free tier's 2 training jobs not yet ended, and 8 requests at once
    tenant = accounts.create_tenant(database_url, "acme", tier="free").id
    admit = _slow_admit("max_concurrent_training_jobs")

    # Execute
    written, refused = _write_concurrently(lambda: training_jobs.create_job(
        database_url, tenant_id=tenant, name="race", spec={"epochs": 1}, admit=admit))  # fmt: skip

    # Assert
    assert (written, refused) == (WorkLimits().max_concurrent_training_jobs, 8 - written)
    assert len(training_jobs.active_jobs(database_url, tenant)) == written


def test_concurrent_batch_jobs_never_pass_the_count_limit(database_url: str) -> None:
    # Prepare
    tenant = accounts.create_tenant(database_url, "acme", tier="free").id
    admit = _slow_admit("max_concurrent_batch_jobs")

    # Execute
    written, refused = _write_concurrently(
        lambda: batch_jobs.create(database_url, tenant, admit=admit, input="x.csv"))

    # Assert
    assert (written, refused) == (WorkLimits().max_concurrent_batch_jobs, 8 - written)
    assert batch_jobs.count_active(database_url, tenant) == written


def test_concurrent_federated_pools_never_pass_the_open_pool_limit(
    database_url: str, tmp_path: Path
) -> None:
    """Eight pools of distinct names at once; a name already taken leaves no pool behind."""
    from federated._pools import create_pool
    from federated._store import list_pools
    from mlaas.errors import ConflictError

    # Prepare
    tenant = accounts.create_tenant(database_url, "acme", tier="free").id
    admit = _slow_admit("max_open_federated_pools")
    names = iter(range(8))
    spec = {"model": {"num_features": 4, "num_classes": 3, "hidden_sizes": [4]},
            "rounds": 1, "min_nodes": 4, "target_nodes": 5,
            "secure_aggregation": {"threshold": 3, "clip_range": 0.5, "quantization_bits": 12,
                                   "modulus_bits": 40, "sample_cap": 100}}  # fmt: skip

    def create() -> None:
        create_pool(database_url, tmp_path / "artifacts", tenant,
                    {**spec, "name": f"pool-{next(names)}"}, admit=admit)  # fmt: skip

    # Execute
    written, refused = _write_concurrently(create)
    pools = list_pools(database_url, tenant)
    with pytest.raises(ConflictError):  # a name one of the admitted pools took
        create_pool(database_url, tmp_path / "artifacts", tenant,
                    {**spec, "name": pools[0]["name"]})  # fmt: skip

    # Assert
    assert (written, refused) == (WorkLimits().max_open_federated_pools, 8 - written)
    assert len(pools) == written
    assert len(list_pools(database_url, tenant)) == written, "the refused name left no pool"
