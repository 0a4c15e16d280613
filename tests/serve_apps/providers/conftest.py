"""Fixtures of the provider tests. They use the session platform, which runs with the test
catalogue (tests/serve_apps/providers/catalogue.py: the real providers without keys plus fake
providers pointed at the session's fake provider server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Platform
from tests.serve_apps.providers.catalogue import (  # noqa: F401 - re-exported to the tests
    BUDGET_USD,
    FAKE_ANTHROPIC_KEY,
    FAKE_OPENAI_KEY,
    REAL_KEY_VARIABLES,
)
from tests.serve_apps.providers.fake_provider import FakeProvider


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    """A fake provider server of the module's own, for tests that build a router in process."""
    server = FakeProvider().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ai_platform(platform: Platform) -> Platform:
    """The session platform: it runs with the test catalogue (tests/conftest.py)."""
    return platform


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
