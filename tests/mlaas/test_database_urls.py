"""A database URL with a password never travels in a task's or actor's arguments (they show in
Ray's state API); the receiver reads it from its node's environment instead."""

from __future__ import annotations

import pytest

from mlaas.db import node_database_url, shareable_database_url


def test_a_url_with_a_password_is_not_shared_and_one_without_is() -> None:
    assert shareable_database_url("postgresql+psycopg://u:s3cret@db:5432/m") is None
    assert shareable_database_url("sqlite:////tmp/x/mlaas.db") == "sqlite:////tmp/x/mlaas.db"
    assert shareable_database_url("postgresql+psycopg://u@db/m") == "postgresql+psycopg://u@db/m"


def test_the_receiver_reads_the_url_of_its_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLAAS_DATABASE_URL", "postgresql+psycopg://u:s3cret@db:5432/m")

    assert node_database_url(None) == "postgresql+psycopg://u:s3cret@db:5432/m"
    assert node_database_url("sqlite:////tmp/y.db") == "sqlite:////tmp/y.db"
