"""The ``Database`` API both databases share: calls, transactions, availability, shutdown.

A subclass says what each step does on its driver (the ``_*_sync`` methods, run in worker
threads); this class runs them one at a time on the write connection, cancellably, and
keeps the database's availability.
"""

from __future__ import annotations

import abc
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from types import TracebackType
from typing import ClassVar, Literal, Self, TypeVar, final

import attrs
import trio

from ... import Band, ShutdownHook, _checks
from . import _threads
from ._errors import DatabaseClosedError, DatabaseError, DatabaseUnavailable
from ._migrations import migrate_sync
from ._statements import Row, check_insert, check_params, check_sql, may_be_query

logger = logging.getLogger("trio_supervise.database")

_T = TypeVar("_T")


@final
@attrs.frozen
class DatabaseAvailability:
    """Whether a database can be used, as far as its calls know: ``db.availability``.

    Attributes:
      available: False from a call that raised ``DatabaseUnavailable`` until a call
        reaches the database again (``ping()`` does it on purpose); False for good once
        the database is closed or unusable.
      reason: why not, fit to show a client (``DatabaseUnavailable.reason``); ``""`` while
        available.
      since: ``trio.current_time()`` when ``available`` last changed (the open, for a
        database that was never unavailable).
    """

    available: bool
    reason: str
    since: float


class Database(abc.ABC):
    """One database, used from Trio through worker threads.

    Get one from ``open_database()``; the constructors are not public. Calls run in worker
    threads and are committed when they return unless they run in ``transaction()``. Writes
    and transactions run one at a time on the write connection (a ``trio.Lock``); on a
    SQLite file, queries (``execute()`` of a ``SELECT``) run on read connections beside it
    and wait for no write. Use it as ``async with await open_database(...) as db:`` or close
    it with ``aclose()`` (or the ``"database: close"`` shutdown hook).

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
        # Held by the call on the write connection (for a whole transaction()).
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
        # What `availability` reports; changed in Trio only, once a call's thread returned.
        self._availability = DatabaseAvailability(True, "", trio.current_time())

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

    @property
    def availability(self) -> DatabaseAvailability:
        """Whether the database can be used, as its last calls found; for readiness probes.

        Every call that raises ``DatabaseUnavailable`` makes it unavailable (the transition
        is logged as a warning, with the driver's words); the next call that succeeds on the
        write connection, or ``ping()``, makes it available again (logged too). On SQLite,
        queries on the read connections do not make it available: they succeed while another
        connection holds the write lock. Calls alone see an outage end only when one is
        made: run ``monitor()`` so that it follows the database without traffic.
        """
        return self._availability

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

        The statement is committed when this returns. On a SQLite file, a query
        (``SELECT``, ``WITH``, ``VALUES``) runs on a read connection, beside the writes: it
        sees every write committed before it started and waits for none in flight (so a
        ``TEMP`` table made with ``execute()`` is not visible to a later query; make and
        read it in one ``transaction()``). A ``WITH`` that writes is refused by the read
        connection and runs on the write connection.

        Args:
          sql: one SQL statement with ``?`` placeholders.
          params: one value per ``?``.

        Raises:
          DatabaseUnavailable: the database cannot be reached now (see its docstring).
          DatabaseClosedError: after ``aclose()``.
          DatabaseError: when called inside ``transaction()`` by the task holding it.
          sqlite3.Error, psycopg.Error: for the SQL itself, unchanged.
        """
        statement = check_sql("execute()", sql)
        values = check_params("execute()", params)
        if may_be_query(statement):
            self._check_call("execute()")
            rows = await self._query(statement, values)
            if rows is not None:
                return rows
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
          DatabaseUnavailable: the database cannot be reached now.
          DatabaseError: nothing was inserted (nothing was written either).
          DatabaseClosedError: after ``aclose()``.
        """
        statement = check_sql("insert()", sql)
        values = check_params("insert()", params)
        check_insert(statement, id_column)
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
          DatabaseUnavailable: the database cannot be reached now; nothing was changed.
          DatabaseClosedError: after ``aclose()``.
          sqlite3.Error, psycopg.Error: for the SQL itself; nothing was changed.
        """
        statement = check_sql("executescript()", script)
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
          DatabaseUnavailable: the database cannot be reached now; nothing was run.
          sqlite3.Error, psycopg.Error: a statement failed; none of the pending ran.
        """
        if isinstance(statements, str) or not isinstance(statements, Sequence):
            raise TypeError(
                "migrate(): statements must be a list of SQL statements, one per migration"
                f" (got {statements!r})"
            )
        checked = [check_sql(f"migrate() statement {i + 1}", s) for i, s in enumerate(statements)]
        async with self._locked("migrate()"):
            applied = await self._in_thread(
                partial(self._autocommit, partial(migrate_sync, self, checked, self._target))
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

    async def ping(self) -> None:
        """Check that the database can be used now, and update ``availability``.

        SQLite: takes and releases the write lock (``BEGIN IMMEDIATE``, ``ROLLBACK``), so it
        waits up to ``SQLITE_BUSY_TIMEOUT`` while another connection holds it. PostgreSQL:
        ``SELECT 1``, reconnecting first when the connection was lost. Like every call on
        the write connection, it waits for the call in flight.

        Raises:
          DatabaseUnavailable: the database cannot be used now: unreachable, locked, or the
            check failed in any other way (the driver's error is the ``__cause__``).
          DatabaseClosedError: after ``aclose()``.
          DatabaseError: the database is unusable (a cancelled call did not stop), or
            ``ping()`` was called inside ``transaction()`` by the task holding it.
        """
        async with self._locked("ping()"):
            try:
                await self._in_thread(partial(self._autocommit, self._ping_sync))
            except DatabaseUnavailable:
                raise
            except Exception as exc:
                error = DatabaseUnavailable(
                    f"ping(): the {self.kind} database {self._target!r} failed its check:"
                    f" {type(exc).__name__}: {exc}",
                    reason=f"the database failed its check ({type(exc).__name__})",
                )
                self._mark_unavailable(error)
                raise error from exc

    async def monitor(
        self,
        interval: float = 5.0,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Keep ``availability`` current: ``ping()`` every ``interval`` seconds until closed.

        Calls see an outage only when one is made, and its end only when one succeeds; but
        a service that readiness took out of its load balancer gets no calls. Run this
        beside them, in a nursery or as a child of the tree (``ChildSpec("database",
        db.monitor, restart=Restart.TRANSIENT)``). It reports started after the first
        ping, never raises for the database's state (``availability`` says it, and the
        changes are logged), and returns once the database is closed or unusable.

        Args:
          interval: seconds between the end of one ping and the start of the next (> 0).

        Raises:
          ValueError: ``interval`` is not a number > 0.
        """
        _checks.number("monitor()", "interval", interval, above=0, finite=True)
        started = False
        while True:
            done = False
            try:
                await self.ping()
            except DatabaseUnavailable:
                pass  # what is monitored: availability says it
            except DatabaseError:
                done = True  # closed, or unusable for good: availability says it
            if not started:
                task_status.started()
                started = True
            if done:
                return
            await trio.sleep(interval)

    async def aclose(self) -> None:
        """Close the database; idempotent.

        New calls fail at once with ``DatabaseClosedError``; the calls in flight (and the
        open ``transaction()``) finish first. Called from inside ``transaction()`` by the
        task holding it, the connection is closed when the transaction ends. If ``aclose``
        is cancelled while it waits, the connection is closed by the call in flight when it
        ends.
        """
        if self._connection_closed:
            return
        if not self._closing:
            logger.info("closing %s database %s", self.kind, self._target)
            self._availability = DatabaseAvailability(
                False, "the database is closed", trio.current_time()
            )
        self._closing = True
        if self._lock.statistics().owner is trio.lowlevel.current_task():
            return
        await self._wait_for_queries()
        async with self._lock:
            await self._close_connection()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Group statements into one transaction: committed at the end, rolled back on error.

        The write connection is held for the whole block, so keep it short: other tasks'
        writes wait (on a SQLite file, their queries do not, and do not see the block's
        changes before it commits). Inside, run statements with the yielded ``Transaction``
        (``tx.execute``, ``tx.insert``); calling ``db.execute`` there from the same task
        raises ``DatabaseError`` (it would wait for itself, or read beside the
        transaction). SQLite takes the write lock at the start (``BEGIN IMMEDIATE``).

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
                f" call did not stop within {_threads.CANCEL_GRACE} seconds and still holds"
                " the connection; open the database again"
            )

    def _check_call(self, what: str) -> None:
        """Refuse a call on a closed or unusable database, or inside the caller's transaction."""
        self._check_usable(what)
        if self._lock.statistics().owner is trio.lowlevel.current_task():
            raise DatabaseError(
                f"{what} was called inside `async with db.transaction() as tx` by the task"
                " that holds the transaction, which would wait for itself; use tx.execute()"
                " and tx.insert() inside the transaction"
            )

    @asynccontextmanager
    async def _locked(self, what: str) -> AsyncIterator[None]:
        """Hold the write connection for one call; close it on the way out if aclose() asked."""
        self._check_call(what)
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
        with trio.CancelScope(shield=True, deadline=trio.current_time() + _threads.CANCEL_GRACE):
            try:
                await self._in_thread(self._rollback_sync)
            except Exception:
                # The block's own exception is the one to report; the next call starts
                # by rolling back whatever is left (see _autocommit).
                logger.warning("%s: rollback failed", self._target, exc_info=True)

    async def _in_thread(
        self,
        fn: Callable[[], _T],
        *,
        interrupt: Callable[[float], None] | None = None,
        on_stuck: Callable[[threading.Event], None] | None = None,
        write_connection: bool = True,
    ) -> _T:
        """Run ``fn`` in a worker thread, cancellably, and keep ``availability``.

        Args:
          fn: the call.
          interrupt: what stops it (the write connection's ``_interrupt_sync`` by default).
          on_stuck: also called, before the database is marked unusable, when it did not
            stop within ``CANCEL_GRACE`` after a cancellation.
          write_connection: whether ``fn`` runs on the write connection, whose success
            makes the database available again.
        """

        def stuck(finished: threading.Event) -> None:
            if on_stuck is not None:
                on_stuck(finished)
            self._mark_stuck(finished)

        try:
            result = await _threads.run_in_worker(
                fn,
                interrupt=self._interrupt_sync if interrupt is None else interrupt,
                on_stuck=stuck,
                target=self._target,
            )
        except DatabaseUnavailable as exc:
            self._mark_unavailable(exc)
            raise
        except Exception as exc:
            unavailable = self._unavailable(exc)
            if unavailable is None:
                raise
            self._mark_unavailable(unavailable)
            raise unavailable from exc
        if write_connection:
            self._mark_available()
        return result

    def _mark_stuck(self, finished: threading.Event) -> None:
        self._stuck = True
        self._stuck_worker_finished = finished
        logger.error(
            "%s: a cancelled call did not stop within %s seconds; the database refuses"
            " further calls",
            self._target,
            _threads.CANCEL_GRACE,
        )
        self._availability = DatabaseAvailability(
            False, "the database is unusable: a cancelled call did not stop", trio.current_time()
        )

    def _mark_unavailable(self, error: DatabaseUnavailable) -> None:
        current = self._availability
        if self._stuck or self._closing or current.reason == error.reason:
            return
        logger.warning("%s: unavailable: %s", self._target, error)
        since = trio.current_time() if current.available else current.since
        self._availability = DatabaseAvailability(False, error.reason, since)

    def _mark_available(self) -> None:
        current = self._availability
        if current.available or self._stuck or self._closing:
            return
        now = trio.current_time()
        logger.info(
            "%s: available again after %.1f seconds (%s)",
            self._target,
            now - current.since,
            current.reason,
        )
        self._availability = DatabaseAvailability(True, "", now)

    def _autocommit(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` outside any transaction (in the worker thread)."""
        self._prepare_sync()
        return fn()

    # ---------------------------------------------- what each database may do apart

    async def _query(self, sql: str, params: tuple[object, ...]) -> list[Row] | None:
        """Run a query apart from the write connection; None to run it there after all."""
        return None

    async def _wait_for_queries(self) -> None:
        """Wait until no query runs apart from the write connection (aclose() is closing)."""
        return None  # none runs apart here

    def _unavailable(self, error: Exception) -> DatabaseUnavailable | None:
        """The ``DatabaseUnavailable`` that the driver's ``error`` means, if it means one."""
        return None

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
    def _ping_sync(self) -> None:
        """Check that the database can be used now (see ``ping()``)."""

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
        """Run one statement in the transaction and return its rows (see ``Database.execute``).

        It runs on the transaction's connection, so it sees the transaction's changes.
        """
        statement = check_sql("tx.execute()", sql)
        values = check_params("tx.execute()", params)
        self._check_active("execute()")
        async with self._lock:
            self._check_active("execute()")
            return await self._db._in_thread(partial(self._db._execute_sync, statement, values))

    async def insert(
        self, sql: str, params: Sequence[object] = (), *, id_column: str = "id"
    ) -> int:
        """Run one INSERT in the transaction and return the new id (see ``Database.insert``)."""
        statement = check_sql("tx.insert()", sql)
        values = check_params("tx.insert()", params)
        check_insert(statement, id_column)
        self._check_active("insert()")
        async with self._lock:
            self._check_active("insert()")
            return await self._db._in_thread(
                partial(self._db._insert_sync, statement, values, id_column)
            )
