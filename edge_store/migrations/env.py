"""Alembic environment for the edge store, configured programmatically by ``edge_store.migrate``.

There is no ``alembic.ini``: ``edge_store.migrate`` builds the ``Config``, opens the connection
(with the store's SQLite pragmas), begins the transaction and takes the migration lock, then
hands the connection over in ``config.attributes["connection"]``. Running every revision inside
that one transaction makes an upgrade all-or-nothing on both databases (SQLite's DDL is
transactional once pysqlite stops managing transactions, see ``edge_store.engine``).

Offline mode (``alembic upgrade --sql``) renders SQL for the URL in ``sqlalchemy.url``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from edge_store.models import Base

config = context.config


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    given = config.attributes.get("connection")
    if not isinstance(given, Connection):
        raise RuntimeError("run migrations through edge_store.migrate, which passes a connection")
    run_online(given)
