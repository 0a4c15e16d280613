"""Cost from catalogue prices, and how AI usage is named in the platform's usage ledger.

Kept free of SDK imports: the gateway reads usage with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from serve_apps.providers.catalogue import ModelSpec

MICRO = 1_000_000
# Usage categories in ``usage_events``: "<measure>:<provider>".
AI_MEASURES = ("ai_requests", "ai_tokens_in", "ai_tokens_out", "ai_cost_microusd")
AI_COST = "ai_cost_microusd"


def cost_microusd(spec: ModelSpec, tokens_in: int, tokens_out: int) -> int:
    """Cost in millionths of a USD, rounded up so that no call is ever free by rounding."""
    # Prices are USD per million tokens, so tokens times price is micro-USD; the inner round
    # drops float noise (0.15 * 1000 = 150.00000000000003) before rounding up.
    micro = round(tokens_in * spec.input_per_mtok + tokens_out * spec.output_per_mtok, 6)
    return math.ceil(micro)


def usage_categories(provider: str, tokens_in: int, tokens_out: int, cost: int) -> dict[str, int]:
    """The usage rows of one call, by category."""
    return {
        f"ai_requests:{provider}": 1,
        f"ai_tokens_in:{provider}": tokens_in,
        f"ai_tokens_out:{provider}": tokens_out,
        f"{AI_COST}:{provider}": cost,
    }


def is_ai_category(category: str) -> bool:
    return category.partition(":")[0] in AI_MEASURES


def ai_usage_report(rows: Iterable[tuple[str, int]]) -> dict[str, Any]:
    """Per provider requests, tokens and cost in USD, from ``(category, quantity)`` rows."""
    providers: dict[str, dict[str, Any]] = {}
    for category, quantity in rows:
        measure, _, provider = category.partition(":")
        if measure not in AI_MEASURES or not provider:
            continue
        entry = providers.setdefault(
            provider, {"requests": 0, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0}
        )
        name = {
            "ai_requests": "requests",
            "ai_tokens_in": "tokens_in",
            "ai_tokens_out": "tokens_out",
        }.get(measure)
        if name:
            entry[name] += int(quantity)
        else:
            entry["cost_usd"] = round(entry["cost_usd"] + int(quantity) / MICRO, 6)
    total = round(sum(p["cost_usd"] for p in providers.values()), 6)
    return {"providers": dict(sorted(providers.items())), "total_cost_usd": total}
