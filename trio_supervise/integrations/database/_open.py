"""``open_database``: the database a target names, open."""

from __future__ import annotations

import logging
import os

from ._base import Database
from ._dsn import parse_target
from ._postgres import open_postgres
from ._sqlite import open_sqlite

logger = logging.getLogger("trio_supervise.database")


async def open_database(target: str | os.PathLike[str]) -> Database:
    """Open the database ``target`` names.

    Args:
      target: a SQLite file path (``"data/app.db"``, created when missing), a SQLite URL
        (``"sqlite:///relative/app.db"``, ``"sqlite:////absolute/app.db"``), ``":memory:"``
        (or ``"sqlite://"``), or a PostgreSQL DSN ``"postgresql://user:password@host/db"``
        (``postgres://`` too; libpq's query parameters such as ``?connect_timeout=5`` work).

    Returns:
      A ``SQLiteDatabase`` or a ``PostgresDatabase``, open; close it with ``aclose()``.

    Raises:
      TypeError, ValueError: ``target`` is none of the accepted forms.
      DatabaseUnavailable: the PostgreSQL server cannot be reached or refuses the
        connection (its words are in the message), or another process holds the SQLite
        file locked for longer than ``SQLITE_BUSY_TIMEOUT``.
      DatabaseError: the SQLite file cannot be opened (missing directory, not a database).
      ImportError: a PostgreSQL DSN without psycopg installed.

    Cancellation:
      Opening is cancellable; a connection made after the cancellation is closed.
    """
    kind, location = parse_target(target)
    db: Database = await (open_sqlite(location) if kind == "sqlite" else open_postgres(location))
    logger.info("opened %s database %s", db.kind, db.target)
    return db
