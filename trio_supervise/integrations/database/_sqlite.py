"""SQLite: one write connection in WAL mode, and read connections beside it for queries.

In WAL mode readers and the writer do not block each other, but one connection runs one
statement at a time: with a single connection a query waited behind any write in flight,
which may itself wait ``SQLITE_BUSY_TIMEOUT`` for another process's lock. So queries get
their own read-only connections (``PRAGMA query_only``), up to ``_READERS`` at once.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import ClassVar, Literal, TypeVar, final

import trio

from ._base import Database
from ._errors import DatabaseError, DatabaseUnavailable
from ._statements import NO_ROW, Row, as_id
from ._threads import open_connection

logger = logging.getLogger("trio_supervise.database")

#: Seconds SQLite waits for a lock held by another connection before the call raises
#: ``DatabaseUnavailable`` (``database is locked``).
SQLITE_BUSY_TIMEOUT = 5.0

# Seconds of one wait of sqlite3's own busy handler, between which the call looks whether it
# was cancelled: Connection.interrupt() does not cut that wait short. SQLITE_BUSY_TIMEOUT is
# made of such waits.
_BUSY_STEP = 0.1

# The most queries that run at once, each on a read connection of its own.
_READERS = 4

_LOCKED = "the SQLite database is locked by another connection"

_T = TypeVar("_T")


def _error_code(error: sqlite3.Error) -> int:
    """The primary result code of ``error`` (``SQLITE_BUSY``...), without the extension."""
    code: int = getattr(error, "sqlite_errorcode", 0) or 0
    return code & 0xFF


def _retry_while_busy(
    fn: Callable[[], _T], deadline: float, interrupted: threading.Event | None
) -> _T:
    """Call ``fn`` again while it finds the database locked, until ``deadline`` (a thread).

    Only for a call that starts outside a transaction: SQLite refuses it with
    ``SQLITE_BUSY`` before it changed anything.
    """
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if _error_code(exc) != sqlite3.SQLITE_BUSY:
                raise
            if time.monotonic() >= deadline or (interrupted is not None and interrupted.is_set()):
                raise


@final
class _Link:
    """One ``sqlite3`` connection, used by one worker thread at a time, and its interrupts."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection
        # Set by interrupt() while a call runs: ends its waits for a lock. Cleared by run().
        self.interrupted = threading.Event()

    def interrupt(self, timeout: float) -> None:
        self.interrupted.set()
        self.connection.interrupt()

    def run(self, fn: Callable[[], _T]) -> _T:
        """Run a call that starts outside a transaction, waiting out another's lock (thread)."""
        self.interrupted.clear()
        return _retry_while_busy(fn, time.monotonic() + SQLITE_BUSY_TIMEOUT, self.interrupted)


def _connect(path: str, *, read_only: bool) -> sqlite3.Connection:
    """Open ``path``: the write connection (WAL, ``synchronous=FULL``) or a read connection."""
    try:
        connection = sqlite3.connect(
            path,
            timeout=min(_BUSY_STEP, SQLITE_BUSY_TIMEOUT),
            isolation_level=None,
            check_same_thread=False,
        )
    except sqlite3.Error as exc:
        raise DatabaseError(_open_error(path, exc)) from exc
    try:
        if read_only:
            connection.execute("PRAGMA query_only=ON")
        else:
            (mode,) = _retry_while_busy(
                lambda: connection.execute("PRAGMA journal_mode=WAL").fetchone(),
                time.monotonic() + SQLITE_BUSY_TIMEOUT,
                None,
            )
            if mode != "wal" and path != ":memory:":
                raise DatabaseError(
                    f"cannot open SQLite database {path!r} in WAL mode (journal_mode is"
                    f" {mode!r}); put the file on a local file system that supports shared"
                    " memory"
                )
            connection.execute("PRAGMA synchronous=FULL")
    except sqlite3.Error as exc:
        connection.close()
        if _error_code(exc) == sqlite3.SQLITE_BUSY:
            raise DatabaseUnavailable(
                f"cannot open SQLite database {path!r}: another connection held it locked for"
                f" more than {SQLITE_BUSY_TIMEOUT:g} seconds ({exc}); retry later",
                reason=_LOCKED,
            ) from exc
        raise DatabaseError(_open_error(path, exc)) from exc
    except BaseException:
        connection.close()
        raise
    return connection


def _open_error(path: str, exc: sqlite3.Error) -> str:
    directory = os.path.dirname(os.path.abspath(path))
    hint = (
        f"the directory {directory!r} does not exist; create it first"
        if not os.path.isdir(directory)
        else "check that it is a SQLite database file (or a new name) and that the directory"
        " is writable"
    )
    return f"cannot open SQLite database {path!r}: {exc}; {hint}"


async def open_sqlite(path: str) -> SQLiteDatabase:
    """Open the write connection of ``path`` (cancellable); read connections open on demand."""
    connection = await open_connection(
        partial(_connect, path, read_only=False), sqlite3.Connection.close
    )
    return SQLiteDatabase(connection, path)


def _query_sync(connection: sqlite3.Connection, sql: str, params: tuple[object, ...]) -> list[Row]:
    cursor = connection.execute(sql, params)
    try:
        # Reading every row also steps the statement to its end, which ends its read.
        return cursor.fetchall()
    finally:
        cursor.close()


@final
class SQLiteDatabase(Database):
    """A SQLite database: a ``sqlite3`` write connection in WAL mode, ``synchronous=FULL``.

    Made by ``open_database()``. Connections are opened with ``check_same_thread=False``
    and ``isolation_level=None`` (autocommit), each used by one worker thread at a time.
    Queries run on up to four read-only connections (``PRAGMA query_only``) beside the
    write connection, opened when first needed; a ``":memory:"`` database has the write
    connection only (each connection to it would be a database of its own). A call that
    finds the database locked by another process waits up to ``SQLITE_BUSY_TIMEOUT``, then
    raises ``DatabaseUnavailable``; cancelled, it stops waiting within a tenth of a second.
    ``aclose()`` closes the read connections, then checkpoints the WAL into the database
    file and removes it.

    Attributes:
      path: the file path, or ``":memory:"``.
    """

    kind: ClassVar[Literal["sqlite", "postgresql"]] = "sqlite"
    auto_id: ClassVar[str] = "INTEGER PRIMARY KEY"

    def __init__(self, connection: sqlite3.Connection, path: str) -> None:
        super().__init__(path)
        self.path = path
        self._writer = _Link(connection)
        # Read connections not in use; more are opened while fewer than _READERS exist.
        # Emptied (and closed) by _close_sync: none is put back once _closing is set.
        self._idle_readers: list[_Link] = []
        # A place per query running apart; None for ":memory:", whose queries run on the
        # write connection.
        self._read_slots = None if path == ":memory:" else trio.Semaphore(_READERS)

    # --------------------------------------------------------------------- read connections

    async def _query(self, sql: str, params: tuple[object, ...]) -> list[Row] | None:
        if self._read_slots is None:
            return None
        async with self._read_slots:
            self._check_usable("execute()")
            reader = self._idle_readers.pop() if self._idle_readers else await self._open_reader()
            stuck = False

            def keep_stuck(finished: threading.Event) -> None:
                nonlocal stuck
                stuck = True  # its thread still uses it: neither reused nor closed

            try:
                return await self._in_thread(
                    partial(reader.run, partial(_query_sync, reader.connection, sql, params)),
                    interrupt=reader.interrupt,
                    on_stuck=keep_stuck,
                    write_connection=False,
                )
            except sqlite3.OperationalError as exc:
                if _error_code(exc) == sqlite3.SQLITE_READONLY:
                    return None  # it writes after all (WITH ... INSERT): nothing was done
                raise
            finally:
                if not stuck:
                    await self._put_back(reader)

    async def _open_reader(self) -> _Link:
        try:
            connection = await open_connection(
                partial(_connect, self.path, read_only=True), sqlite3.Connection.close
            )
        except DatabaseUnavailable as exc:
            self._mark_unavailable(exc)
            raise
        return _Link(connection)

    async def _put_back(self, reader: _Link) -> None:
        if self._closing or self._stuck:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(reader.connection.close)
        else:
            self._idle_readers.append(reader)

    async def _wait_for_queries(self) -> None:
        if self._read_slots is None:
            return
        # Holding every place at once means no query runs; those waiting for a place then
        # find the database closing.
        taken = 0
        try:
            for _ in range(_READERS):
                await self._read_slots.acquire()
                taken += 1
        finally:
            for _ in range(taken):
                self._read_slots.release()

    def _unavailable(self, error: Exception) -> DatabaseUnavailable | None:
        busy = isinstance(error, sqlite3.OperationalError) and (
            _error_code(error) == sqlite3.SQLITE_BUSY
        )
        if busy:
            return DatabaseUnavailable(
                f"the SQLite database {self.path!r} is locked: another connection held its"
                f" lock for more than {SQLITE_BUSY_TIMEOUT:g} seconds ({error}); retry later",
                reason=_LOCKED,
            )
        return None

    # ----------------------------------------------------------------- the write connection

    def _autocommit(self, fn: Callable[[], _T]) -> _T:
        return self._writer.run(partial(Database._autocommit, self, fn))

    def _prepare_sync(self) -> None:
        connection = self._writer.connection
        if connection.in_transaction:
            logger.warning(
                "%s: a transaction was left open (a BEGIN through execute()?); rolling it back",
                self._target,
            )
            connection.execute("ROLLBACK")

    def _execute_sync(self, sql: str, params: tuple[object, ...]) -> list[Row]:
        # Reading every row also steps the statement to its end, which commits it.
        return _query_sync(self._writer.connection, sql, params)

    def _insert_sync(self, sql: str, params: tuple[object, ...], id_column: str) -> int:
        cursor = self._writer.connection.execute(sql, params)
        try:
            rows = cursor.fetchall()
            if cursor.description is not None:  # its own RETURNING clause
                if not rows:
                    raise DatabaseError(NO_ROW)
                return as_id(rows[-1][0])
            if cursor.rowcount < 1 or cursor.lastrowid is None:
                raise DatabaseError(NO_ROW)
            return cursor.lastrowid
        finally:
            cursor.close()

    def _raw_sync(self, sql: str) -> None:
        self._writer.connection.execute(sql).close()

    def _script_sync(self, script: str) -> None:
        connection = self._writer.connection
        try:
            # One script with the transaction around it: executescript() commits any
            # transaction opened before it.
            connection.executescript(f"BEGIN IMMEDIATE;\n{script}\n;\nCOMMIT;")
        except BaseException:
            self._rollback_sync()
            raise
        if connection.in_transaction:
            self._rollback_sync()
            raise DatabaseError(
                "executescript(): the script left its transaction open (an unterminated"
                " comment or string literal?); nothing was changed"
            )

    def _flush_sync(self) -> None:
        # A checkpoint that readers or a writer of other processes keep from finishing says
        # so (busy) instead of raising: try again until SQLITE_BUSY_TIMEOUT, like a lock.
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT
        while True:
            busy, log_frames, checkpointed = self._writer.connection.execute(
                "PRAGMA wal_checkpoint(TRUNCATE)"
            ).fetchone()
            if not busy or time.monotonic() >= deadline or self._writer.interrupted.is_set():
                break
        if busy:
            logger.warning(
                "%s: WAL checkpoint incomplete (%s of %s frames), other connections are"
                " reading; the rest is checkpointed later",
                self._target,
                checkpointed,
                log_frames,
            )

    def _ping_sync(self) -> None:
        # The write lock, taken and given back: what every write needs.
        self._writer.connection.execute("BEGIN IMMEDIATE")
        self._writer.connection.execute("ROLLBACK")

    def _close_sync(self) -> None:
        # The read connections first: the last connection to close folds the WAL into the
        # database file and removes it, and that is the write connection's job.
        readers, self._idle_readers = self._idle_readers, []
        for reader in readers:
            reader.connection.close()
        self._writer.connection.close()

    def _interrupt_sync(self, timeout: float) -> None:
        self._writer.interrupt(timeout)

    def _begin_sync(self) -> None:
        self._writer.connection.execute("BEGIN IMMEDIATE")

    def _commit_sync(self) -> None:
        self._writer.connection.execute("COMMIT")

    def _rollback_sync(self) -> None:
        # An interrupted statement may have rolled the transaction back already.
        if self._writer.connection.in_transaction:
            self._writer.connection.execute("ROLLBACK")

    def _migration_lock_sync(self) -> None:
        pass  # BEGIN IMMEDIATE already holds the database's write lock
