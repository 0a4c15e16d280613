"""The provider catalogue of the test platform: configs/providers.yaml plus fake providers
pointed at the fake provider server (tests/serve_apps/providers/fake_provider.py), with fast
retries and breakers and a small pro-tier budget. The five real providers stay without keys,
as on a fresh machine. The session platform (tests/conftest.py) is started with it."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import yaml

from tests.serve_apps.providers.fake_provider import FakeProvider

REPO = Path(__file__).resolve().parents[3]

REAL_KEY_VARIABLES = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "PERPLEXITY_API_KEY",
    "GEMINI_API_KEY",
    "XAI_API_KEY",
)
FAKE_OPENAI_KEY = "sk-fakeopenai-" + secrets.token_hex(16)
FAKE_ANTHROPIC_KEY = "sk-ant-fake-" + secrets.token_hex(16)
BUDGET_USD = 0.00005  # the pro tier's budget in the test catalogue: 50 micro-USD


def _model(
    price_in: float, price_out: float, window: int = 100_000, **extra: Any
) -> dict[str, Any]:
    return {
        "input_per_mtok": price_in,
        "output_per_mtok": price_out,
        "context_window": window,
        **extra,
    }


def build_test_catalogue(fake: FakeProvider) -> dict[str, Any]:
    """configs/providers.yaml with fast retries and breakers, a pro budget, fake providers."""
    catalogue = yaml.safe_load((REPO / "configs" / "providers.yaml").read_text())
    catalogue["routing"].update(
        deadline_s=8,
        retry={"max_attempts": 3, "base_delay_s": 0.05, "max_delay_s": 0.2, "max_retry_after_s": 5},
        circuit_breaker={"failure_threshold": 3, "cooldown_s": 2},
    )
    # as much as the test platform's 64 KiB request bodies carry: the scan is tested near it
    catalogue["guardrails"]["max_input_chars"] = 60_000
    catalogue["budgets_usd"] = {"free": None, "pro": BUDGET_USD, "enterprise": None}
    openai_like = {
        "kind": "openai",
        "base_url": fake.openai_base_url,
        "api_key_env": "FAKE_OPENAI_API_KEY",
        "timeout_s": 1.5,
    }
    catalogue["providers"].update(
        {
            "fake-openai": {
                **openai_like,
                "priority": 5,
                "capabilities": ["chat"],
                "models": {
                    "gpt-fake": _model(1, 2),
                    "gpt-small": _model(1, 2, window=64),
                    "gpt-ctx": _model(1, 2, fallbacks=["fake-anthropic/claude-fake"]),
                    "gpt-fallback": _model(1, 2, fallbacks=["fake-anthropic/claude-fake"]),
                    "gpt-retry": _model(1, 2),
                    "gpt-slow": _model(1, 2),
                    "gpt-cache": _model(1, 2),
                    "gpt-stream": _model(1, 2),
                    "gpt-budget": _model(1, 2),
                    "gpt-usage": _model(1, 2),
                    "gpt-pii": _model(1, 2),
                    "gpt-down": _model(1, 2),
                    "gpt-keyleak": _model(1, 2),
                    "gpt-knowledge": _model(1, 2),  # the knowledge pool's generated answers
                },
            },
            "fake-anthropic": {
                "kind": "anthropic",
                "base_url": fake.anthropic_base_url,
                "priority": 4,
                "api_key_env": "FAKE_ANTHROPIC_API_KEY",
                "timeout_s": 1.5,
                "capabilities": ["chat"],
                "models": {
                    "claude-fake": _model(3, 15),
                    "claude-stream": _model(3, 15),
                    "claude-down": _model(3, 15),
                },
            },
            "fake-patient": {  # waits longer than the others: a request stays in flight
                **openai_like,
                "priority": 6,
                "timeout_s": 10,
                "capabilities": ["chat"],
                "models": {"gpt-flood": _model(1, 2)},
            },
            "fake-flaky": {
                **openai_like,
                "capabilities": ["chat"],
                "models": {"gpt-flaky": _model(1, 2)},
            },
            "fake-analyst": {
                **openai_like,
                "priority": 2000,
                "capabilities": ["analysis", "synthetic_data"],
                "models": {"analyst-fake": _model(1, 2)},
            },
        }
    )
    catalogue["routes"].update(
        {
            "test-priority": {"models": ["fake-openai/gpt-fake", "fake-anthropic/claude-fake"]},
            "test-cheapest": {
                "policy": "cheapest",
                "models": ["fake-anthropic/claude-fake", "fake-openai/gpt-fake"],
            },
            "test-long": {
                "models": ["fake-openai/gpt-small", "fake-anthropic/claude-fake"],
                "policy": "cheapest",
            },
            "test-all-down": {"models": ["fake-openai/gpt-down", "fake-anthropic/claude-down"]},
        }
    )
    return catalogue


def provider_env(home: Path, fake: FakeProvider, base_env: dict[str, str]) -> dict[str, str]:
    """``base_env`` with the test catalogue (written into ``home``) and the fake providers'
    keys, and without any real provider's key."""
    catalogue_file = home / "providers.yaml"
    catalogue_file.write_text(yaml.safe_dump(build_test_catalogue(fake)))
    env = {k: v for k, v in base_env.items() if k not in REAL_KEY_VARIABLES}
    env.update(
        MLAAS_PROVIDERS_FILE=str(catalogue_file),
        FAKE_OPENAI_API_KEY=FAKE_OPENAI_KEY,
        FAKE_ANTHROPIC_API_KEY=FAKE_ANTHROPIC_KEY,
    )
    return env
