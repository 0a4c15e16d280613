"""Alembic environment: runs migrations on the URL the caller put in the config."""

from alembic import context
from sqlalchemy import create_engine, pool

import mlaas.registry  # noqa: F401 - registers its tables on Base.metadata
import mlaas.training_jobs  # noqa: F401
from mlaas.db import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")


def run_migrations_online() -> None:
    connectable = create_engine(url, poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
