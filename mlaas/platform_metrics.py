"""The platform's own Prometheus metrics: quota use, training jobs and provider cost.

They go through Ray's metrics agent like every ``ray.util.metrics`` metric, so Prometheus
scrapes them on each node's metrics port (``MLAAS_METRICS_EXPORT_PORT`` on a head `mlaas up`
starts) with Ray's ``ray_`` prefix and a counter's ``_total`` suffix:
``mlaas_quota_units`` is scraped as ``ray_mlaas_quota_units_total``. The gateway's request
metrics (``serve_apps/gateway/deployment.py``) come out the same way.

Labels stay few and bounded (tier, category, code, status, provider, direction): never a
tenant id, which would make a series per tenant. Recording in a process that is not a Ray
worker (the CLI, a unit test) does nothing.
"""

from __future__ import annotations

from functools import cache

from ray.util.metrics import Counter

from mlaas.tiers import QUOTA_CATEGORIES


@cache
def _counter(name: str, description: str, tag_keys: tuple[str, ...]) -> Counter:
    # One instance per process: Ray keeps a metric's series by its name.
    return Counter(name, description=description, tag_keys=tag_keys)


def quota_units_counted(tier: str, units: dict[str, int]) -> None:
    """Units an admitted request (or a job outside one) counted against its tenant's quotas.

    Only the quota categories: AI usage the provider router meters through the same actor
    (``ai_tokens_in:<provider>``...) has its own metrics, :func:`provider_call_accounted`.
    """
    counter = _counter(
        "mlaas_quota_units",
        "Units counted against monthly quotas, by tier and quota category",
        ("tier", "category"),
    )
    for category, quantity in units.items():
        if quantity > 0 and category in QUOTA_CATEGORIES:
            counter.inc(quantity, tags={"tier": tier, "category": category})


def admission_refused(tier: str, code: str) -> None:
    """A request refused by a rate limit or a quota (``code``: the error code answered)."""
    _counter(
        "mlaas_admission_refusals",
        "Requests refused by rate limits (RATE_LIMIT_EXCEEDED) or quotas (QUOTA_EXCEEDED)",
        ("tier", "code"),
    ).inc(tags={"tier": tier, "code": code})


def training_job_submitted() -> None:
    """A training job record was written (a new job, not an idempotent replay)."""
    _counter("mlaas_training_jobs_submitted", "Training jobs submitted", ()).inc()


def training_job_finished(status: str) -> None:
    """A training job reached its final state (SUCCEEDED, FAILED or STOPPED)."""
    _counter(
        "mlaas_training_jobs_finished", "Training jobs ended, by final status", ("status",)
    ).inc(tags={"status": status})


def provider_call_accounted(
    provider: str, tier: str, tokens_in: int, tokens_out: int, cost_usd: float
) -> None:
    """A provider call's tokens and cost, as the router books them."""
    tags = {"provider": provider, "tier": tier}
    _counter(
        "mlaas_provider_calls",
        "AI-provider calls booked, by provider and tier",
        ("provider", "tier"),
    ).inc(tags=tags)
    if cost_usd > 0:  # Ray's counters take positive increments only
        _counter(
            "mlaas_provider_cost_usd",
            "Cost of AI-provider calls in US dollars, by provider and tier",
            ("provider", "tier"),
        ).inc(cost_usd, tags=tags)
    tokens = _counter(
        "mlaas_provider_tokens",
        "Tokens of AI-provider calls, by provider and direction (in, out)",
        ("provider", "direction"),
    )
    for direction, count in (("in", tokens_in), ("out", tokens_out)):
        if count > 0:
            tokens.inc(count, tags={"provider": provider, "direction": direction})
