"""Alembic environment: runs on the connection handed over by ``pacs.index.db.upgrade``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

# Every module that declares tables on the one metadata, so autogenerate sees the whole schema.
import ai_plugins.packages.models  # noqa: F401
import ai_plugins.review.models  # noqa: F401
import ai_plugins.runner.models  # noqa: F401
import pacs.accounts.models  # noqa: F401
import pacs.corrections.models  # noqa: F401
import pacs.jobs  # noqa: F401
import pacs.nodes  # noqa: F401
import pacs.notify.models  # noqa: F401
import pacs.reports.models  # noqa: F401
import pacs.routing.models  # noqa: F401
import pacs.stability  # noqa: F401
import pacs.webhooks.models  # noqa: F401
import pacs.worklist.models  # noqa: F401
from pacs.index.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
