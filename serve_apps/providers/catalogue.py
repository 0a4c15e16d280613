"""The provider catalogue (``configs/providers.yaml``): providers, models, prices, routes.

Validated by pydantic at start; a bad file fails with the file, field and reason. A provider
whose key variable is unset is ``not_configured``, never an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlaas.errors import ConfigurationError
from mlaas.settings import REPO_ROOT

DEFAULT_CATALOGUE = REPO_ROOT / "configs" / "providers.yaml"

Capability = Literal[
    "synthetic_data",
    "reasoning",
    "analysis",
    "research",
    "code",
    "multimodal",
    "chat",
    "embeddings",
]
ProviderKind = Literal["openai", "anthropic", "openai_compatible", "local"]
PolicyName = Literal["priority", "cheapest", "fastest", "weighted"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """One model: prices in USD per million tokens, context window, optional overrides."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    context_window: int = Field(gt=0)
    capabilities: tuple[Capability, ...] | None = None
    fallbacks: tuple[str, ...] = ()


class ProviderSpec(_Strict):
    kind: ProviderKind
    base_url: str | None = None
    api_key_env: str | None = None
    priority: int = 100
    weight: float = Field(default=1.0, ge=0)
    timeout_s: float = Field(default=60.0, gt=0)
    default_max_tokens: int = Field(default=1024, gt=0)
    capabilities: tuple[Capability, ...]
    models: dict[str, ModelSpec]

    @model_validator(mode="after")
    def _key_rules(self) -> ProviderSpec:
        if self.kind == "local" and self.api_key_env:
            raise ValueError("the local provider takes no api_key_env")
        if self.kind != "local" and not self.api_key_env:
            raise ValueError(f"a {self.kind} provider needs api_key_env (the variable of its key)")
        if self.kind == "openai_compatible" and not self.base_url:
            raise ValueError("an openai_compatible provider needs base_url")
        if not self.models:
            raise ValueError("a provider needs at least one model")
        return self


class RetrySpec(_Strict):
    max_attempts: int = Field(default=3, ge=1, le=10)
    base_delay_s: float = Field(default=0.25, ge=0)
    max_delay_s: float = Field(default=8.0, ge=0)
    max_retry_after_s: float = Field(default=20.0, ge=0)


class BreakerSpec(_Strict):
    failure_threshold: int = Field(default=5, ge=1)
    cooldown_s: float = Field(default=30.0, gt=0)


class CacheSpec(_Strict):
    enabled: bool = True
    ttl_s: float = Field(default=300.0, gt=0)
    max_entries: int = Field(default=10_000, ge=1)


class RoutingSpec(_Strict):
    policy: PolicyName = "priority"
    deadline_s: float = Field(default=60.0, gt=0)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    circuit_breaker: BreakerSpec = Field(default_factory=BreakerSpec)
    cache: CacheSpec = Field(default_factory=CacheSpec)


class GuardrailSpec(_Strict):
    pii: Literal["redact", "block", "off"] = "redact"
    prompt_injection: Literal["block", "flag", "off"] = "block"
    max_input_chars: int = Field(default=200_000, ge=1)
    max_messages: int = Field(default=256, ge=1)
    max_output_tokens: int = Field(default=8192, ge=1)


class RouteSpec(_Strict):
    """A route alias usable as ``model``: candidate models and the policy that orders them."""

    capability: Capability = "chat"
    models: tuple[str, ...]
    policy: PolicyName | None = None


class Catalogue(_Strict):
    routing: RoutingSpec = Field(default_factory=RoutingSpec)
    guardrails: GuardrailSpec = Field(default_factory=GuardrailSpec)
    budgets_usd: dict[str, float | None] = Field(default_factory=dict)
    routes: dict[str, RouteSpec] = Field(default_factory=dict)
    providers: dict[str, ProviderSpec]

    @model_validator(mode="after")
    def _references_exist(self) -> Catalogue:
        known = set(self.model_ids())
        for name, route in self.routes.items():
            missing = [m for m in route.models if m not in known]
            if missing:
                raise ValueError(f"route {name!r} names unknown models {missing}")
        for model_id, spec in self.models().items():
            missing = [m for m in spec.fallbacks if m not in known]
            if missing:
                raise ValueError(f"model {model_id!r} falls back to unknown models {missing}")
        return self

    def model_ids(self) -> list[str]:
        return [f"{p}/{m}" for p, spec in self.providers.items() for m in spec.models]

    def models(self) -> dict[str, ModelSpec]:
        return {
            f"{p}/{m}": ms for p, spec in self.providers.items() for m, ms in spec.models.items()
        }

    def capabilities_of(self, model_id: str) -> tuple[Capability, ...]:
        provider, _, name = model_id.partition("/")
        spec = self.providers[provider]
        return spec.models[name].capabilities or spec.capabilities

    def is_configured(self, provider: str, env: Mapping[str, str] | None = None) -> bool:
        """Local is always configured; any other provider when its key variable is non-empty."""
        spec = self.providers[provider]
        if spec.kind == "local":
            return True
        return bool(
            (env if env is not None else os.environ).get(spec.api_key_env or "", "").strip()
        )

    def budget_usd(self, tier: str) -> float | None:
        return self.budgets_usd.get(tier)


def catalogue_path(explicit: str | Path | None = None) -> Path:
    """The catalogue file: an explicit path, else ``MLAAS_PROVIDERS_FILE``, else the default."""
    from mlaas.settings import Settings

    chosen = explicit or Settings().providers_file or DEFAULT_CATALOGUE
    return Path(chosen).expanduser()


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """Read and validate the catalogue.

    Raises:
        ConfigurationError: naming the file, field and reason.
    """
    resolved = catalogue_path(path)
    try:
        raw = yaml.safe_load(resolved.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{resolved}: cannot read the provider catalogue: {exc}") from exc
    try:
        return Catalogue.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise ConfigurationError(f"{resolved}: field {field}: {first['msg']}") from exc
