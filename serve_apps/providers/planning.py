"""Which provider models may serve a request, in which order: the fallback chain.

Resolves ``model`` (a route alias, ``provider/model``, or a bare model name) or a capability
to candidates, keeps those whose provider is configured and whose context window fits, and
orders them by the route's policy. Nothing here calls a provider.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from serve_apps.providers.catalogue import Capability, Catalogue
from serve_apps.providers.errors import MissingApiKeyError, RequestValidationError
from serve_apps.providers.policies import POLICIES, Candidate

CHARS_PER_TOKEN = 4  # a conservative estimate for English text; providers count exactly


@dataclass(frozen=True)
class RoutePlan:
    """Candidates in the order to try them; ``dropped_for_context`` were too small."""

    capability: Capability
    candidates: tuple[Candidate, ...]
    policy: str
    dropped_for_context: tuple[str, ...] = ()
    prefer: str | None = None  # a provider tried first, whatever the policy


def estimate_tokens(prompt_chars: int, max_output_tokens: int) -> int:
    return prompt_chars // CHARS_PER_TOKEN + 1 + max_output_tokens


class RoutePlanner:
    """Turns a request's ``model`` or capability into a :class:`RoutePlan`."""

    def __init__(self, catalogue: Catalogue, env: Mapping[str, str]) -> None:
        self.catalogue = catalogue
        self.env = env

    def candidate(self, model_id: str, position: int) -> Candidate:
        provider, _, model = model_id.partition("/")
        spec = self.catalogue.providers[provider]
        return Candidate(
            model_id=model_id,
            provider=provider,
            model=model,
            spec=spec.models[model],
            priority=spec.priority,
            weight=spec.weight,
            position=position,
        )

    def _model_id(self, name: str) -> str:
        models = self.catalogue.models()
        if name in models:
            return name
        matches = [m for m in models if m.partition("/")[2] == name]
        if len(matches) == 1:
            return matches[0]
        raise RequestValidationError(
            f"Unknown model {name!r}: use a route alias or provider/model from the catalogue",
            details={
                "field": "model",
                "received": name,
                "expected": sorted(self.catalogue.routes) + sorted(models),
            },
        )

    def _chain(self, model_id: str) -> list[str]:
        """The model and its fallbacks, recursively, each once, in the order written."""
        chain, pending = [], [model_id]
        while pending:
            current = pending.pop(0)
            if current not in chain:
                chain.append(current)
                pending.extend(self.catalogue.models()[current].fallbacks)
        return chain

    def _configured(self, model_ids: list[str], capability: Capability, what: str) -> list[str]:
        usable = [
            m for m in model_ids if self.catalogue.is_configured(m.partition("/")[0], self.env)
        ]
        if usable:
            return usable
        variables = sorted(
            {self.catalogue.providers[m.partition("/")[0]].api_key_env or "" for m in model_ids}
            - {""}
        )
        raise MissingApiKeyError(
            f"No configured provider can serve {what}; set one of {', '.join(variables)} "
            "and restart the platform",
            details={"capability": capability, "env_vars": variables},
        )

    def plan_model(self, name: str, prompt_chars: int, max_output_tokens: int) -> RoutePlan:
        """The plan of a chat request's ``model``: an alias's models by its policy, or one model
        followed by its fallback chain as written."""
        route = self.catalogue.routes.get(name)
        policy: str
        capability: Capability
        if route is not None:
            capability, policy = route.capability, route.policy or self.catalogue.routing.policy
            model_ids = self._configured(list(route.models), capability, f"route {name!r}")
        else:
            model_id = self._model_id(name)
            capability, policy = "chat", "chain"
            model_ids = self._configured(self._chain(model_id), capability, f"model {model_id!r}")
        return self._fit(capability, policy, model_ids, prompt_chars, max_output_tokens)

    def plan_capability(self, capability: Capability, prefer: str | None = None) -> RoutePlan:
        """Every configured model with ``capability``, by the default policy; ``prefer`` (a
        provider) goes first when it has the capability."""
        model_ids = [
            m for m in self.catalogue.model_ids() if capability in self.catalogue.capabilities_of(m)
        ]
        if not model_ids:
            raise MissingApiKeyError(
                f"No provider in the catalogue has the capability {capability!r}",
                details={"capability": capability, "env_vars": []},
            )
        model_ids = self._configured(model_ids, capability, f"capability {capability!r}")
        plan = self._fit(capability, self.catalogue.routing.policy, model_ids, 0, 0)
        return RoutePlan(capability, plan.candidates, plan.policy, prefer=prefer)

    def _fit(
        self,
        capability: Capability,
        policy: str,
        model_ids: list[str],
        prompt_chars: int,
        max_output_tokens: int,
    ) -> RoutePlan:
        needed = estimate_tokens(prompt_chars, max_output_tokens) if prompt_chars else 0
        candidates = [self.candidate(m, i) for i, m in enumerate(model_ids)]
        fitting = [c for c in candidates if c.spec.context_window >= needed]
        if not fitting:
            largest = max(c.spec.context_window for c in candidates)
            raise RequestValidationError(
                f"The request needs about {needed} tokens, more than the largest context window "
                f"({largest}) of the candidate models; shorten the messages or max_tokens",
                details={
                    "field": "messages",
                    "estimated_tokens": needed,
                    "largest_context_window": largest,
                },
            )
        dropped = tuple(c.model_id for c in candidates if c not in fitting)
        return RoutePlan(capability, tuple(fitting), policy, dropped)

    def order(
        self, plan: RoutePlan, latency_ms: Mapping[str, float], rng: random.Random
    ) -> list[Candidate]:
        """The plan's candidates in policy order (a chain keeps its written order)."""
        if plan.policy == "chain":
            ordered = list(plan.candidates)
        else:
            ordered = POLICIES[plan.policy].order(plan.candidates, latency_ms, rng)
        if plan.prefer:
            ordered.sort(key=lambda c: c.provider != plan.prefer)  # stable: the rest keep order
        return ordered
