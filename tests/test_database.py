"""The database integration: SQLite files and a real PostgreSQL server, in real time.

The calls run in worker threads, so these tests use Trio's real clock (virtual time would
jump while a thread works); ``trio.fail_after`` bounds every wait as a fail-safe only.
Tests taking ``target`` run once on a SQLite file and once on the session's PostgreSQL
server (``postgres_dsn`` in ``conftest.py``), whose ``public`` schema is emptied first.
"""

from __future__ import annotations

import logging
import re
import shutil
import socket
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio
import trio.testing

from trio_supervise import (
    Band,
    ChildSpec,
    Event,
    EventKind,
    SpecError,
    SupervisorSpec,
    supervisor_tree,
)
from trio_supervise.integrations import database
from trio_supervise.integrations.database import (
    MIGRATIONS_TABLE,
    Database,
    DatabaseClosedError,
    DatabaseError,
    PostgresDatabase,
    SQLiteDatabase,
    _open_connection,
    _parse_target,
    _qmark_to_psycopg,
    _with_returning,
    open_database,
)

# Generous: only hit when something is broken.
FAIL_SAFE = 15.0

ACCEPTED = re.escape(
    "a SQLite file path such as 'data/app.db', 'sqlite:///relative/app.db',"
    " 'sqlite:////absolute/app.db', ':memory:', or a PostgreSQL DSN such as"
    " 'postgresql://user:password@localhost:5432/dbname'"
)


def reset_postgres(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")


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


@pytest.fixture
async def pg(postgres_dsn: str) -> AsyncIterator[Database]:
    reset_postgres(postgres_dsn)
    database = await open_database(postgres_dsn)
    try:
        yield database
    finally:
        await database.aclose()


async def make_notes(db: Database) -> None:
    await db.execute(f"CREATE TABLE notes (id {db.auto_id}, text TEXT NOT NULL)")


async def note_ids(db: Database) -> list[int]:
    return [row[0] for row in await db.execute("SELECT id FROM notes ORDER BY id")]


def long_query(db: Database) -> str:
    """A statement that runs for many seconds unless it is interrupted."""
    if db.kind == "postgresql":
        return "SELECT pg_sleep(10)"
    return (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000)"
        " SELECT count(*) FROM c"
    )


def wal_size(path: Path | str) -> int | None:
    """The size of a SQLite database's write-ahead log; None when there is none."""
    wal = Path(f"{path}-wal")
    return wal.stat().st_size if wal.exists() else None


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------- targets


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("app.db", ("sqlite", "app.db")),
        ("/var/lib/app/app.db", ("sqlite", "/var/lib/app/app.db")),
        ("sqlite:///data/app.db", ("sqlite", "data/app.db")),
        ("sqlite:////var/lib/app.db", ("sqlite", "/var/lib/app.db")),
        ("SQLite:///app.db", ("sqlite", "app.db")),
        (":memory:", ("sqlite", ":memory:")),
        ("sqlite://", ("sqlite", ":memory:")),
        ("sqlite:///:memory:", ("sqlite", ":memory:")),
        (Path("data") / "app.db", ("sqlite", "data/app.db")),
        ("postgresql://u:p@db:5432/app", ("postgresql", "postgresql://u:p@db:5432/app")),
        ("postgres://db/app", ("postgresql", "postgres://db/app")),
        ("PostgreSQL://db/app", ("postgresql", "PostgreSQL://db/app")),
    ],
)
def test_accepted_targets(given: object, expected: tuple[str, str]) -> None:
    assert _parse_target(given) == expected


@pytest.mark.parametrize(
    ("given", "error", "message"),
    [
        ("", ValueError, rf"^open_database: target is empty; give {ACCEPTED}$"),
        ("   ", ValueError, rf"^open_database: target is empty; give {ACCEPTED}$"),
        (None, TypeError, rf"^open_database: target must be {ACCEPTED} \(got None\)$"),
        (42, TypeError, rf"^open_database: target must be {ACCEPTED} \(got 42\)$"),
        (b"app.db", TypeError, rf"^open_database: target must be {ACCEPTED} \(got b'app.db'\)$"),
        (
            "mysql://root:secret@db/app",
            ValueError,
            r"^open_database: unsupported database URL scheme 'mysql' in"
            rf" 'mysql://root:\*\*\*@db/app'; give {ACCEPTED}$",
        ),
        (
            "sqlite://server/app.db",
            ValueError,
            r"^open_database: SQLite URL 'sqlite://server/app.db' names no file; write"
            r" 'sqlite:///relative/app.db' \(three slashes\) or 'sqlite:////absolute/app.db'"
            r" \(four\), or 'sqlite:///:memory:'$",
        ),
        ("sqlite:///", ValueError, r"^open_database: SQLite URL 'sqlite:///' names no file"),
        (
            "host=db dbname=app password=secret",
            ValueError,
            r"^open_database: 'host=db dbname=app password=secret' looks like a libpq"
            r" 'key=value' connection string; write it as a URL such as"
            r" 'postgresql://user:password@host:5432/dbname'$",
        ),
    ],
)
async def test_bad_targets(given: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        await open_database(given)


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


async def test_an_unreachable_server_is_named_without_its_password() -> None:
    dsn = f"postgresql://app:secret@127.0.0.1:{closed_port()}/app?connect_timeout=5"
    redacted = dsn.replace(":secret@", ":***@")
    with pytest.raises(DatabaseError) as excinfo:
        await open_database(dsn)
    message = str(excinfo.value)
    assert message.startswith(f"cannot connect to PostgreSQL at {redacted!r}: ")
    assert message.endswith(
        "; check that the server runs and the DSN's host, port, user, password and database name"
    )
    assert "Connection refused" in message
    assert "secret" not in message
    assert isinstance(excinfo.value.__cause__, psycopg.OperationalError)


async def test_a_dsn_without_psycopg_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(
        ImportError,
        match=r"^a PostgreSQL database needs psycopg 3, which is not installed; install the"
        r" extra: pip install 'trio-supervise\[postgres\]'$",
    ):
        await open_database("postgresql://db/app")


async def test_opening_postgres_is_cancellable() -> None:
    # A server that accepts the connection and never answers: connect() would wait for
    # its whole connect_timeout.
    accepted: list[trio.SocketStream] = []
    answered = trio.Event()

    async def silent(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        answered.set()
        await trio.sleep_forever()

    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            dsn = f"postgresql://app@127.0.0.1:{port}/app?sslmode=disable&connect_timeout=60"
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as inner:
                    inner.start_soon(open_database, dsn)
                    await answered.wait()
                    cancelled_at = trio.current_time()
                    scope.cancel()
            assert scope.cancelled_caught
            assert trio.current_time() - cancelled_at < 1.0
            # The abandoned connect() ends when the server hangs up.
            for stream in accepted:
                await stream.aclose()
            nursery.cancel_scope.cancel()


async def test_a_connection_made_after_cancelling_the_open_is_closed() -> None:
    go = threading.Event()
    closed: list[object] = []
    closed_event = threading.Event()
    made = object()

    def connect() -> object:
        go.wait()
        return made

    def close(connection: object) -> None:
        closed.append(connection)
        closed_event.set()

    with trio.fail_after(FAIL_SAFE):
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_open_connection, connect, close)
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
        assert scope.cancelled_caught
        assert closed == []
        go.set()  # the worker connects only now, after the open was given up
        await trio.to_thread.run_sync(closed_event.wait, FAIL_SAFE)
    assert closed == [made]


async def test_a_worker_that_will_not_stop_makes_the_database_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    db = await open_database(tmp_path / "app.db")
    assert isinstance(db, SQLiteDatabase)
    monkeypatch.setattr(database, "CANCEL_GRACE", 0.2)
    monkeypatch.setattr(db, "_interrupt_sync", lambda timeout: None)  # deaf to interrupts
    running = threading.Event()
    release = threading.Event()

    def block() -> bool:
        running.set()
        return release.wait(FAIL_SAFE)

    # Test-only: a SQL function that blocks its worker thread until released.
    db._connection.create_function("block", 0, block)
    try:
        with trio.fail_after(FAIL_SAFE):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(db.execute, "SELECT block()")
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
        await trio.to_thread.run_sync(db._connection.close)


# ------------------------------------------------------------------------------ SQLite


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


async def test_sqlite_cancelling_a_running_statement_interrupts_it(tmp_path: Path) -> None:
    db = await open_database(tmp_path / "app.db")
    assert isinstance(db, SQLiteDatabase)
    running = threading.Event()
    # Test-only: a SQL function tells the test that the statement has really started.
    db._connection.create_function("running", 0, lambda: running.set())
    try:
        with trio.fail_after(FAIL_SAFE):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        db.execute,
                        "WITH RECURSIVE c(x) AS (SELECT running() UNION ALL SELECT 1 FROM c)"
                        " SELECT count(*) FROM c",
                    )
                    await trio.to_thread.run_sync(running.wait)
                    cancelled_at = trio.current_time()
                    scope.cancel()
            assert scope.cancelled_caught
            assert trio.current_time() - cancelled_at < 1.0
            assert await db.execute("SELECT 1") == [(1,)]
    finally:
        await db.aclose()


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


# --------------------------------------------------------------------- both databases


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


# --------------------------------------------------------------------------- shutdown


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


# ------------------------------------------------------------------------- PostgreSQL


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT ?", "SELECT %s"),
        ("SELECT ?, ?", "SELECT %s, %s"),
        ("SELECT '?', ?", "SELECT '?', %s"),
        ("SELECT 'it''s ?', ?", "SELECT 'it''s ?', %s"),
        ('SELECT "we?rd", ?', 'SELECT "we?rd", %s'),
        ('SELECT "a""?", ?', 'SELECT "a""?", %s'),
        ("SELECT E'\\' ?', ?", "SELECT E'\\' ?', %s"),
        ("SELECT '\\', ?", "SELECT '\\', %s"),
        ("SELECT $$ ? $$, $t$ ?$$ $t$, ?", "SELECT $$ ? $$, $t$ ?$$ $t$, %s"),
        ("SELECT $1, a$b, ?", "SELECT $1, a$b, %s"),
        ("SELECT 1 -- ?\n, ?", "SELECT 1 -- ?\n, %s"),
        ("SELECT /* ? /* ? */ ? */ ?", "SELECT /* ? /* ? */ ? */ %s"),
        ("SELECT 10 % 3, '5%', ?", "SELECT 10 %% 3, '5%%', %s"),
        ("SELECT 'unterminated ?", "SELECT 'unterminated ?"),
    ],
)
def test_question_marks_become_psycopg_placeholders(sql: str, expected: str) -> None:
    assert _qmark_to_psycopg(sql) == expected


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("INSERT INTO t (a) VALUES (?)", "INSERT INTO t (a) VALUES (?)\nRETURNING id"),
        ("INSERT INTO t (a) VALUES (?) ;  \n", "INSERT INTO t (a) VALUES (?)\nRETURNING id"),
        ("INSERT INTO t (a) VALUES (?); -- c", "INSERT INTO t (a) VALUES (?)\nRETURNING id"),
        ("INSERT INTO t (a) -- c\nVALUES (?)", "INSERT INTO t (a) -- c\nVALUES (?)\nRETURNING id"),
        (
            "INSERT INTO t (a) VALUES ('returning')",
            "INSERT INTO t (a) VALUES ('returning')\nRETURNING id",
        ),
        ("INSERT INTO t (a) VALUES (?) RETURNING a", "INSERT INTO t (a) VALUES (?) RETURNING a"),
        (
            "insert into t (returning_x) values (1)",
            "insert into t (returning_x) values (1)\nRETURNING id",
        ),
    ],
)
def test_insert_appends_returning_on_postgres(sql: str, expected: str) -> None:
    assert _with_returning(sql, "id") == expected


async def test_postgres_quoting_forms_on_the_server(pg: Database) -> None:
    rows = await pg.execute(
        'SELECT E\'it\\\'s ?\', $$ ? $$, $tag$ 100% $tag$, "?".x, ? FROM (SELECT 1 AS x) AS "?"',
        (5,),
    )
    assert rows == [("it's ?", " ? ", " 100% ", 1, 5)]


async def test_postgres_cancel_stops_the_query_on_the_server(
    pg: Database, postgres_dsn: str
) -> None:
    assert isinstance(pg, PostgresDatabase)
    assert (pg.kind, pg.dsn) == ("postgresql", postgres_dsn)
    [(pid,)] = await pg.execute("SELECT pg_backend_pid()")
    activity = "SELECT state, query FROM pg_stat_activity WHERE pid = ?"
    async with await open_database(postgres_dsn) as observer:
        with trio.fail_after(FAIL_SAFE):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pg.execute, "SELECT pg_sleep(10)")
                    while True:  # until the server runs it
                        rows = await observer.execute(activity, (pid,))
                        if rows == [("active", "SELECT pg_sleep(10)")]:
                            break
                        await trio.sleep(0.01)
                    cancelled_at = trio.current_time()
                    scope.cancel()
            assert scope.cancelled_caught
            # The call returned only once the server had stopped the query.
            assert trio.current_time() - cancelled_at < 2.0
            assert await observer.execute(activity, (pid,)) == [("idle", "SELECT pg_sleep(10)")]
            assert await pg.execute("SELECT pg_backend_pid()") == [(pid,)]


async def test_postgres_reconnects_after_losing_the_connection(
    pg: Database, postgres_dsn: str
) -> None:
    await make_notes(pg)
    [(pid,)] = await pg.execute("SELECT pg_backend_pid()")
    async with await open_database(postgres_dsn) as admin:
        assert await admin.execute("SELECT pg_terminate_backend(?)", (pid,)) == [(True,)]
        with trio.fail_after(FAIL_SAFE):
            while True:  # until the backend has gone
                gone = "SELECT count(*) FROM pg_stat_activity WHERE pid = ?"
                if await admin.execute(gone, (pid,)) == [(0,)]:
                    break
                await trio.sleep(0.01)
    with pytest.raises(psycopg.OperationalError):
        await pg.execute("SELECT 1")
    note = await pg.insert("INSERT INTO notes (text) VALUES (?)", ("after",))
    assert await pg.execute("SELECT text FROM notes WHERE id = ?", (note,)) == [("after",)]
    [(new_pid,)] = await pg.execute("SELECT pg_backend_pid()")
    assert new_pid != pid


async def test_postgres_flush_needs_no_connection(pg: Database, postgres_dsn: str) -> None:
    # Issue 10, item 5: with PostgreSQL down, the shutdown's flush hook reconnected first,
    # failed, and the service exited 1, for a flush that has nothing to do on PostgreSQL.
    await make_notes(pg)
    [(pid, name)] = await pg.execute("SELECT pg_backend_pid(), current_database()")
    other_database = postgres_dsn.rsplit("/", 1)[0] + "/postgres"
    async with await open_database(other_database) as admin:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            await admin.execute("SELECT pg_terminate_backend(?)", (pid,))
            with pytest.raises(psycopg.OperationalError):
                await pg.execute("SELECT 1")  # the loss is seen; a reconnect would fail now
            await pg.flush()
            [flush, close] = pg.shutdown_hooks()
            await flush.fn()
            await close.fn()  # and closing needs no server either
        finally:
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


async def test_postgres_flush_is_a_no_op_that_waits_its_turn(pg: Database) -> None:
    await make_notes(pg)
    await pg.insert("INSERT INTO notes (text) VALUES (?)", ("x",))
    await pg.flush()
    assert await pg.execute("SELECT text FROM notes") == [("x",)]
