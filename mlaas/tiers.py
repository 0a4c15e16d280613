"""Tiers, quotas, limits on the size of work, and rate limits, read from ``configs/tiers.yaml``
and validated."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlaas.errors import ConfigurationError

# Monthly quota categories: training jobs; predicted rows; texts embedded; knowledge documents
# ingested and queries asked; expert routing decisions (POST /v1/experts/route, expert:auto).
QUOTA_CATEGORIES = (
    "training_jobs",
    "inference_requests",
    "embedding_inputs",
    "knowledge_requests",
    "expert_routings",
)


class WorkLimits(BaseModel):
    """How much work one tenant of a tier may ask for: per job, and at the same time.

    A key left out of the tiers file takes the default here, the free tier's shipped value,
    so an older or hand-written tiers file stays as safe as the shipped one.
    """

    model_config = ConfigDict(extra="forbid")

    max_workers_per_job: int = Field(default=2, ge=1, description="scaling.num_workers")
    min_cpus_per_worker: float = Field(
        default=0.25, ge=0, description="resources_per_worker.CPU: no crowd of 0.001-CPU workers"
    )
    max_cpus_per_job: float = Field(
        default=2, gt=0, description="workers x CPU per worker (x concurrent Tune trials)"
    )
    max_gpus_per_job: float = Field(
        default=0, ge=0, description="workers x GPU per worker (x concurrent Tune trials)"
    )
    max_epochs: int = Field(default=100, ge=1)
    max_steps_per_epoch: int = Field(default=1000, ge=1, description="language models")
    max_failures: int = Field(default=3, ge=0, description="a job's max_failures; -1 is refused")
    max_tune_trials: int = Field(default=8, ge=1, description="num_samples x grid points")
    max_concurrent_trials: int = Field(default=2, ge=1)
    max_concurrent_training_jobs: int = Field(default=2, ge=0, description="not yet ended")
    max_concurrent_batch_jobs: int = Field(default=2, ge=0, description="not yet ended")
    max_open_federated_pools: int = Field(default=3, ge=0, description="not finished or failed")
    max_knowledge_documents: int = Field(default=100, ge=0)


class TierConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quotas: dict[str, int | None] = Field(default_factory=dict)
    limits: WorkLimits = Field(default_factory=WorkLimits)

    @model_validator(mode="after")
    def _known_categories(self) -> TierConfig:
        unknown = set(self.quotas) - set(QUOTA_CATEGORIES)
        if unknown:
            raise ValueError(f"unknown quota categories {sorted(unknown)}; use {QUOTA_CATEGORIES}")
        return self


class RateLimitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window_s: float = Field(default=60, gt=0)
    default_per_window: int = Field(default=300, ge=1)
    endpoints: dict[str, int] = Field(default_factory=dict)

    def limit_for(self, endpoint: str) -> int:
        return self.endpoints.get(endpoint, self.default_per_window)


class TiersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tiers: dict[str, TierConfig]
    rate_limits: RateLimitConfig = Field(default_factory=RateLimitConfig)
    metered: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> TiersConfig:
        if "free" not in self.tiers:
            raise ValueError("a 'free' tier is required: new tenants start on it")
        bad = {k: v for k, v in self.metered.items() if v not in QUOTA_CATEGORIES}
        if bad:
            raise ValueError(f"metered maps to unknown categories {bad}")
        return self

    def quota(self, tier: str, category: str) -> int | None:
        """The monthly limit, or None for unlimited. An unknown tier gets the free tier's."""
        config = self.tiers.get(tier) or self.tiers["free"]
        return config.quotas.get(category)

    def work_limits(self, tier: str) -> WorkLimits:
        """The tier's limits on the size of work; an unknown tier gets the free tier's."""
        return (self.tiers.get(tier) or self.tiers["free"]).limits


def load_tiers(path: Path) -> TiersConfig:
    """Read and validate the tiers file.

    Raises:
        ConfigurationError: naming the file, field and reason.
    """
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{path}: cannot read tiers file: {exc}") from exc
    try:
        return TiersConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise ConfigurationError(f"{path}: field {field}: {first['msg']}") from exc
