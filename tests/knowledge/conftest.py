"""Fixtures of the knowledge tests: one real MiniLM encoder per session, a fresh database and
home per test, and a small corpus of labelled documents."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from knowledge import KnowledgePool, PhraseEncoder
from mlaas.db import Tenant, session_scope


@pytest.fixture(scope="session")
def encoder() -> PhraseEncoder:
    return PhraseEncoder()


@pytest.fixture()
def database_url(database_url: str) -> str:
    """The shared fresh database (SQLite, then PostgreSQL) with two tenants."""
    url = database_url
    with session_scope(url) as session:
        session.add_all([Tenant(id="t_a", name="a"), Tenant(id="t_b", name="b")])
    return url


@pytest.fixture()
def pool(database_url: str, tmp_path: Path, encoder: PhraseEncoder) -> Iterator[KnowledgePool]:
    knowledge = KnowledgePool(database_url=database_url, home=tmp_path, encoder=encoder)
    yield knowledge
    knowledge.forget()
