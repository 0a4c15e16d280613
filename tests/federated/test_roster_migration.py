"""Migrations 0006_federated_roster and 0008_key_pools on a database with a pool already:
the nodes that joined under the old rules are approved and chained on the roster in join
order, and the pool's model is reserved, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from federated import _store
from federated._roster import check_chain
from mlaas.db import MIGRATIONS_DIR, dispose_engine, get_engine, migrate
from tests.services.postgres import PostgresServer


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = "roster_" + os.urandom(4).hex()
    url = server.create_database(name)
    try:
        yield url
    finally:
        dispose_engine(url)
        server.drop_database(name)


def test_nodes_of_existing_pools_are_approved_in_join_order_and_their_model_reserved(
    empty_database_url: str,
) -> None:
    # Prepare: a pool with two nodes and its model, from before the two migrations
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", empty_database_url.replace("%", "%%"))
    command.upgrade(config, "0007_batch_jobs")
    command.upgrade(config, "0005_federated_scores")
    with get_engine(empty_database_url).begin() as connection:
        connection.execute(
            text(
                "INSERT INTO tenants (id, name, tier, is_admin, created_at) "
                "VALUES ('t1', 'acme', 'free', false, :now)"
            ),
            {"now": datetime(2026, 11, 30)},
        )
        connection.execute(
            text(
                "INSERT INTO models (id, tenant_id, name, task, created_at) "
                "VALUES ('m1', 't1', 'digits-fl', '', :now)"
            ),
            {"now": datetime(2026, 11, 30)},
        )
        connection.execute(
            text(
                "INSERT INTO fed_pools (id, tenant_id, name, spec, status, completed_rounds, "
                "global_version, created_at) VALUES ('pool_1', 't1', 'digits-fl', '{}', 'open', "
                "0, 1, :now)"
            ),
            {"now": datetime(2026, 11, 30)},
        )
        for node, minute in (("node_b", 2), ("node_a", 1)):
            connection.execute(
                text(
                    "INSERT INTO fed_nodes (id, pool_id, identity_key, api_key_id, label, "
                    "status, joined_at) VALUES (:id, 'pool_1', :key, '', '', 'active', :at)"
                ),
                {"id": node, "key": f"key-of-{node}", "at": datetime(2026, 11, 30, 0, minute)},
            )

    # Execute
    migrate(empty_database_url)

    # Assert
    entries = _store.roster_of(empty_database_url, "pool_1")
    assert [e["node_id"] for e in entries] == ["node_a", "node_b"]
    assert check_chain("pool_1", entries) == entries[-1]["hash"]
    assert all(n["approved"] for n in _store.list_nodes(empty_database_url, "pool_1"))
    with get_engine(empty_database_url).connect() as connection:
        reserved = connection.execute(text("SELECT reserved_by FROM models")).scalar()
    assert reserved == "pool_1"
