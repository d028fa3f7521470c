"""Databases for supervised services: SQLite by default, PostgreSQL by DSN.

``await open_database(target)`` returns a ``Database``: a ``SQLiteDatabase`` for a file path,
``sqlite:///path`` or ``:memory:`` (the standard ``sqlite3`` module, no extra needed), or a
``PostgresDatabase`` for a ``postgresql://`` DSN (psycopg 3, extra ``postgres``). Both speak
the same small API and run the blocking driver in Trio worker threads; writes run one at a
time on one connection (a ``trio.Lock``)::

    db = await open_database("notes.db")
    await db.migrate([f"CREATE TABLE notes (id {db.auto_id}, text TEXT NOT NULL)"])
    async with supervisor_tree(spec, hooks=db.shutdown_hooks()) as tree:
        note_id = await db.insert("INSERT INTO notes (text) VALUES (?)", ("hello",))
        rows = await db.execute("SELECT text FROM notes WHERE id = ?", (note_id,))

Durability:
  Every call is committed when it returns (autocommit), so a write your service has
  acknowledged is in the database. SQLite runs in WAL mode with ``synchronous=FULL``: each
  commit is fsynced, so it survives a crash of the process and of the machine (``NORMAL``
  would only survive the process). ``async with db.transaction() as tx:`` groups statements
  into one commit.

Queries and writes:
  On a SQLite file, queries (``execute()`` of a ``SELECT``, ``WITH`` or ``VALUES``) run on
  read-only connections beside the write connection, so they never wait for a write, not
  even one that waits for another process's lock. PostgreSQL has the one connection.

Availability:
  A database that cannot be reached now raises ``DatabaseUnavailable`` (a PostgreSQL server
  down, restarting or refusing the connection, a connection lost; a SQLite file locked by
  another process for longer than ``SQLITE_BUSY_TIMEOUT``), with a ``reason`` fit to show a
  client: answer 503 with it. ``db.availability`` says whether the last calls could use it,
  for a readiness probe; ``db.ping()`` checks now, and ``db.monitor()`` pings every few
  seconds so that ``availability`` follows an outage and its end without traffic. A lost
  PostgreSQL connection is reopened by the next call.

Shutdown:
  ``db.shutdown_hooks()`` returns two hooks: ``"database: flush"`` in band ``FLUSH``
  (SQLite: a WAL checkpoint that folds the log into the main file; PostgreSQL: nothing to
  do, the server owns durability) and ``"database: close"`` in band ``CLOSE``. The tree's
  children are stopped in band ``DRAIN`` before both, so nothing writes any more when the
  database is flushed and closed. Another hook that writes to the database belongs in band
  ``FLUSH`` or earlier.

Placeholders:
  Write ``?`` for parameters on both databases: ``execute("... WHERE id = ?", (7,))``. For
  PostgreSQL each ``?`` outside string literals, quoted identifiers, dollar-quoted strings
  and comments becomes psycopg's ``%s`` (and a literal ``%`` is escaped), so PostgreSQL's
  jsonb operators ``?``, ``?|`` and ``?&`` cannot be written; use ``jsonb_exists()``,
  ``jsonb_exists_any()`` and ``jsonb_exists_all()`` instead.

Cancellation:
  A call cancelled while its statement runs stops the statement, not just the wait: SQLite's
  ``Connection.interrupt()`` or psycopg's ``Connection.cancel_safe()`` is sent from a
  shielded scope (repeatedly, in case the statement had not started yet), and the call
  waits for its worker thread to end before ``Cancelled`` propagates, so the connection is
  idle and usable by the next call and no thread is left behind. A SQLite call waiting for
  another process's lock stops waiting within a tenth of a second. A cancelled write may or
  may not have been committed. A worker still running ``CANCEL_GRACE`` seconds after the
  first interrupt is abandoned and the database refuses further calls.

Errors:
  Errors of the SQL itself are the driver's (``sqlite3.Error``, ``psycopg.Error``) and
  propagate unchanged. ``DatabaseUnavailable`` is raised when the database cannot be
  reached now; ``DatabaseError`` (its base) when a database cannot be opened or a call is
  misused; ``DatabaseClosedError`` for any call after ``aclose()``. A bad target or argument
  raises ``ValueError`` or ``TypeError``.

The modules behind this one, one job each: ``_dsn`` (targets), ``_statements`` (argument
checks), ``_placeholders`` (``?`` for psycopg), ``_threads`` (cancellable worker threads),
``_migrations``, ``_base`` (the shared API), ``_sqlite``, ``_postgres`` and ``_open``.
"""

from __future__ import annotations

from ... import _util
from ._base import Database as Database
from ._base import DatabaseAvailability as DatabaseAvailability
from ._base import Transaction as Transaction
from ._errors import DatabaseClosedError as DatabaseClosedError
from ._errors import DatabaseError as DatabaseError
from ._errors import DatabaseUnavailable as DatabaseUnavailable
from ._migrations import MIGRATIONS_TABLE as MIGRATIONS_TABLE
from ._open import open_database as open_database
from ._postgres import PostgresDatabase as PostgresDatabase
from ._sqlite import SQLITE_BUSY_TIMEOUT as SQLITE_BUSY_TIMEOUT
from ._sqlite import SQLiteDatabase as SQLiteDatabase
from ._statements import Row as Row
from ._threads import CANCEL_GRACE as CANCEL_GRACE

__all__ = [
    "CANCEL_GRACE",
    "MIGRATIONS_TABLE",
    "SQLITE_BUSY_TIMEOUT",
    "Database",
    "DatabaseAvailability",
    "DatabaseClosedError",
    "DatabaseError",
    "DatabaseUnavailable",
    "PostgresDatabase",
    "Row",
    "SQLiteDatabase",
    "Transaction",
    "open_database",
]

_util.fixup_module_metadata(__name__, globals())
