"""Alembic environment of the results-store database.

Run from code (:func:`resources.migrations.upgrade_database`): the caller passes its open
connection in ``config.attributes["connection"]`` and owns the transaction (Alembic neither
begins nor commits one). Without a connection (the ``alembic`` command line with
``-x url=...`` or ``sqlalchemy.url``), it opens the URL and runs each migration in a
transaction of its own. Offline (``--sql``) mode is not supported: the migrations inspect
the live schema (``0002`` adapts to a ``sweeps`` table that already exists).
"""

import os

import sqlalchemy as sa
from alembic import context

config = context.config


#: our own version table: the results store may share its PostgreSQL database with Dagster's
#: storage, whose schema migrations use Alembic's default ``alembic_version``
VERSION_TABLE = "cvn_alembic_version"


def _run(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=None, version_table=VERSION_TABLE)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("the results-store migrations run online only (they inspect the schema)")

given = config.attributes.get("connection")
if given is not None:
    _run(given)
else:
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("CVN_DATABASE_URL")
    )
    if not url:
        raise RuntimeError("no database: pass -x url=... or set CVN_DATABASE_URL")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()
