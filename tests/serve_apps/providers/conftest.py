"""Fixtures of the provider tests: the fake provider server, and a platform of their own whose
catalogue is the real one plus fake providers pointed at that server.

Keys reach Serve replicas only through the environment Ray starts with, so this platform is
started (on its own ports and home) after the fake server, with fake keys set; the five real
providers stay without keys, as on a fresh machine.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import MLAAS, REPO, Platform, _free_port_block, platform_env
from tests.serve_apps.providers.fake_provider import FakeProvider

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
    catalogue["guardrails"]["max_input_chars"] = 20_000
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


@pytest.fixture(scope="session")
def fake_provider() -> Iterator[FakeProvider]:
    fake = FakeProvider().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def ai_platform(
    tmp_path_factory: pytest.TempPathFactory, fake_provider: FakeProvider
) -> Iterator[Platform]:
    """`mlaas up` with the test catalogue and fake keys; `mlaas down` at the end."""
    home = tmp_path_factory.mktemp("mlaas-ai-home")
    catalogue_file = home / "providers.yaml"
    catalogue_file.write_text(yaml.safe_dump(build_test_catalogue(fake_provider)))
    base = _free_port_block(5)
    env = platform_env(home)
    for variable in REAL_KEY_VARIABLES:
        env.pop(variable, None)
    env.update(
        MLAAS_PORT=str(base),
        MLAAS_RAY_PORT=str(base + 1),
        MLAAS_DASHBOARD_PORT=str(base + 4),
        MLAAS_PROVIDERS_FILE=str(catalogue_file),
        FAKE_OPENAI_API_KEY=FAKE_OPENAI_KEY,
        FAKE_ANTHROPIC_API_KEY=FAKE_ANTHROPIC_KEY,
    )
    up = subprocess.run([MLAAS, "up"], env=env, capture_output=True, text=True, timeout=600)
    if up.returncode != 0:
        subprocess.run([MLAAS, "down"], env=env, capture_output=True, timeout=300)
        pytest.fail(f"mlaas up failed:\n{up.stdout}\n{up.stderr}")
    admin_key = (home / "admin_key").read_text().strip()
    try:
        yield Platform(home=home, url=f"http://127.0.0.1:{base}", admin_key=admin_key, env=env)
    finally:
        subprocess.run([MLAAS, "down"], env=env, capture_output=True, timeout=300)


@pytest.fixture
def tenant_key(ai_platform: Platform) -> str:
    """A fresh free-tier tenant's key (own rate limits, usage and cache)."""
    return ai_platform.new_tenant()[1]


def read_ray_logs(platform: Platform) -> str:
    """Every log file of the platform's Ray session, as one text."""
    texts = []
    for path in Path(platform.ray_logs).rglob("*"):
        if path.is_file() and path.suffix in (".log", ".out", ".err", ""):
            try:
                texts.append(path.read_text(errors="replace"))
            except OSError:
                continue
    return "\n".join(texts)
