"""SQLite (``_sqlite``): the write connection, the read connections beside it, and locks.

Real files in ``tmp_path``, real threads, Trio's real clock (``trio.fail_after`` is a
fail-safe only). "Another process" holding the write lock is a second ``sqlite3``
connection in ``BEGIN IMMEDIATE``, which SQLite treats the same way.
"""

from __future__ import annotations

import logging
import re
import shutil
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from database_helpers import FAIL_SAFE, make_notes, note_ids, wal_size

from trio_supervise.integrations.database import (
    DatabaseAvailability,
    DatabaseError,
    DatabaseUnavailable,
    SQLiteDatabase,
    _sqlite,
    _threads,
    open_database,
)

LOCKED = "the SQLite database is locked by another connection"


@contextmanager
def write_lock_held(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding the database's write lock (until the end of the block)."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield other  # the block may release it early: other.execute("ROLLBACK")
        if other.in_transaction:
            other.execute("ROLLBACK")
    finally:
        other.close()


def statement_started(db: SQLiteDatabase, prefix: str) -> threading.Event:
    """Set once a statement starting with ``prefix`` runs on the write connection.

    SQLite traces a statement when its first step begins, before it asks for a lock.
    """
    started = threading.Event()

    def trace(sql: str) -> None:
        if sql.startswith(prefix):
            started.set()

    db._writer.connection.set_trace_callback(trace)
    return started


# ------------------------------------------------------------------------------ opening


async def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "app.db"
    with pytest.raises(DatabaseError) as excinfo:
        await open_database(path)
    assert str(excinfo.value) == (
        f"cannot open SQLite database {str(path)!r}: unable to open database file;"
        f" the directory {str(path.parent)!r} does not exist; create it first"
    )
    assert isinstance(excinfo.value.__cause__, sqlite3.OperationalError)


async def test_a_file_that_is_no_database_is_named(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database, but long enough to hold a SQLite header" * 20)
    with pytest.raises(
        DatabaseError,
        match=rf"^cannot open SQLite database {re.escape(repr(str(path)))}: file is not a"
        r" database; check that it is a SQLite database file \(or a new name\) and that the"
        r" directory is writable$",
    ):
        await open_database(path)


async def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    async with await open_database(path) as db:
        assert isinstance(db, SQLiteDatabase)
        assert (db.kind, db.path, db.target) == ("sqlite", str(path), str(path))
        assert await db.execute("PRAGMA journal_mode") == [("wal",)]
        assert await db.execute("PRAGMA synchronous") == [(2,)]  # FULL
        await make_notes(db)
        await db.insert("INSERT INTO notes (text) VALUES (?)", ("a",))
        assert wal_size(path) not in (None, 0)


async def test_sqlite_url_and_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    async with await open_database("sqlite:///relative.db") as db:
        await make_notes(db)
    assert (tmp_path / "relative.db").exists()
    async with await open_database(":memory:") as memory:
        assert await memory.execute("PRAGMA journal_mode") == [("memory",)]
        await make_notes(memory)
        assert await memory.insert("INSERT INTO notes (text) VALUES (?)", ("m",)) == 1
        # Each connection to ":memory:" is a database of its own: queries use the writer.
        assert await memory.execute("SELECT text FROM notes") == [("m",)]
        assert isinstance(memory, SQLiteDatabase)
        assert memory._idle_readers == []


# --------------------------------------------------------- the WAL and closing


async def test_flush_checkpoints_the_wal_into_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    async with await open_database(path) as db:
        await make_notes(db)
        for n in range(20):
            await db.insert("INSERT INTO notes (text) VALUES (?)", (f"note {n}",))
        assert wal_size(path) not in (None, 0)
        await db.flush()
        assert wal_size(path) == 0
        # The main file alone now holds every note.
        shutil.copy(path, tmp_path / "copy.db")
    async with await open_database(tmp_path / "copy.db") as copy:
        assert await note_ids(copy) == list(range(1, 21))


async def test_close_folds_the_wal_into_the_file_and_reopening_sees_everything(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.db"
    db = await open_database(path)
    await make_notes(db)
    ids = [await db.insert("INSERT INTO notes (text) VALUES (?)", (f"n{n}",)) for n in range(5)]
    await db.aclose()
    assert wal_size(path) is None
    async with await open_database(path) as again:
        assert await note_ids(again) == ids == [1, 2, 3, 4, 5]
        assert await again.execute("SELECT text FROM notes WHERE id = ?", (3,)) == [("n2",)]


async def test_closing_waits_for_the_call_in_flight_even_when_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    db = await open_database(path)
    await make_notes(db)
    held = trio.Event()
    release = trio.Event()

    async def hold() -> None:
        async with db.transaction() as tx:
            await tx.insert("INSERT INTO notes (text) VALUES (?)", ("held",))
            held.set()
            await release.wait()

    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold)
            await held.wait()
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as inner:
                    inner.start_soon(db.aclose)
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()  # aclose() gives up waiting for the transaction
            assert scope.cancelled_caught
            assert db.closed
            assert wal_size(path) is not None  # still open: the transaction holds it
            release.set()
    # The transaction committed, then closed the connection on its way out.
    assert wal_size(path) is None
    async with await open_database(path) as again:
        assert await again.execute("SELECT text FROM notes") == [("held",)]


# ------------------------------------------------------------------- cancellation


@pytest.mark.parametrize("connection", ["read", "write"])
async def test_sqlite_cancelling_a_running_statement_interrupts_it(
    tmp_path: Path, connection: str
) -> None:
    db = await open_database(tmp_path / "app.db")
    assert isinstance(db, SQLiteDatabase)
    running = threading.Event()
    statement = (
        "WITH RECURSIVE c(x) AS (SELECT running() UNION ALL SELECT 1 FROM c) SELECT count(*) FROM c"
    )
    call: Callable[[], Awaitable[object]]
    if connection == "read":
        await db.execute("SELECT 1")  # opens a read connection, which the query takes next
        [reader] = db._idle_readers
        link = reader.connection
        call = partial(db.execute, statement)
    else:
        link = db._writer.connection
        call = partial(db.executescript, statement)
    # Test-only: a SQL function tells the test that the statement has really started.
    link.create_function("running", 0, lambda: running.set())
    try:
        with trio.fail_after(FAIL_SAFE):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(call)
                    await trio.to_thread.run_sync(running.wait)
                    cancelled_at = trio.current_time()
                    scope.cancel()
            assert scope.cancelled_caught
            assert trio.current_time() - cancelled_at < 1.0
            assert await db.execute("SELECT 1") == [(1,)]
            await db.executescript("SELECT 1")
    finally:
        await db.aclose()


async def test_a_worker_that_will_not_stop_makes_the_database_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    db = await open_database(tmp_path / "app.db")
    assert isinstance(db, SQLiteDatabase)
    monkeypatch.setattr(_threads, "CANCEL_GRACE", 0.2)
    monkeypatch.setattr(db, "_interrupt_sync", lambda timeout: None)  # deaf to interrupts
    running = threading.Event()
    release = threading.Event()

    def block() -> bool:
        running.set()
        return release.wait(FAIL_SAFE)

    # Test-only: a SQL function that blocks its worker thread until released.
    db._writer.connection.create_function("block", 0, block)
    try:
        with trio.fail_after(FAIL_SAFE):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(db.executescript, "SELECT block()")
                    await trio.to_thread.run_sync(running.wait)
                    scope.cancel()
            assert scope.cancelled_caught
        with pytest.raises(
            DatabaseError,
            match=rf"^execute\(\): the sqlite database {re.escape(repr(db.target))} is unusable:"
            r" a cancelled call did not stop within 0.2 seconds and still holds the connection;"
            r" open the database again$",
        ):
            await db.execute("SELECT 1")
        # Readiness must say so: the service cannot work without its database.
        assert (db.availability.available, db.availability.reason) == (
            False,
            "the database is unusable: a cancelled call did not stop",
        )
        await db.aclose()
        assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
            f"{db.target}: a cancelled call did not stop within 0.2 seconds; the database"
            " refuses further calls",
            f"{db.target}: not closing the connection, a cancelled call's thread still uses it",
        ]
    finally:
        release.set()
        # Closing while the released thread still steps its statement would crash sqlite3.
        finished = db._stuck_worker_finished
        if finished is not None:
            await trio.to_thread.run_sync(finished.wait, FAIL_SAFE)
        await trio.to_thread.run_sync(db._writer.connection.close)


# ------------------------------------------------------------- queries beside the writes


async def test_queries_do_not_wait_for_a_write_that_waits_for_another_process(
    tmp_path: Path,
) -> None:
    # Issue 10, item 6: with one connection, a query waited behind an insert that waited
    # SQLITE_BUSY_TIMEOUT (5 s) for another process's write lock: 4.8 s measured.
    path = tmp_path / "app.db"
    async with await open_database(path) as db:
        assert isinstance(db, SQLiteDatabase)
        await make_notes(db)
        await db.insert("INSERT INTO notes (text) VALUES (?)", ("first",))
        inserting = statement_started(db, "INSERT")
        latencies: list[float] = []
        with trio.fail_after(FAIL_SAFE), write_lock_held(path) as other:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(db.insert, "INSERT INTO notes (text) VALUES (?)", ("second",))
                await trio.to_thread.run_sync(inserting.wait)
                assert db._lock.locked()  # the insert holds the write connection, waiting
                for _ in range(5):
                    started = trio.current_time()
                    rows = await db.execute("SELECT text FROM notes ORDER BY id")
                    latencies.append(trio.current_time() - started)
                    assert rows == [("first",)]
                assert db._lock.locked()  # still waiting: the queries did not
                other.execute("ROLLBACK")  # the insert gets the lock now
        assert await db.execute("SELECT text FROM notes ORDER BY id") == [("first",), ("second",)]
    assert max(latencies) < 0.5, latencies


async def test_queries_run_beside_a_transaction_and_see_what_was_committed(
    tmp_path: Path,
) -> None:
    async with await open_database(tmp_path / "app.db") as db:
        await make_notes(db)
        await db.insert("INSERT INTO notes (text) VALUES (?)", ("committed",))
        inside = trio.Event()
        leave = trio.Event()

        async def write() -> None:
            async with db.transaction() as tx:
                await tx.insert("INSERT INTO notes (text) VALUES (?)", ("pending",))
                assert await tx.execute("SELECT count(*) FROM notes") == [(2,)]
                inside.set()
                await leave.wait()

        with trio.fail_after(FAIL_SAFE):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write)
                await inside.wait()
                assert await db.execute("SELECT text FROM notes ORDER BY id") == [("committed",)]
                leave.set()
        assert await db.execute("SELECT text FROM notes ORDER BY id") == [
            ("committed",),
            ("pending",),
        ]


async def test_a_query_that_writes_runs_on_the_write_connection(tmp_path: Path) -> None:
    async with await open_database(tmp_path / "app.db") as db:
        await make_notes(db)
        written = "WITH t(x) AS (VALUES (?)) INSERT INTO notes (text) SELECT x FROM t"
        assert await db.execute(written, ("via with",)) == []
        assert await db.execute("SELECT id, text FROM notes") == [(1, "via with")]
        returned = "WITH t(x) AS (VALUES (?)) INSERT INTO notes (text) SELECT x FROM t RETURNING id"
        assert await db.execute(returned, ("again",)) == [(2,)]


async def test_queries_share_four_read_connections_closed_with_the_database(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.db"
    db = await open_database(path)
    assert isinstance(db, SQLiteDatabase)
    await make_notes(db)
    await db.insert("INSERT INTO notes (text) VALUES (?)", ("a",))
    counted: list[int] = []
    counting = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000)"
        " SELECT count(*) FROM c"
    )

    async def count() -> None:
        [(n,)] = await db.execute(counting)
        counted.append(n)

    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(count)
    assert counted == [100000] * 10
    readers = [reader.connection for reader in db._idle_readers]
    assert len(readers) == 4
    assert readers[0].execute("PRAGMA query_only").fetchall() == [(1,)]
    await db.aclose()
    assert db._idle_readers == []
    for reader in readers:
        with pytest.raises(sqlite3.ProgrammingError, match=r"^Cannot operate on a closed database"):
            reader.execute("SELECT 1")
    assert wal_size(path) is None  # the write connection closed last and removed the WAL


async def test_closing_waits_for_the_queries_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    db = await open_database(path)
    await make_notes(db)
    counted: list[int] = []
    counting = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000)"
        " SELECT count(*) FROM c"
    )

    async def count() -> None:
        [(n,)] = await db.execute(counting)
        counted.append(n)

    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(count)
            await trio.testing.wait_all_tasks_blocked()
            await db.aclose()
            assert counted == [1000000]
    assert wal_size(path) is None


# ---------------------------------------------------------------- another process's lock


async def test_a_lock_held_past_the_busy_timeout_makes_the_database_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_sqlite, "SQLITE_BUSY_TIMEOUT", 0.3)
    caplog.set_level(logging.INFO, logger="trio_supervise.database")
    path = tmp_path / "app.db"
    message = (
        rf"^the SQLite database {re.escape(repr(str(path)))} is locked: another connection"
        r" held its lock for more than 0\.3 seconds \(database is locked\); retry later$"
    )
    async with await open_database(path) as db:
        await make_notes(db)
        opened = db.availability
        assert opened == DatabaseAvailability(True, "", opened.since)
        with trio.fail_after(FAIL_SAFE), write_lock_held(path):
            started = trio.current_time()
            with pytest.raises(DatabaseUnavailable, match=message) as excinfo:
                await db.insert("INSERT INTO notes (text) VALUES (?)", ("lost",))
            assert 0.3 <= trio.current_time() - started < 1.0
            assert excinfo.value.reason == LOCKED
            assert isinstance(excinfo.value.__cause__, sqlite3.OperationalError)
            down = db.availability
            assert (down.available, down.reason) == (False, LOCKED)
            assert down.since > opened.since
            # Queries still work, and do not make the database look available.
            assert await db.execute("SELECT count(*) FROM notes") == [(0,)]
            for call in (
                db.ping,
                partial(db.executescript, "INSERT INTO notes (text) VALUES ('x')"),
                partial(db.migrate, ["CREATE TABLE t (x INTEGER)"]),
            ):
                with pytest.raises(DatabaseUnavailable, match=message):
                    await call()
            with pytest.raises(DatabaseUnavailable, match=message):
                async with db.transaction():
                    pass  # pragma: no cover
            assert db.availability == down
        await db.ping()
        assert db.availability.available
        assert await db.execute("SELECT count(*) FROM notes") == [(0,)]  # nothing written
    records = [
        (r.levelname, r.getMessage()) for r in caplog.records if "available" in r.getMessage()
    ]
    assert len(records) == 2, records
    assert records[0] == ("WARNING", f"{path}: unavailable: {excinfo.value}")
    assert records[1][0] == "INFO"
    assert re.fullmatch(
        rf"{re.escape(str(path))}: available again after \d+\.\d seconds \({LOCKED}\)",
        records[1][1],
    )


async def test_a_call_waiting_for_the_lock_stops_at_once_when_cancelled(tmp_path: Path) -> None:
    # SQLite's own wait for a lock does not heed Connection.interrupt(): a cancelled insert
    # went on waiting the whole SQLITE_BUSY_TIMEOUT (5 s), as long as CANCEL_GRACE, after
    # which the database was given up as unusable (measured: 5.005 s, then unusable).
    path = tmp_path / "app.db"
    async with await open_database(path) as db:
        assert isinstance(db, SQLiteDatabase)
        await make_notes(db)
        inserting = statement_started(db, "INSERT")
        with trio.fail_after(FAIL_SAFE), write_lock_held(path):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(db.insert, "INSERT INTO notes (text) VALUES (?)", ("x",))
                    await trio.to_thread.run_sync(inserting.wait)
                    cancelled_at = trio.current_time()
                    scope.cancel()
            assert scope.cancelled_caught
            assert trio.current_time() - cancelled_at < 0.5
        assert db.availability.available
        assert await db.insert("INSERT INTO notes (text) VALUES (?)", ("after",)) == 1
        assert await note_ids(db) == [1]


async def test_opening_a_file_locked_past_the_busy_timeout_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A new file is in rollback-journal mode; switching it to WAL needs it unlocked.
    monkeypatch.setattr(_sqlite, "SQLITE_BUSY_TIMEOUT", 0.3)
    path = tmp_path / "app.db"
    with sqlite3.connect(path, isolation_level=None) as setup:
        setup.execute("CREATE TABLE t (x INTEGER)")
    setup.close()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        with pytest.raises(
            DatabaseUnavailable,
            match=rf"^cannot open SQLite database {re.escape(repr(str(path)))}: another"
            r" connection held it locked for more than 0\.3 seconds \(database is locked\);"
            r" retry later$",
        ) as excinfo:
            await open_database(path)
        assert excinfo.value.reason == LOCKED
    finally:
        other.close()
    async with await open_database(path) as db:
        assert await db.execute("PRAGMA journal_mode") == [("wal",)]
