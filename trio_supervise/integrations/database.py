"""Databases for supervised services: SQLite by default, PostgreSQL by DSN.

``await open_database(target)`` returns a ``Database``: a ``SQLiteDatabase`` for a file path,
``sqlite:///path`` or ``:memory:`` (the standard ``sqlite3`` module, no extra needed), or a
``PostgresDatabase`` for a ``postgresql://`` DSN (psycopg 3, extra ``postgres``). Both speak
the same small API, run the blocking driver in Trio worker threads, and serialise their one
connection with a ``trio.Lock``::

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
  idle and usable by the next call and no thread is left behind. A cancelled write may or
  may not have been committed. A worker still running ``CANCEL_GRACE`` seconds after the
  first interrupt is abandoned and the database refuses further calls.

Errors:
  Errors of the SQL itself are the driver's (``sqlite3.Error``, ``psycopg.Error``) and
  propagate unchanged. ``DatabaseError`` is raised when a database cannot be opened or a
  call is misused; ``DatabaseClosedError`` for any call after ``aclose()``. A bad target or
  argument raises ``ValueError`` or ``TypeError``.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Self, TypeVar, final

import trio

from .. import Band, ShutdownHook, _checks
from .._extras import missing_extra

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "CANCEL_GRACE",
    "MIGRATIONS_TABLE",
    "SQLITE_BUSY_TIMEOUT",
    "Database",
    "DatabaseClosedError",
    "DatabaseError",
    "PostgresDatabase",
    "Row",
    "SQLiteDatabase",
    "Transaction",
    "open_database",
]

logger = logging.getLogger("trio_supervise.database")

#: Seconds a cancelled call keeps interrupting its statement and waiting for the worker
#: thread before it gives the connection up as stuck.
CANCEL_GRACE = 5.0

#: The table ``Database.migrate`` records applied statements in.
MIGRATIONS_TABLE = "trio_supervise_migrations"

#: Seconds SQLite waits for a lock held by another process before ``database is locked``.
SQLITE_BUSY_TIMEOUT = 5.0

#: One result row.
Row = tuple[Any, ...]

_T = TypeVar("_T")
_C = TypeVar("_C")

_ACCEPTED = (
    "a SQLite file path such as 'data/app.db', 'sqlite:///relative/app.db',"
    " 'sqlite:////absolute/app.db', ':memory:', or a PostgreSQL DSN such as"
    " 'postgresql://user:password@localhost:5432/dbname'"
)

# Seconds between two interrupts of a cancelled statement: a statement that had not yet
# started when the first one came is caught by the next.
_INTERRUPT_INTERVAL = 0.05

_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_CONNINFO = re.compile(r"^\s*(host|hostaddr|port|dbname|user|password|service)\s*=", re.I)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.S)
_INSERT_KEYWORD = re.compile(r"(?:insert|replace|with)\b", re.I)
_RETURNING = re.compile(r"\breturning\b", re.I)
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$")


class DatabaseError(Exception):
    """The database cannot be opened or used as asked (not an error of the SQL itself)."""


class DatabaseClosedError(DatabaseError):
    """A call on a database that ``aclose()`` has closed (or is closing)."""


class _NotStarted(Exception):
    """Raised in a worker thread whose call was cancelled before it began; never seen."""


# ------------------------------------------------------------------------------ targets


def _redact(target: str) -> str:
    """The target with any password replaced by ``***``, for messages and logs."""
    target = re.sub(r"(://[^:/@?#]*:)[^@/?#]*@", r"\1***@", target)
    return re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", target)


def _parse_target(target: object) -> tuple[Literal["sqlite", "postgresql"], str]:
    """Which database ``target`` names, and its path (SQLite) or DSN (PostgreSQL)."""
    if isinstance(target, os.PathLike):
        target = os.fspath(target)
    if not isinstance(target, str):
        raise TypeError(f"open_database: target must be {_ACCEPTED} (got {target!r})")
    if not target.strip():
        raise ValueError(f"open_database: target is empty; give {_ACCEPTED}")
    match = _URL_SCHEME.match(target)
    if match:
        scheme = match.group(1).lower()
        if scheme in ("postgresql", "postgres"):
            return "postgresql", target
        if scheme != "sqlite":
            raise ValueError(
                f"open_database: unsupported database URL scheme {scheme!r} in"
                f" {_redact(target)!r}; give {_ACCEPTED}"
            )
        rest = target[len(match.group(0)) :]
        if rest == "":
            return "sqlite", ":memory:"
        if not rest.startswith("/") or rest == "/":
            raise ValueError(
                f"open_database: SQLite URL {target!r} names no file; write"
                " 'sqlite:///relative/app.db' (three slashes) or 'sqlite:////absolute/app.db'"
                " (four), or 'sqlite:///:memory:'"
            )
        return "sqlite", rest[1:]
    if _CONNINFO.match(target):
        raise ValueError(
            f"open_database: {_redact(target)!r} looks like a libpq 'key=value' connection"
            " string; write it as a URL such as 'postgresql://user:password@host:5432/dbname'"
        )
    return "sqlite", target


def _check_sql(what: str, sql: object) -> str:
    if not isinstance(sql, str):
        raise TypeError(f"{what}: sql must be a string of SQL (got {sql!r})")
    if not sql.strip():
        raise ValueError(f"{what}: sql is empty; give one SQL statement")
    return sql


def _check_params(what: str, params: object) -> tuple[object, ...]:
    if isinstance(params, str | bytes | bytearray) or not isinstance(params, Sequence):
        raise TypeError(
            f"{what}: params must be a tuple or list of values, one per '?' placeholder"
            f" (got {params!r}); for a single value write (value,)"
        )
    return tuple(params)


def _check_insert(sql: str, id_column: object) -> None:
    if not isinstance(id_column, str) or not _IDENTIFIER.match(id_column):
        raise ValueError(
            f"insert(): id_column must be a plain column name such as 'id' (got {id_column!r})"
        )
    start = _LEADING_NOISE.match(sql)
    if not _INSERT_KEYWORD.match(sql, start.end() if start else 0):
        raise ValueError(
            f"insert(): expected an INSERT statement (got {sql.strip()[:60]!r});"
            " use execute() for other statements"
        )


def _as_id(value: object) -> int:
    if not _checks.is_int(value):
        raise DatabaseError(
            f"insert(): the statement's RETURNING clause gave {value!r} as the new row's id,"
            " not an integer; return the integer id column first"
        )
    return value


_NO_ROW = (
    "insert(): the statement inserted no row (did INSERT OR IGNORE or ON CONFLICT DO"
    " NOTHING skip it?), so there is no id to return; use execute() for statements that"
    " may insert nothing"
)


# ------------------------------------------------------------------ PostgreSQL placeholders


def _split_postgres(sql: str) -> list[tuple[str, bool]]:
    """Split ``sql`` into runs of ``(text, is_code)``.

    What is not code: string literals (``'...'`` with ``''``, ``E'...'`` with backslash
    escapes too), quoted identifiers, dollar-quoted strings, ``--`` and (nested) ``/* */``
    comments. An unterminated one runs to the end; the server reports it.
    """
    runs: list[tuple[str, bool]] = []
    n = len(sql)
    start = i = 0

    def word_char(index: int) -> bool:
        c = sql[index]
        return c.isalnum() or c in "_$" or ord(c) > 127

    while i < n:
        c = sql[i]
        if c == "'":
            backslash = i > 0 and sql[i - 1] in "eE" and not (i > 1 and word_char(i - 2))
            end = _end_of_quoted(sql, i, "'", backslash)
        elif c == '"':
            end = _end_of_quoted(sql, i, '"', False)
        elif sql.startswith("--", i):
            newline = sql.find("\n", i)
            end = n if newline < 0 else newline + 1
        elif sql.startswith("/*", i):
            end = _end_of_block_comment(sql, i)
        elif c == "$" and not (i > 0 and word_char(i - 1)) and (tag := _DOLLAR_TAG.match(sql, i)):
            close = sql.find(tag.group(0), tag.end())
            end = n if close < 0 else close + len(tag.group(0))
        else:
            i += 1
            continue
        if start < i:
            runs.append((sql[start:i], True))
        runs.append((sql[i:end], False))
        start = i = end
    if start < n:
        runs.append((sql[start:], True))
    return runs


def _end_of_quoted(sql: str, i: int, quote: str, backslash: bool) -> int:
    j = i + 1
    while j < len(sql):
        c = sql[j]
        if backslash and c == "\\":
            j += 2
        elif c == quote:
            if sql.startswith(quote, j + 1):
                j += 2
            else:
                return j + 1
        else:
            j += 1
    return len(sql)


def _end_of_block_comment(sql: str, i: int) -> int:
    depth = 0
    j = i
    while j < len(sql):
        if sql.startswith("/*", j):
            depth += 1
            j += 2
        elif sql.startswith("*/", j):
            depth -= 1
            j += 2
            if depth == 0:
                return j
        else:
            j += 1
    return len(sql)


def _qmark_to_psycopg(sql: str) -> str:
    """``sql`` with ``?`` placeholders as psycopg's ``%s``, and literal ``%`` escaped."""
    parts: list[str] = []
    for text, is_code in _split_postgres(sql):
        text = text.replace("%", "%%")
        parts.append(text.replace("?", "%s") if is_code else text)
    return "".join(parts)


def _code_only(sql: str) -> str:
    """``sql`` with literals and comments blanked out (same length, same offsets)."""
    return "".join(text if is_code else " " * len(text) for text, is_code in _split_postgres(sql))


def _with_returning(sql: str, id_column: str) -> str:
    """``sql`` with ``RETURNING id_column`` appended, unless it has its own RETURNING."""
    code = _code_only(sql)
    if _RETURNING.search(code):
        return sql
    # Cut after the last code: trailing comments and the closing ``;`` go.
    end = len(code.rstrip())
    if end and code[end - 1] == ";":
        end -= 1
    return f"{sql[:end].rstrip()}\nRETURNING {id_column}"


# ----------------------------------------------------------------------------- threads


class _Handover(Generic[_C]):
    """Hands a new connection from a worker thread to Trio, or closes it if Trio left."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # Set (under lock) by the Trio side once it was cancelled and will not take it.
        self.abandoned = False
        # The connection, once the worker made it and Trio had not left yet.
        self.connection: _C | None = None


async def _open_connection(connect: Callable[[], _C], close: Callable[[_C], None]) -> _C:
    """Run ``connect`` in a thread; cancellable without leaking what it connects."""
    handover: _Handover[_C] = _Handover()

    def work() -> _C:
        connection = connect()
        with handover.lock:
            if handover.abandoned:
                close(connection)
                raise _NotStarted
            handover.connection = connection
        return connection

    try:
        return await trio.to_thread.run_sync(work, abandon_on_cancel=True)
    except trio.Cancelled:
        with handover.lock:
            handover.abandoned = True
            leftover = handover.connection
        if leftover is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(close, leftover)
        raise


# ---------------------------------------------------------------------------- databases


class Database(abc.ABC):
    """One database connection, used from Trio through worker threads.

    Get one from ``open_database()``; the constructors are not public. Calls are serialised
    by a ``trio.Lock`` (one statement at a time), each runs in a worker thread, and each is
    committed when it returns unless it runs in ``transaction()``. Use it as
    ``async with await open_database(...) as db:`` or close it with ``aclose()`` (or the
    ``"database: close"`` shutdown hook).

    Attributes:
      kind: ``"sqlite"`` or ``"postgresql"``.
      auto_id: the column definition of an auto-numbered integer primary key in this
        database's dialect, for portable schemas: ``f"CREATE TABLE t (id {db.auto_id}, ...)"``.
    """

    kind: ClassVar[Literal["sqlite", "postgresql"]]
    auto_id: ClassVar[str]
    # Whether flush() has something to write (else it only waits for the call in flight).
    flush_writes: ClassVar[bool] = True

    def __init__(self, target: str) -> None:
        # The target as given, password redacted: for messages, logs and repr.
        self._target = target
        self._lock = trio.Lock()
        # True from the start of aclose(): no call may start any more.
        self._closing = False
        # True once the connection itself is closed (possibly after _closing, when a call
        # in flight outlived a cancelled aclose()).
        self._connection_closed = False
        # Set when a cancelled call's worker would not stop within CANCEL_GRACE; the
        # connection is then in that thread's hands for good.
        self._stuck = False
        # Set when the thread of a stuck call has let go of the connection at last.
        self._stuck_worker_finished: threading.Event | None = None

    def __repr__(self) -> str:
        state = "closed" if self._closing else "open"
        return f"<{type(self).__name__} {self._target!r} {state}>"

    @property
    def target(self) -> str:
        """The path or DSN the database was opened with, any password shown as ``***``."""
        return self._target

    @property
    def closed(self) -> bool:
        """True once ``aclose()`` has been called."""
        return self._closing

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------------ the API

    async def execute(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """Run one statement and return its rows (``[]`` for a statement without rows).

        The statement is committed when this returns.

        Args:
          sql: one SQL statement with ``?`` placeholders.
          params: one value per ``?``.

        Raises:
          DatabaseClosedError: after ``aclose()``.
          DatabaseError: when called inside ``transaction()`` by the task holding it.
          sqlite3.Error, psycopg.Error: for the SQL itself, unchanged.
        """
        statement = _check_sql("execute()", sql)
        values = _check_params("execute()", params)
        async with self._locked("execute()"):
            return await self._in_thread(
                partial(self._autocommit, partial(self._execute_sync, statement, values))
            )

    async def insert(
        self, sql: str, params: Sequence[object] = (), *, id_column: str = "id"
    ) -> int:
        """Run one INSERT and return the id of the row it inserted, committed.

        SQLite returns the row's ``rowid`` (which an ``INTEGER PRIMARY KEY`` column is);
        PostgreSQL appends ``RETURNING <id_column>`` to the statement. A statement with its
        own ``RETURNING`` clause gives the first column of its last row on both. For a
        statement that inserts several rows this is the id of the last one.

        Args:
          sql: an ``INSERT`` (or ``REPLACE``, or ``WITH ... INSERT``) with ``?`` placeholders.
          params: one value per ``?``.
          id_column: the column PostgreSQL returns; ignored by SQLite.

        Raises:
          ValueError: ``sql`` is not an INSERT, or ``id_column`` is not a plain name.
          DatabaseError: nothing was inserted (nothing was written either).
          DatabaseClosedError: after ``aclose()``.
        """
        statement = _check_sql("insert()", sql)
        values = _check_params("insert()", params)
        _check_insert(statement, id_column)
        async with self._locked("insert()"):
            return await self._in_thread(
                partial(self._autocommit, partial(self._insert_sync, statement, values, id_column))
            )

    async def executescript(self, script: str) -> None:
        """Run several ``;``-separated statements, without parameters, as one transaction.

        Either all of them take effect or, when one fails, none. The script must not hold
        its own ``BEGIN``/``COMMIT``. For schema setup that runs at every start, prefer
        ``migrate()``.

        Raises:
          DatabaseClosedError: after ``aclose()``.
          sqlite3.Error, psycopg.Error: for the SQL itself; nothing was changed.
        """
        statement = _check_sql("executescript()", script)
        async with self._locked("executescript()"):
            await self._in_thread(partial(self._autocommit, partial(self._script_sync, statement)))

    async def migrate(self, statements: Sequence[str]) -> int:
        """Bring the schema up to date: run the statements not run on this database before.

        Statement ``i`` (from 0) is migration ``i + 1``. Applied migrations are recorded in
        ``MIGRATIONS_TABLE`` with a checksum of their text, so the same list can be passed
        at every start: only new statements (appended at the end) run. All pending
        statements run in one transaction, with concurrent migrations of the same database
        (other processes) waiting their turn. Never edit or remove an applied statement;
        append a new one that changes the schema further.

        Args:
          statements: one SQL statement each, without parameters.

        Returns:
          How many statements were applied now.

        Raises:
          TypeError: ``statements`` is a string or holds a non-string.
          DatabaseError: an applied statement was changed, or the database has more
            migrations than given (an older version of the program?); nothing was run.
          sqlite3.Error, psycopg.Error: a statement failed; none of the pending ran.
        """
        if isinstance(statements, str) or not isinstance(statements, Sequence):
            raise TypeError(
                "migrate(): statements must be a list of SQL statements, one per migration"
                f" (got {statements!r})"
            )
        checked = [_check_sql(f"migrate() statement {i + 1}", s) for i, s in enumerate(statements)]
        async with self._locked("migrate()"):
            applied = await self._in_thread(
                partial(self._autocommit, partial(self._migrate_sync, checked))
            )
        if applied:
            logger.info(
                "%s: applied %d migration(s), now at version %d",
                self._target,
                applied,
                len(checked),
            )
        return applied

    async def flush(self) -> None:
        """Make what was written durable in the database's main storage.

        SQLite: a ``wal_checkpoint(TRUNCATE)``, which copies the write-ahead log into the
        database file and empties it (a checkpoint that other processes' readers keep from
        finishing is logged as a warning). PostgreSQL: nothing beyond waiting for the call
        in flight, as every call is already committed and the server owns its storage; it
        needs no connection, so it succeeds while the server is down.

        Raises:
          DatabaseClosedError: after ``aclose()``.
        """
        async with self._locked("flush()"):
            if self.flush_writes:
                await self._in_thread(partial(self._autocommit, self._flush_sync))
            # Else nothing to write: no connection needed (and none made while the server
            # is down, which failed the shutdown's flush hook and exited 1).

    async def aclose(self) -> None:
        """Close the database; idempotent.

        New calls fail at once with ``DatabaseClosedError``; the call in flight (or the
        open ``transaction()``) finishes first. Called from inside ``transaction()`` by the
        task holding it, the connection is closed when the transaction ends. If ``aclose``
        is cancelled while it waits, the connection is closed by the call in flight when it
        ends.
        """
        if self._connection_closed:
            return
        if not self._closing:
            logger.info("closing %s database %s", self.kind, self._target)
        self._closing = True
        if self._lock.statistics().owner is trio.lowlevel.current_task():
            return
        async with self._lock:
            await self._close_connection()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Group statements into one transaction: committed at the end, rolled back on error.

        The database is held for the whole block, so keep it short: other tasks' calls wait.
        Inside, run statements with the yielded ``Transaction`` (``tx.execute``,
        ``tx.insert``); calling ``db.execute`` there from the same task raises
        ``DatabaseError`` (it would wait for itself). SQLite takes the write lock at the
        start (``BEGIN IMMEDIATE``).

        Example::

            async with db.transaction() as tx:
                note = await tx.insert("INSERT INTO notes (text) VALUES (?)", ("a",))
                await tx.execute("INSERT INTO tags (note, tag) VALUES (?, ?)", (note, "x"))

        Cancellation:
          A cancelled or failing block is rolled back (shielded, within ``CANCEL_GRACE``).
        """
        async with self._locked("transaction()"):
            await self._in_thread(partial(self._autocommit, self._begin_sync))
            tx = Transaction(self)
            committed = False
            try:
                yield tx
                tx._active = False
                await self._in_thread(self._commit_sync)
                committed = True
            finally:
                tx._active = False
                if not committed:
                    await self._rollback_shielded()

    def shutdown_hooks(
        self,
        *,
        flush_timeout: float | None = 5.0,
        close_timeout: float | None = 5.0,
        name: str = "database",
    ) -> list[ShutdownHook]:
        """The hooks that flush (band ``FLUSH``) and close (band ``CLOSE``) this database.

        Pass them to ``supervisor_tree(spec, hooks=...)``. The flush hook does nothing when
        the database was already closed. Give each database its own ``name`` when a tree
        has several.

        Raises:
          SpecError: a timeout is negative or NaN.
        """
        return [
            ShutdownHook(
                f"{name}: flush",
                self._flush_for_shutdown,
                priority=Band.FLUSH,
                timeout=flush_timeout,
            ),
            ShutdownHook(f"{name}: close", self.aclose, priority=Band.CLOSE, timeout=close_timeout),
        ]

    # ---------------------------------------------------------------------- machinery

    async def _flush_for_shutdown(self) -> None:
        if self._closing:
            logger.debug("%s: already closed, nothing to flush", self._target)
            return
        await self.flush()

    def _check_usable(self, what: str) -> None:
        if self._closing:
            raise DatabaseClosedError(
                f"{what}: the {self.kind} database {self._target!r} is closed; open it again"
                " with open_database()"
            )
        if self._stuck:
            raise DatabaseError(
                f"{what}: the {self.kind} database {self._target!r} is unusable: a cancelled"
                f" call did not stop within {CANCEL_GRACE} seconds and still holds the"
                " connection; open the database again"
            )

    @asynccontextmanager
    async def _locked(self, what: str) -> AsyncIterator[None]:
        """Hold the database for one call; close it on the way out if aclose() asked."""
        self._check_usable(what)
        if self._lock.statistics().owner is trio.lowlevel.current_task():
            raise DatabaseError(
                f"{what} was called inside `async with db.transaction() as tx` by the task"
                " that holds the transaction, which would wait for itself; use tx.execute()"
                " and tx.insert() inside the transaction"
            )
        async with self._lock:
            self._check_usable(what)
            try:
                yield
            finally:
                if self._closing and not self._connection_closed:
                    await self._close_connection()

    async def _close_connection(self) -> None:
        if self._connection_closed:
            return
        try:
            if self._stuck:
                logger.error(
                    "%s: not closing the connection, a cancelled call's thread still uses it",
                    self._target,
                )
            else:
                # Closing is quick and bounded by the driver (a SQLite checkpoint, a
                # PostgreSQL Terminate message); it must not be cut short halfway.
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self._close_sync)
                logger.info("closed %s database %s", self.kind, self._target)
        finally:
            self._connection_closed = True

    async def _rollback_shielded(self) -> None:
        with trio.CancelScope(shield=True, deadline=trio.current_time() + CANCEL_GRACE):
            try:
                await self._in_thread(self._rollback_sync)
            except Exception:
                # The block's own exception is the one to report; the next call starts
                # by rolling back whatever is left (see _autocommit).
                logger.warning("%s: rollback failed", self._target, exc_info=True)

    async def _in_thread(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` in a worker thread; on cancellation, stop it before raising."""
        finished = threading.Event()
        cancelled = threading.Event()

        def work() -> _T:
            try:
                if cancelled.is_set():
                    raise _NotStarted
                return fn()
            finally:
                finished.set()

        try:
            return await trio.to_thread.run_sync(work, abandon_on_cancel=True)
        except trio.Cancelled:
            cancelled.set()
            with trio.CancelScope(shield=True):
                stopped = await trio.to_thread.run_sync(self._stop_worker, finished)
            if not stopped:
                self._stuck = True
                self._stuck_worker_finished = finished
                logger.error(
                    "%s: a cancelled call did not stop within %s seconds; the database"
                    " refuses further calls",
                    self._target,
                    CANCEL_GRACE,
                )
            raise

    def _stop_worker(self, finished: threading.Event) -> bool:
        """Interrupt the statement until the worker has returned; False after the grace."""
        deadline = time.monotonic() + CANCEL_GRACE
        while not finished.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                self._interrupt_sync(remaining)
            except Exception:
                logger.debug("%s: interrupting failed", self._target, exc_info=True)
            finished.wait(min(_INTERRUPT_INTERVAL, remaining))
        return True

    def _autocommit(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` outside any transaction (in the worker thread)."""
        self._prepare_sync()
        return fn()

    def _migrate_sync(self, statements: list[str]) -> int:
        self._begin_sync()
        try:
            self._migration_lock_sync()
            self._raw_sync(
                f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}"
                " (version INTEGER PRIMARY KEY, checksum TEXT NOT NULL)"
            )
            applied = self._execute_sync(
                f"SELECT version, checksum FROM {MIGRATIONS_TABLE} ORDER BY version", ()
            )
            checksums = [hashlib.sha256(s.encode()).hexdigest() for s in statements]
            if len(applied) > len(statements):
                raise DatabaseError(
                    f"migrate(): {self._target!r} has {len(applied)} migrations applied but"
                    f" only {len(statements)} were given; is this an older version of the"
                    " program? Never remove an applied migration"
                )
            for version, checksum in applied:
                if checksums[version - 1] != checksum:
                    raise DatabaseError(
                        f"migrate(): migration {version} was changed after it was applied to"
                        f" {self._target!r} (now {statements[version - 1].strip()[:60]!r});"
                        " restore its text and append a new statement for the change"
                    )
            for index in range(len(applied), len(statements)):
                self._raw_sync(statements[index])
                self._execute_sync(
                    f"INSERT INTO {MIGRATIONS_TABLE} (version, checksum) VALUES (?, ?)",
                    (index + 1, checksums[index]),
                )
            self._commit_sync()
        except BaseException:
            self._rollback_sync()
            raise
        return len(statements) - len(applied)

    # ------------------------------------------------- what each database does (threads)

    @abc.abstractmethod
    def _prepare_sync(self) -> None:
        """Make the connection ready for a call outside a transaction."""

    @abc.abstractmethod
    def _execute_sync(self, sql: str, params: tuple[object, ...]) -> list[Row]: ...

    @abc.abstractmethod
    def _insert_sync(self, sql: str, params: tuple[object, ...], id_column: str) -> int: ...

    @abc.abstractmethod
    def _raw_sync(self, sql: str) -> None:
        """Run a statement without parameters and without placeholder translation."""

    @abc.abstractmethod
    def _script_sync(self, script: str) -> None: ...

    @abc.abstractmethod
    def _flush_sync(self) -> None: ...

    @abc.abstractmethod
    def _close_sync(self) -> None: ...

    @abc.abstractmethod
    def _interrupt_sync(self, timeout: float) -> None:
        """Stop the statement running in another thread (no-op when none runs)."""

    @abc.abstractmethod
    def _begin_sync(self) -> None: ...

    @abc.abstractmethod
    def _commit_sync(self) -> None: ...

    @abc.abstractmethod
    def _rollback_sync(self) -> None:
        """Roll back the open transaction, if there is one."""

    @abc.abstractmethod
    def _migration_lock_sync(self) -> None:
        """Make concurrent migrations of the same database wait (inside the transaction)."""


@final
class Transaction:
    """The statements of one ``async with db.transaction() as tx`` block.

    Usable only inside the block; its calls run one at a time.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        # True inside the block; False once it commits or rolls back.
        self._active = True
        self._lock = trio.Lock()

    def _check_active(self, what: str) -> None:
        if not self._active:
            raise DatabaseError(
                f"tx.{what}: the transaction has ended; use the Transaction only inside its"
                " `async with db.transaction() as tx` block"
            )

    async def execute(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """Run one statement in the transaction and return its rows (see ``Database.execute``)."""
        statement = _check_sql("tx.execute()", sql)
        values = _check_params("tx.execute()", params)
        self._check_active("execute()")
        async with self._lock:
            self._check_active("execute()")
            return await self._db._in_thread(partial(self._db._execute_sync, statement, values))

    async def insert(
        self, sql: str, params: Sequence[object] = (), *, id_column: str = "id"
    ) -> int:
        """Run one INSERT in the transaction and return the new id (see ``Database.insert``)."""
        statement = _check_sql("tx.insert()", sql)
        values = _check_params("tx.insert()", params)
        _check_insert(statement, id_column)
        self._check_active("insert()")
        async with self._lock:
            self._check_active("insert()")
            return await self._db._in_thread(
                partial(self._db._insert_sync, statement, values, id_column)
            )


# -------------------------------------------------------------------------------- SQLite


def _sqlite_connect(path: str) -> sqlite3.Connection:
    try:
        connection = sqlite3.connect(
            path, timeout=SQLITE_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise DatabaseError(_sqlite_open_error(path, exc)) from exc
    try:
        (mode,) = connection.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode != "wal" and path != ":memory:":
            raise DatabaseError(
                f"cannot open SQLite database {path!r} in WAL mode (journal_mode is {mode!r});"
                " put the file on a local file system that supports shared memory"
            )
        connection.execute("PRAGMA synchronous=FULL")
    except sqlite3.Error as exc:
        connection.close()
        raise DatabaseError(_sqlite_open_error(path, exc)) from exc
    except BaseException:
        connection.close()
        raise
    return connection


def _sqlite_open_error(path: str, exc: sqlite3.Error) -> str:
    directory = os.path.dirname(os.path.abspath(path))
    hint = (
        f"the directory {directory!r} does not exist; create it first"
        if not os.path.isdir(directory)
        else "check that it is a SQLite database file (or a new name) and that the directory"
        " is writable"
    )
    return f"cannot open SQLite database {path!r}: {exc}; {hint}"


@final
class SQLiteDatabase(Database):
    """A SQLite database: one ``sqlite3`` connection in WAL mode, ``synchronous=FULL``.

    Made by ``open_database()``. The connection is opened with ``check_same_thread=False``
    and ``isolation_level=None`` (autocommit) and used by one worker thread at a time.
    ``aclose()`` checkpoints the WAL into the database file and removes it.

    Attributes:
      path: the file path, or ``":memory:"``.
    """

    kind: ClassVar[Literal["sqlite", "postgresql"]] = "sqlite"
    auto_id: ClassVar[str] = "INTEGER PRIMARY KEY"

    def __init__(self, connection: sqlite3.Connection, path: str) -> None:
        super().__init__(path)
        self.path = path
        self._connection = connection

    def _prepare_sync(self) -> None:
        if self._connection.in_transaction:
            logger.warning(
                "%s: a transaction was left open (a BEGIN through execute()?); rolling it back",
                self._target,
            )
            self._connection.execute("ROLLBACK")

    def _execute_sync(self, sql: str, params: tuple[object, ...]) -> list[Row]:
        cursor = self._connection.execute(sql, params)
        try:
            # Reading every row also steps the statement to its end, which commits it.
            return cursor.fetchall()
        finally:
            cursor.close()

    def _insert_sync(self, sql: str, params: tuple[object, ...], id_column: str) -> int:
        cursor = self._connection.execute(sql, params)
        try:
            rows = cursor.fetchall()
            if cursor.description is not None:  # its own RETURNING clause
                if not rows:
                    raise DatabaseError(_NO_ROW)
                return _as_id(rows[-1][0])
            if cursor.rowcount < 1 or cursor.lastrowid is None:
                raise DatabaseError(_NO_ROW)
            return cursor.lastrowid
        finally:
            cursor.close()

    def _raw_sync(self, sql: str) -> None:
        self._connection.execute(sql).close()

    def _script_sync(self, script: str) -> None:
        try:
            # One script with the transaction around it: executescript() commits any
            # transaction opened before it.
            self._connection.executescript(f"BEGIN IMMEDIATE;\n{script}\n;\nCOMMIT;")
        except BaseException:
            self._rollback_sync()
            raise
        if self._connection.in_transaction:
            self._rollback_sync()
            raise DatabaseError(
                "executescript(): the script left its transaction open (an unterminated"
                " comment or string literal?); nothing was changed"
            )

    def _flush_sync(self) -> None:
        busy, log_frames, checkpointed = self._connection.execute(
            "PRAGMA wal_checkpoint(TRUNCATE)"
        ).fetchone()
        if busy:
            logger.warning(
                "%s: WAL checkpoint incomplete (%s of %s frames), other connections are"
                " reading; the rest is checkpointed later",
                self._target,
                checkpointed,
                log_frames,
            )

    def _close_sync(self) -> None:
        self._connection.close()

    def _interrupt_sync(self, timeout: float) -> None:
        self._connection.interrupt()

    def _begin_sync(self) -> None:
        self._connection.execute("BEGIN IMMEDIATE")

    def _commit_sync(self) -> None:
        self._connection.execute("COMMIT")

    def _rollback_sync(self) -> None:
        # An interrupted statement may have rolled the transaction back already.
        if self._connection.in_transaction:
            self._connection.execute("ROLLBACK")

    def _migration_lock_sync(self) -> None:
        pass  # BEGIN IMMEDIATE already holds the database's write lock


# ---------------------------------------------------------------------------- PostgreSQL


def _import_psycopg() -> ModuleType:
    try:
        import psycopg
    except ImportError as exc:
        raise missing_extra("a PostgreSQL database", "psycopg 3", "postgres") from exc
    return psycopg


def _postgres_connect(dsn: str) -> psycopg.Connection[Row]:
    pg = _import_psycopg()
    try:
        connection: psycopg.Connection[Row] = pg.connect(dsn, autocommit=True)
    except pg.Error as exc:
        raise DatabaseError(
            f"cannot connect to PostgreSQL at {_redact(dsn)!r}: {str(exc).strip()}; check that"
            " the server runs and the DSN's host, port, user, password and database name"
        ) from exc
    return connection


def _postgres_close(connection: psycopg.Connection[Row]) -> None:
    connection.close()


# A fixed key for pg_advisory_xact_lock: serialises migrate() across processes.
_MIGRATION_LOCK_KEY = int.from_bytes(hashlib.sha256(MIGRATIONS_TABLE.encode()).digest()[:4], "big")


@final
class PostgresDatabase(Database):
    """A PostgreSQL database: one psycopg 3 connection in autocommit mode.

    Made by ``open_database()``. psycopg's async connection does not run under Trio, so
    its blocking connection is used in worker threads. A connection lost between calls
    (a server restart, an idle timeout) is reopened by the next call; the call that finds
    it lost raises psycopg's ``OperationalError``.

    Attributes:
      dsn: the DSN, password shown as ``***``.
    """

    kind: ClassVar[Literal["sqlite", "postgresql"]] = "postgresql"
    auto_id: ClassVar[str] = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"
    flush_writes: ClassVar[bool] = False  # every call is committed; the server owns storage

    def __init__(self, connection: psycopg.Connection[Row], dsn: str) -> None:
        super().__init__(_redact(dsn))
        self.dsn = _redact(dsn)
        # The real DSN, for reconnecting; never shown.
        self._dsn = dsn
        self._connection = connection

    def _prepare_sync(self) -> None:
        pg = _import_psycopg()
        connection = self._connection
        if connection.closed or connection.broken:
            logger.warning("%s: the connection was lost; reconnecting", self._target)
            connection.close()
            self._connection = _postgres_connect(self._dsn)
        elif connection.info.transaction_status != pg.pq.TransactionStatus.IDLE:
            logger.warning(
                "%s: a transaction was left open (a BEGIN through execute()?); rolling it back",
                self._target,
            )
            connection.execute("ROLLBACK")

    def _execute_sync(self, sql: str, params: tuple[object, ...]) -> list[Row]:
        with self._connection.cursor() as cursor:
            cursor.execute(_qmark_to_psycopg(sql), params)
            return cursor.fetchall() if cursor.description is not None else []

    def _insert_sync(self, sql: str, params: tuple[object, ...], id_column: str) -> int:
        rows = self._execute_sync(_with_returning(sql, id_column), params)
        if not rows:
            raise DatabaseError(_NO_ROW)
        return _as_id(rows[-1][0])

    def _raw_sync(self, sql: str) -> None:
        self._connection.execute(sql)

    def _script_sync(self, script: str) -> None:
        # Without parameters psycopg sends the simple query protocol, under which the
        # server runs several statements as one implicit transaction.
        self._connection.execute(script)

    def _flush_sync(self) -> None:
        pass  # not called: flush_writes is False

    def _close_sync(self) -> None:
        self._connection.close()

    def _interrupt_sync(self, timeout: float) -> None:
        self._connection.cancel_safe(timeout=timeout)

    def _begin_sync(self) -> None:
        self._connection.execute("BEGIN")

    def _commit_sync(self) -> None:
        self._connection.execute("COMMIT")

    def _rollback_sync(self) -> None:
        pg = _import_psycopg()
        connection = self._connection
        if connection.closed:
            return
        if connection.info.transaction_status != pg.pq.TransactionStatus.IDLE:
            connection.execute("ROLLBACK")

    def _migration_lock_sync(self) -> None:
        self._connection.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))


# ------------------------------------------------------------------------------ opening


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
      DatabaseError: the database cannot be opened (missing directory, not a database
        file, server unreachable, authentication failed).
      ImportError: a PostgreSQL DSN without psycopg installed.

    Cancellation:
      Opening is cancellable; a connection made after the cancellation is closed.
    """
    kind, location = _parse_target(target)
    db: Database
    if kind == "sqlite":
        sqlite_connection = await _open_connection(
            partial(_sqlite_connect, location), sqlite3.Connection.close
        )
        db = SQLiteDatabase(sqlite_connection, location)
    else:
        _import_psycopg()
        postgres_connection = await _open_connection(
            partial(_postgres_connect, location), _postgres_close
        )
        db = PostgresDatabase(postgres_connection, location)
    logger.info("opened %s database %s", db.kind, db.target)
    return db
