"""Tiers, quotas and rate limits, read from ``configs/tiers.yaml`` and validated."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlaas.errors import ConfigurationError

QUOTA_CATEGORIES = ("training_jobs", "inference_requests")


class TierConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quotas: dict[str, int | None] = Field(default_factory=dict)

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
