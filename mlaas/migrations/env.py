"""Alembic environment: runs migrations on the URL (or the open connection) the caller gave.

The target metadata is every table of every package (``mlaas.db.TABLE_MODULES``), so that
``alembic check`` and autogenerate compare the whole schema.
"""

from alembic import context
from sqlalchemy import create_engine, pool

from mlaas.db import Base, load_all_tables

load_all_tables()
config = context.config
url = config.get_main_option("sqlalchemy.url") or ""


def _configure(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_server_default=True,
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # mlaas.db.migrate: its connection holds the migration lock
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()
        return
    connectable = create_engine(url, poolclass=pool.NullPool)
    with connectable.connect() as connection:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
