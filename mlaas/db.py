"""Database: SQLAlchemy 2 models, engine per URL, sessions, and Alembic migrations."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    create_engine,
    event,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import NullPool

from mlaas.errors import SchemaOutOfDateError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# pg_advisory_lock key held while migrating ("mlaas" in ASCII): one migrator at a time.
MIGRATION_LOCK_KEY = 0x6D6C616173
# Every module that declares tables on Base; their migrations all live in MIGRATIONS_DIR.
TABLE_MODULES = (
    "mlaas.registry",
    "mlaas.training_jobs",
    "mlaas.batch_jobs",
    "mlaas.rewards",
    "mlaas.batch_jobs",
    "federated._store",
    "knowledge._tables",
)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    tier: Mapped[str] = mapped_column(String(40), default="free")
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(128))
    scopes: Mapped[str] = mapped_column(String(200), default="tenant")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # A participant key (scope federated): its pools, comma-separated, and whether the nodes it
    # registers are approved at once (migration 0008).
    pools: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    approves_nodes: Mapped[bool | None] = mapped_column(Boolean, nullable=True)


class AuditEvent(Base):
    """One administrative or key action, done or refused (mlaas.audit writes and reads them).

    No foreign keys: the record of an action outlives the tenant and key it names.
    """

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    actor_tenant_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    actor_key_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    credential: Mapped[str] = mapped_column(String(10))  # key, token, or host (an operator)
    action: Mapped[str] = mapped_column(String(60), index=True)
    target: Mapped[str | None] = mapped_column(String(200), nullable=True)
    target_tenant_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    outcome: Mapped[str] = mapped_column(String(10))  # ok, refused, or failed
    status: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str | None] = mapped_column(String(140), nullable=True)
    detail: Mapped[str | None] = mapped_column(String(500), nullable=True)


class UsageEvent(Base):
    """Metered usage, written in batches: one row per tenant, endpoint and category per flush."""

    __tablename__ = "usage_events"
    __table_args__ = (Index("ix_usage_tenant_period_category", "tenant_id", "period", "category"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    endpoint: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(60))
    quantity: Mapped[int] = mapped_column(Integer)
    period: Mapped[str] = mapped_column(String(7))  # YYYY-MM, the quota month
    recorded_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the CLI, gateway replicas and actors read while one writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def get_engine(url: str) -> Engine:
    """One engine per URL per process; a server database's pool is sized by the settings
    ``MLAAS_DB_POOL_SIZE``, ``MLAAS_DB_MAX_OVERFLOW`` and ``MLAAS_DB_POOL_TIMEOUT_S``."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                engine = create_engine(
                    url, connect_args={"check_same_thread": False, "timeout": 10}
                )
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                from mlaas.settings import get_settings

                settings = get_settings()
                engine = create_engine(
                    url,
                    pool_pre_ping=True,
                    pool_size=settings.db_pool_size,
                    max_overflow=settings.db_max_overflow,
                    pool_timeout=settings.db_pool_timeout_s,
                )
            _engines[url] = engine
        return engine


def dispose_engine(url: str) -> None:
    """Close this process's connections to ``url`` and forget its engine (a dropped database)."""
    with _engines_lock:
        engine = _engines.pop(url, None)
        _session_factories.pop(url, None)
    if engine is not None:
        engine.dispose()


_session_factories: dict[str, sessionmaker[Session]] = {}


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error: no half-written rows."""
    factory = _session_factories.get(url)
    if factory is None:
        factory = sessionmaker(get_engine(url), expire_on_commit=False)
        _session_factories[url] = factory
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def hold_row(session: Session, entity: Any, row_id: str, column: Any) -> None:
    """Hold row ``row_id`` of ``entity`` until the transaction ends, so that the writers that
    hold it go one at a time (read, check, write).

    PostgreSQL takes the row lock (``FOR UPDATE``). SQLite ignores ``FOR UPDATE``: a first
    write (``column``, any column of the row, set to itself) takes its database write lock.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(
            update(entity).where(entity.id == row_id).values({column: column})
            .execution_options(synchronize_session=False)
        )
    else:
        session.execute(select(entity.id).where(entity.id == row_id).with_for_update())


def hold_tenant(session: Session, tenant_id: str) -> None:
    """:func:`hold_row` of the tenant: its count limits are checked and written one at a time."""
    hold_row(session, Tenant, tenant_id, Tenant.tier)


def load_all_tables() -> None:
    """Put every package's tables on ``Base.metadata`` (for migrations and schema checks).

    A table module of another package is loaded without its package's ``__init__``, which
    pulls optional extras (FAISS, ...) that a migrator does not need and may not have.
    """
    import importlib
    import importlib.util
    import sys

    for name in TABLE_MODULES:
        package = name.partition(".")[0]
        if name in sys.modules:
            continue
        if package == "mlaas" or package in sys.modules:
            importlib.import_module(name)
            continue
        package_spec = importlib.util.find_spec(package)  # locates, does not import
        if package_spec is None or not package_spec.submodule_search_locations:
            raise ImportError(f"package {package} is missing: its tables cannot be migrated")
        folder = Path(list(package_spec.submodule_search_locations)[0])
        spec = importlib.util.spec_from_file_location(name, folder / f"{name.split('.')[1]}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        # Under its real name: a later `import <package>` reuses it (no table defined twice).
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise


def _alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@lru_cache(maxsize=1)
def head_revisions() -> tuple[str, ...]:
    """The newest migration of every branch this code ships (what ``migrate`` brings a
    database to)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config("sqlite://"))
    return tuple(sorted(script.get_heads()))


def migrate(url: str) -> tuple[str, ...]:
    """Bring the schema to the newest migration of every branch (packages branch from 0003).

    Only one migrator runs at a time: on PostgreSQL under an advisory lock, on SQLite under a
    file lock beside the database; a second one waits, then finds nothing left to do.

    Returns:
        The revisions the database is at afterwards.
    """
    from alembic import command

    config = _alembic_config(url)
    with _migration_lock(url) as connection:
        config.attributes["connection"] = connection  # env.py migrates on this connection
        command.upgrade(config, "heads")
    return current_revisions(url)


@contextmanager
def _migration_lock(url: str) -> Iterator[Connection]:
    """A connection of its own, holding the database's migration lock."""
    sqlite_path = _sqlite_path(url)
    if sqlite_path is not None:
        sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                # Session-level: it outlives the migration transactions, until unlocked.
                connection.execute(
                    text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
                connection.commit()
                try:
                    yield connection
                finally:
                    connection.rollback()
                    connection.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
                    )
                    connection.commit()
            elif sqlite_path is not None:
                with _file_lock(sqlite_path.with_name(sqlite_path.name + ".migrate-lock")):
                    yield connection
            else:
                yield connection
    finally:
        engine.dispose()


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def current_revisions(url: str) -> tuple[str, ...]:
    """The applied head of each migration branch."""
    from alembic.runtime.migration import MigrationContext

    with get_engine(url).connect() as connection:
        return tuple(sorted(MigrationContext.configure(connection).get_current_heads()))


def require_current_schema(url: str) -> None:
    """Refuse to work on a database whose schema is not the one this code expects.

    Processes other than the migrator (training jobs, replicas, ``hub import``) call this
    instead of migrating, so that a schema change never runs concurrently from many places.

    Raises:
        SchemaOutOfDateError: the database is unmigrated, behind, or ahead of this code.
    """
    expected = head_revisions()
    sqlite_path = _sqlite_path(url)
    if sqlite_path is not None and not sqlite_path.exists():
        current: tuple[str, ...] = ()  # not even created: do not make an empty file
    else:
        current = current_revisions(url)
    if set(current) == set(expected):
        return
    shown = make_url(url).render_as_string(hide_password=True)
    if not current:
        message = f"The database {shown} has no schema yet: run `mlaas migrate` first"
    else:
        message = (
            f"The database {shown} is at revision(s) {', '.join(current)} but this code "
            f"expects {', '.join(expected)}: run `mlaas migrate` (or, if the database is "
            "newer, upgrade this code)"
        )
    raise SchemaOutOfDateError(
        message, details={"current": list(current), "expected": list(expected)}
    )


def shareable_database_url(url: str) -> str | None:
    """The URL when it carries no password (so it may go into a visible Serve config, a task's
    or an actor's arguments); None tells the receiver to read it from its node's environment."""
    from sqlalchemy.engine import make_url

    return None if make_url(url).password else url


def node_database_url(shared: str | None) -> str:
    """The URL a task or actor was given, or (None: it carries a password) the one of this
    node's environment, as every platform process reads it."""
    from mlaas.settings import Settings

    return shared or Settings().resolved_database_url
