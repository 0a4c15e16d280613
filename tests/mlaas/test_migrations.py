"""Migrations: they build exactly the tables the code declares, `mlaas migrate` is the one
migrator (safe when two run at once), and every other process refuses a stale schema."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from mlaas.db import (
    MIGRATIONS_DIR,
    Base,
    current_revisions,
    dispose_engine,
    get_engine,
    head_revisions,
    load_all_tables,
    migrate,
    require_current_schema,
)
from mlaas.errors import SchemaOutOfDateError
from tests.conftest import MLAAS
from tests.services.postgres import PostgresServer


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = "empty_" + os.urandom(4).hex()
    url = server.create_database(name)
    try:
        yield url
    finally:
        dispose_engine(url)
        server.drop_database(name)


def test_migrations_build_exactly_the_declared_tables(database_url: str) -> None:
    load_all_tables()  # as the Alembic environment does

    with get_engine(database_url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_server_default": True})
        differences = compare_metadata(context, Base.metadata)

    assert differences == []


def test_the_registry_migration_keeps_only_the_newest_production_version(
    empty_database_url: str,
) -> None:
    # Prepare: a database from before 0006, where registering into production left two
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", empty_database_url.replace("%", "%%"))
    command.upgrade(config, "0003")
    now = datetime(2026, 11, 30)
    with get_engine(empty_database_url).begin() as connection:
        connection.execute(
            text("INSERT INTO tenants (id, name, tier, is_admin, created_at) "
                 "VALUES ('t1', 'acme', 'free', false, :now)"), {"now": now})
        connection.execute(
            text("INSERT INTO models (id, tenant_id, name, task, created_at) "
                 "VALUES ('m1', 't1', 'digits', '', :now)"), {"now": now})
        for number in (1, 2, 3):
            connection.execute(
                text("INSERT INTO model_versions (id, model_id, version, framework, "
                     "architecture, input_schema, output_schema, metrics, artifact_uri, stage, "
                     "created_at) VALUES (:id, 'm1', :number, 'pytorch', '{}', '{}', '{}', "
                     "'{}', 'file:///x', 'production', :now)"),
                {"id": f"mv_{number}", "number": number, "now": now},
            )

    # Execute
    migrate(empty_database_url)

    # Assert
    with get_engine(empty_database_url).connect() as connection:
        rows = connection.execute(text("SELECT version, stage FROM model_versions")).all()
    stages: dict[int, str] = {int(version): str(stage) for version, stage in rows}
    assert stages == {1: "staging", 2: "staging", 3: "production"}


def test_a_migrated_database_is_accepted(database_url: str) -> None:
    require_current_schema(database_url)

    assert set(current_revisions(database_url)) == set(head_revisions())


def test_an_unmigrated_database_is_refused_with_the_command_to_run(
    empty_database_url: str,
) -> None:
    with pytest.raises(SchemaOutOfDateError, match="has no schema yet: run `mlaas migrate`") as e:
        require_current_schema(empty_database_url)

    assert e.value.status_code == 503 and e.value.code == "SCHEMA_OUT_OF_DATE"
    assert e.value.details["current"] == []
    if empty_database_url.startswith("sqlite"):
        assert not Path(empty_database_url.removeprefix("sqlite:///")).exists(), "nothing made"


def test_a_database_behind_the_code_is_refused_and_the_password_is_not_shown(
    database_url: str,
) -> None:
    with get_engine(database_url).begin() as connection:
        connection.execute(
            text("UPDATE alembic_version SET version_num = '0003' "
                 "WHERE version_num = '0009_audit_log'")
        )

    with pytest.raises(SchemaOutOfDateError, match="run `mlaas migrate`") as e:
        require_current_schema(database_url)

    assert "0003" in e.value.message and "0009_audit_log" in e.value.message
    password = get_engine(database_url).url.password
    assert password is None or password not in e.value.message


def test_two_migrators_at_once_leave_one_migrated_schema(empty_database_url: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate(empty_database_url)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    require_current_schema(empty_database_url)


def test_mlaas_migrate_migrates_and_prints_the_revisions(
    empty_database_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLAAS_")}
    env.update(MLAAS_HOME=str(tmp_path / "home"), MLAAS_DATABASE_URL=empty_database_url)

    first = subprocess.run([MLAAS, "migrate"], env=env, capture_output=True, text=True,
                           timeout=120)
    again = subprocess.run([MLAAS, "migrate"], env=env, capture_output=True, text=True,
                           timeout=120)

    assert first.returncode == 0, first.stderr
    assert all(revision in first.stdout for revision in head_revisions()), first.stdout
    assert again.returncode == 0, again.stderr
    password = get_engine(empty_database_url).url.password
    assert password is None or password not in first.stdout + first.stderr
    require_current_schema(empty_database_url)
