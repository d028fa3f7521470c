"""The ``Database`` API on both databases: a SQLite file and a real PostgreSQL server.

Tests taking ``target`` or ``db`` run once on a SQLite file and once on the session's
PostgreSQL server (``postgres_dsn`` in ``conftest.py``), whose ``public`` schema is emptied
first. What only one database does is in ``test_database_sqlite.py`` and
``test_database_postgres.py``; migrations are tested here, through ``migrate()``.
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio
import trio.testing
from database_helpers import FAIL_SAFE, long_query, make_notes, note_ids, reset_postgres, wal_size

from trio_supervise import (
    Band,
    ChildSpec,
    Event,
    EventKind,
    SpecError,
    SupervisorSpec,
    supervisor_tree,
)
from trio_supervise.integrations.database import (
    MIGRATIONS_TABLE,
    Database,
    DatabaseAvailability,
    DatabaseClosedError,
    DatabaseError,
    open_database,
)


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "test.db")
    dsn: str = request.getfixturevalue("postgres_dsn")
    reset_postgres(dsn)
    return dsn


@pytest.fixture
async def db(target: str) -> AsyncIterator[Database]:
    database = await open_database(target)
    try:
        yield database
    finally:
        await database.aclose()


async def test_insert_and_select(db: Database) -> None:
    await make_notes(db)
    first = await db.insert("INSERT INTO notes (text) VALUES (?)", ("first",))
    second = await db.insert("INSERT INTO notes (text) VALUES (?)", ["second"])
    assert (first, second) == (1, 2)
    assert await db.execute("SELECT id, text FROM notes ORDER BY id") == [
        (1, "first"),
        (2, "second"),
    ]
    assert await db.execute("SELECT text FROM notes WHERE id = ?", (2,)) == [("second",)]
    assert await db.execute("SELECT text FROM notes WHERE id = ?", (99,)) == []
    assert await db.execute("UPDATE notes SET text = ? WHERE id = ?", ("1st", 1)) == []
    assert await db.execute("SELECT text FROM notes WHERE id = 1") == [("1st",)]


async def test_values_round_trip(db: Database) -> None:
    blob = "BLOB" if db.kind == "sqlite" else "BYTEA"
    await db.execute(f"CREATE TABLE v (i INTEGER, r REAL, t TEXT, b {blob}, n INTEGER)")
    values = (-(2**31), 2.5, "naïve ☃ '?' %s", b"\x00\xff", None)
    await db.execute("INSERT INTO v VALUES (?, ?, ?, ?, ?)", values)
    assert await db.execute("SELECT i, r, t, b, n FROM v") == [values]


async def test_question_marks_and_percents_in_literals_are_kept(db: Database) -> None:
    rows = await db.execute("SELECT '?' AS \"q?\", '100%', ? /* a ? in a comment */, 7 % 4", ("x",))
    assert rows == [("?", "100%", "x", 3)]
    assert await db.execute("SELECT '50%'") == [("50%",)]


async def test_ids_come_from_returning_and_are_the_new_rows(db: Database) -> None:
    await db.execute(f"CREATE TABLE items (item_id {db.auto_id}, name TEXT UNIQUE)")
    assert await db.insert("INSERT INTO items (name) VALUES (?)", ("a",), id_column="item_id") == 1
    own = await db.insert("INSERT INTO items (name) VALUES (?) RETURNING item_id", ("b",))
    assert own == 2
    several = await db.insert(
        "INSERT INTO items (name) VALUES (?), (?);", ("c", "d"), id_column="item_id"
    )
    assert several == 4
    assert await db.execute("SELECT item_id, name FROM items ORDER BY item_id") == [
        (1, "a"),
        (2, "b"),
        (3, "c"),
        (4, "d"),
    ]


async def test_insert_without_a_new_row_raises_and_writes_nothing(db: Database) -> None:
    await db.execute(f"CREATE TABLE items (id {db.auto_id}, name TEXT UNIQUE)")
    await db.insert("INSERT INTO items (name) VALUES (?)", ("a",))
    with pytest.raises(
        DatabaseError,
        match=r"^insert\(\): the statement inserted no row \(did INSERT OR IGNORE or ON CONFLICT"
        r" DO NOTHING skip it\?\), so there is no id to return; use execute\(\) for statements"
        r" that may insert nothing$",
    ):
        await db.insert("INSERT INTO items (name) VALUES (?) ON CONFLICT DO NOTHING", ("a",))
    assert await db.execute("SELECT id, name FROM items") == [(1, "a")]


async def test_insert_with_a_text_returning_value_is_refused(db: Database) -> None:
    await db.execute("CREATE TABLE tags (name TEXT)")
    with pytest.raises(
        DatabaseError,
        match=r"^insert\(\): the statement's RETURNING clause gave 'x' as the new row's id, not"
        r" an integer; return the integer id column first$",
    ):
        await db.insert("INSERT INTO tags (name) VALUES (?) RETURNING name", ("x",))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda db: db.insert("UPDATE notes SET text = ?", ("x",)),
            ValueError,
            r"^insert\(\): expected an INSERT statement \(got 'UPDATE notes SET text = \?'\);"
            r" use execute\(\) for other statements$",
        ),
        (
            lambda db: db.insert("INSERT INTO notes (text) VALUES ('x')", id_column="id; DROP"),
            ValueError,
            r"^insert\(\): id_column must be a plain column name such as 'id' \(got 'id; DROP'\)$",
        ),
        (
            lambda db: db.execute("SELECT ?", "abc"),
            TypeError,
            r"^execute\(\): params must be a tuple or list of values, one per '\?' placeholder"
            r" \(got 'abc'\); for a single value write \(value,\)$",
        ),
        (
            lambda db: db.execute("SELECT ?", {"a": 1}),
            TypeError,
            r"^execute\(\): params must be a tuple or list of values.* \(got \{'a': 1\}\)",
        ),
        (
            lambda db: db.insert("INSERT INTO notes (text) VALUES (?)", 5),
            TypeError,
            r"^insert\(\): params must be a tuple or list of values.* \(got 5\)",
        ),
        (
            lambda db: db.execute("  "),
            ValueError,
            r"^execute\(\): sql is empty; give one SQL statement$",
        ),
        (
            lambda db: db.execute(b"SELECT 1"),
            TypeError,
            r"^execute\(\): sql must be a string of SQL \(got b'SELECT 1'\)$",
        ),
        (
            lambda db: db.migrate("CREATE TABLE t (x INTEGER)"),
            TypeError,
            r"^migrate\(\): statements must be a list of SQL statements, one per migration"
            r" \(got 'CREATE TABLE t \(x INTEGER\)'\)$",
        ),
        (
            lambda db: db.migrate(["CREATE TABLE t (x INTEGER)", ""]),
            ValueError,
            r"^migrate\(\) statement 2: sql is empty; give one SQL statement$",
        ),
    ],
)
async def test_bad_arguments(
    db: Database, call: Callable[[Any], Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        await call(db)
    assert await db.execute("SELECT 1") == [(1,)]


async def test_sql_errors_are_the_drivers_and_leave_the_connection_usable(db: Database) -> None:
    await make_notes(db)
    await db.insert("INSERT INTO notes (id, text) VALUES (?, ?)", (1, "a"))
    syntax = sqlite3.OperationalError if db.kind == "sqlite" else psycopg.errors.SyntaxError
    with pytest.raises(syntax):
        await db.execute("SELEKT 1")
    unique = sqlite3.IntegrityError if db.kind == "sqlite" else psycopg.errors.UniqueViolation
    with pytest.raises(unique):
        await db.insert("INSERT INTO notes (id, text) VALUES (?, ?)", (1, "b"))
    assert await db.execute("SELECT id, text FROM notes") == [(1, "a")]


async def test_executescript_is_all_or_nothing(db: Database) -> None:
    with pytest.raises((sqlite3.OperationalError, psycopg.errors.UndefinedTable)):
        await db.executescript(
            "CREATE TABLE a (x INTEGER);\nINSERT INTO a VALUES (1);\n"
            "INSERT INTO missing VALUES (2);"
        )
    tables = (
        "SELECT name FROM sqlite_master WHERE type = 'table'"
        if db.kind == "sqlite"
        else "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    )
    assert await db.execute(tables) == []
    await db.executescript(
        "CREATE TABLE a (x INTEGER); -- the first\nINSERT INTO a VALUES (1);\n"
        "INSERT INTO a VALUES (2) -- no semicolon at the end"
    )
    assert await db.execute("SELECT x FROM a ORDER BY x") == [(1,), (2,)]


# ---------------------------------------------------------------------------- migrations


async def test_migrate_applies_each_statement_once(target: str) -> None:
    async with await open_database(target) as db:
        schema = [
            f"CREATE TABLE notes (id {db.auto_id}, text TEXT NOT NULL)",
            "CREATE INDEX notes_text ON notes (text)",
        ]
        assert await db.migrate(schema) == 2
        assert await db.migrate(schema) == 0
        await db.insert("INSERT INTO notes (text) VALUES (?)", ("kept",))
    async with await open_database(target) as db:
        assert await db.migrate(schema) == 0
        schema.append("ALTER TABLE notes ADD COLUMN done INTEGER NOT NULL DEFAULT 0")
        assert await db.migrate(schema) == 1
        assert await db.execute("SELECT text, done FROM notes") == [("kept", 0)]
        assert [row[0] for row in await db.execute(f"SELECT version FROM {MIGRATIONS_TABLE}")] == [
            1,
            2,
            3,
        ]


async def test_migrate_refuses_changed_or_missing_migrations(db: Database) -> None:
    schema = ["CREATE TABLE a (x INTEGER)", "CREATE TABLE b (x INTEGER)"]
    await db.migrate(schema)
    target = re.escape(repr(db.target))
    with pytest.raises(
        DatabaseError,
        match=rf"^migrate\(\): migration 2 was changed after it was applied to {target} \(now"
        r" 'CREATE TABLE b \(y INTEGER\)'\); restore its text and append a new statement for"
        r" the change$",
    ):
        await db.migrate([schema[0], "CREATE TABLE b (y INTEGER)", "CREATE TABLE c (x INTEGER)"])
    with pytest.raises(
        DatabaseError,
        match=rf"^migrate\(\): {target} has 2 migrations applied but only 1 were given; is this"
        r" an older version of the program\? Never remove an applied migration$",
    ):
        await db.migrate(schema[:1])
    # Nothing of the refused calls ran.
    with pytest.raises((sqlite3.OperationalError, psycopg.errors.UndefinedTable)):
        await db.execute("SELECT x FROM c")


async def test_a_failing_migration_applies_none_of_the_pending(db: Database) -> None:
    with pytest.raises((sqlite3.OperationalError, psycopg.errors.SyntaxError)):
        await db.migrate(["CREATE TABLE a (x INTEGER)", "CREATE TABLEX b (x INTEGER)"])
    assert await db.migrate(["CREATE TABLE a (x INTEGER)"]) == 1
    assert await db.execute(f"SELECT version FROM {MIGRATIONS_TABLE}") == [(1,)]


# ----------------------------------------------------------------- transactions, closing


async def test_concurrent_writers_are_serialised(db: Database) -> None:
    await make_notes(db)
    ids: list[int] = []

    async def writer(name: str) -> None:
        for n in range(25):
            ids.append(await db.insert("INSERT INTO notes (text) VALUES (?)", (f"{name}-{n}",)))

    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery:
            for w in range(8):
                nursery.start_soon(writer, f"w{w}")
    assert sorted(ids) == list(range(1, 201))
    assert await db.execute("SELECT count(*), count(DISTINCT text) FROM notes") == [(200, 200)]
    if db.kind == "sqlite":
        assert await db.execute("PRAGMA integrity_check") == [("ok",)]


async def test_a_transaction_commits_at_the_end(db: Database) -> None:
    await make_notes(db)
    async with db.transaction() as tx:
        first = await tx.insert("INSERT INTO notes (text) VALUES (?)", ("a",))
        await tx.execute("INSERT INTO notes (text) VALUES (?)", (f"after {first}",))
        assert await tx.execute("SELECT count(*) FROM notes") == [(2,)]
    assert await db.execute("SELECT text FROM notes ORDER BY id") == [("a",), ("after 1",)]


class Oops(Exception):
    pass


async def test_a_transaction_rolls_back_on_error_and_on_cancel(db: Database) -> None:
    await make_notes(db)

    async def fail_inside() -> None:
        async with db.transaction() as tx:
            await tx.insert("INSERT INTO notes (text) VALUES (?)", ("lost",))
            raise Oops("inside")

    with pytest.raises(Oops, match=r"^inside$"):
        await fail_inside()
    with trio.CancelScope() as scope:
        async with db.transaction() as tx:
            await tx.insert("INSERT INTO notes (text) VALUES (?)", ("lost too",))
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert await db.execute("SELECT count(*) FROM notes") == [(0,)]
    # The rolled-back transactions left the connection idle: this commits on its own.
    await db.insert("INSERT INTO notes (text) VALUES (?)", ("kept",))
    assert await db.execute("SELECT text FROM notes") == [("kept",)]


async def test_a_transaction_holds_the_database_and_refuses_misuse(db: Database) -> None:
    await make_notes(db)
    order: list[str] = []

    async def other() -> None:
        await db.insert("INSERT INTO notes (text) VALUES (?)", ("other",))
        order.append("other wrote")

    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery:
            async with db.transaction() as tx:
                nursery.start_soon(other)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(
                    DatabaseError,
                    match=r"^execute\(\) was called inside `async with db.transaction\(\) as tx`"
                    r" by the task that holds the transaction, which would wait for itself; use"
                    r" tx.execute\(\) and tx.insert\(\) inside the transaction$",
                ):
                    await db.execute("SELECT 1")
                await tx.insert("INSERT INTO notes (text) VALUES (?)", ("tx",))
                order.append("tx wrote")
            order.append("tx committed")
    assert order == ["tx wrote", "tx committed", "other wrote"]
    with pytest.raises(
        DatabaseError,
        match=r"^tx.execute\(\): the transaction has ended; use the Transaction only inside its"
        r" `async with db.transaction\(\) as tx` block$",
    ):
        await tx.execute("SELECT 1")
    assert await db.execute("SELECT text FROM notes ORDER BY id") == [("tx",), ("other",)]


async def test_closing_inside_a_transaction_closes_after_it(target: str) -> None:
    db = await open_database(target)
    await make_notes(db)
    async with db.transaction() as tx:
        await db.aclose()
        assert db.closed
        await tx.insert("INSERT INTO notes (text) VALUES (?)", ("last",))
    with pytest.raises(DatabaseClosedError):
        await db.execute("SELECT 1")
    async with await open_database(target) as again:
        assert await again.execute("SELECT text FROM notes") == [("last",)]


async def test_calls_after_close_raise(target: str) -> None:
    db = await open_database(target)
    assert not db.closed
    await db.aclose()
    await db.aclose()  # idempotent
    assert db.closed
    assert repr(db) == f"<{type(db).__name__} {db.target!r} closed>"
    calls: dict[str, Callable[[], Any]] = {
        "execute()": lambda: db.execute("SELECT 1"),
        "insert()": lambda: db.insert("INSERT INTO notes (text) VALUES ('x')"),
        "executescript()": lambda: db.executescript("SELECT 1"),
        "migrate()": lambda: db.migrate(["SELECT 1"]),
        "flush()": lambda: db.flush(),
        "ping()": lambda: db.ping(),
    }
    for what, call in calls.items():
        with pytest.raises(
            DatabaseClosedError,
            match=rf"^{re.escape(what)}: the {db.kind} database {re.escape(repr(db.target))} is"
            r" closed; open it again with open_database\(\)$",
        ):
            await call()
    with pytest.raises(DatabaseClosedError, match=r"^transaction\(\): the "):
        async with db.transaction():
            pass


async def test_cancelling_a_call_in_flight_leaves_the_connection_usable(db: Database) -> None:
    # Cancelled at once, the statement may not have started when the first interrupt goes
    # out; the interrupts repeat until the worker has returned.
    with trio.fail_after(FAIL_SAFE):
        for _ in range(10):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(db.execute, long_query(db))
                    await trio.testing.wait_all_tasks_blocked()
                    scope.cancel()
            assert scope.cancelled_caught
            assert await db.execute("SELECT 1") == [(1,)]


async def test_a_cancelled_insert_in_a_transaction_is_rolled_back(db: Database) -> None:
    await make_notes(db)
    with trio.fail_after(FAIL_SAFE), trio.CancelScope() as scope:
        async with db.transaction() as tx:
            await tx.insert("INSERT INTO notes (text) VALUES (?)", ("a",))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(tx.execute, long_query(db))
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
    assert scope.cancelled_caught
    assert await db.execute("SELECT count(*) FROM notes") == [(0,)]


async def test_open_and_close_are_logged_without_the_password(
    target: str, caplog: pytest.LogCaptureFixture
) -> None:
    if target.startswith("postgresql://"):
        target = target.replace("postgres@", "postgres:secret@")  # trust auth ignores it
    caplog.set_level(logging.INFO, logger="trio_supervise.database")
    db = await open_database(target)
    await db.aclose()
    shown = target.replace(":secret@", ":***@")
    assert db.target == shown
    records = [r for r in caplog.records if r.name.startswith("trio_supervise")]
    assert [(r.name, r.levelname, r.getMessage()) for r in records] == [
        ("trio_supervise.database", "INFO", f"opened {db.kind} database {shown}"),
        ("trio_supervise.database", "INFO", f"closing {db.kind} database {shown}"),
        ("trio_supervise.database", "INFO", f"closed {db.kind} database {shown}"),
    ]
    assert "secret" not in repr(db)


# ------------------------------------------------------------------------------ shutdown


async def test_shutdown_hooks_are_in_the_flush_and_close_bands() -> None:
    async with await open_database(":memory:") as db:
        flush, close = db.shutdown_hooks()
        assert (flush.name, flush.priority, flush.timeout) == ("database: flush", Band.FLUSH, 5.0)
        assert (close.name, close.priority, close.timeout) == ("database: close", Band.CLOSE, 5.0)
        named = db.shutdown_hooks(name="cache", flush_timeout=1.0, close_timeout=None)
        assert [(h.name, h.priority, h.timeout) for h in named] == [
            ("cache: flush", 20, 1.0),
            ("cache: close", 30, None),
        ]
        with pytest.raises(SpecError, match=r"^ShutdownHook 'database: flush': timeout must be"):
            db.shutdown_hooks(flush_timeout=-1)


async def test_the_tree_stops_writers_then_flushes_then_closes(target: str) -> None:
    db = await open_database(target)
    await make_notes(db)
    acknowledged: list[int] = []
    order: list[str] = []
    enough = trio.Event()

    async def writer() -> None:
        while True:
            note = await db.insert("INSERT INTO notes (text) VALUES (?)", ("note",))
            acknowledged.append(note)
            order.append("write")
            if len(acknowledged) == 10:
                enough.set()

    def listen(event: Event) -> None:
        if event.kind in (EventKind.TERMINATED, EventKind.HOOK_FINISHED):
            order.append(f"{event.kind.name} {event.path}")

    spec = SupervisorSpec("app", [ChildSpec("writer", writer)])
    with trio.fail_after(FAIL_SAFE):
        async with supervisor_tree(spec, hooks=db.shutdown_hooks(), shutdown_deadline=10) as tree:
            tree.add_event_listener(listen)
            await enough.wait()
    last_write = max(i for i, step in enumerate(order) if step == "write")
    assert order.count("write") == len(acknowledged) >= 10
    assert order[last_write + 1 :] == [
        "TERMINATED writer",
        "HOOK_FINISHED supervisor",
        "HOOK_FINISHED database: flush",
        "HOOK_FINISHED database: close",
    ]
    report = tree.shutdown_report
    assert report is not None
    hooks = {hook.name: hook for hook in report.hooks}
    assert {name: hook.status for name, hook in hooks.items()} == {
        "supervisor": "ok",
        "database: flush": "ok",
        "database: close": "ok",
    }
    flush, close = hooks["database: flush"], hooks["database: close"]
    assert flush.started is not None
    assert close.started is not None
    assert close.started >= flush.started + flush.duration
    assert db.closed
    with pytest.raises(DatabaseClosedError):
        await db.insert("INSERT INTO notes (text) VALUES (?)", ("late",))
    if db.kind == "sqlite":
        assert wal_size(target) is None
    async with await open_database(target) as again:
        stored = await note_ids(again)
    # Every acknowledged write is there; the one cancelled in flight may be too.
    assert set(acknowledged) <= set(stored)
    assert len(stored) - len(acknowledged) in (0, 1)


async def test_the_flush_hook_of_a_closed_database_does_nothing(tmp_path: Path) -> None:
    db = await open_database(tmp_path / "app.db")
    await db.aclose()
    spec = SupervisorSpec("app", [])
    with trio.fail_after(FAIL_SAFE):
        async with supervisor_tree(spec, hooks=db.shutdown_hooks()) as tree:
            pass
    assert tree.shutdown_report is not None
    assert [(hook.name, hook.status) for hook in tree.shutdown_report.hooks] == [
        ("supervisor", "ok"),
        ("database: flush", "ok"),
        ("database: close", "ok"),
    ]


# ------------------------------------------------------------------------- availability


async def test_a_database_starts_available_and_a_ping_keeps_it(db: Database) -> None:
    opened = db.availability
    assert opened == DatabaseAvailability(True, "", opened.since)
    assert opened.since <= trio.current_time()
    await db.ping()
    assert db.availability == opened  # no change, no new since


async def test_monitor_pings_until_the_database_is_closed(target: str) -> None:
    db = await open_database(target)
    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(db.monitor, 0.01))
            assert await db.execute("SELECT 1") == [(1,)]
            await db.aclose()
        # It returned by itself once the database was closed.
    assert db.availability.available is False
    assert db.availability.reason == "the database is closed"
    with pytest.raises(DatabaseClosedError, match=r"^ping\(\): the "):
        await db.ping()


@pytest.mark.parametrize(
    ("interval", "message"),
    [
        (0, r"^monitor\(\): interval must be > 0 and finite \(got 0\)$"),
        (-1.5, r"^monitor\(\): interval must be > 0 and finite \(got -1\.5\)$"),
        (math.inf, r"^monitor\(\): interval must be > 0 and finite \(got inf\)$"),
        (True, r"^monitor\(\): interval must be a finite number > 0 \(got True\)$"),
        ("5", r"^monitor\(\): interval must be a finite number > 0 \(got '5'\)$"),
    ],
)
async def test_monitor_refuses_a_bad_interval(interval: Any, message: str) -> None:
    async with await open_database(":memory:") as db:
        with pytest.raises(ValueError, match=message):
            await db.monitor(interval)


async def test_ping_inside_the_callers_transaction_is_refused(db: Database) -> None:
    async with db.transaction():
        with pytest.raises(DatabaseError, match=r"^ping\(\) was called inside `async with"):
            await db.ping()
