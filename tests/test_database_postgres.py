"""PostgreSQL (``_postgres``): a real server, its outages, cancelling on the server.

The session's server (``postgres_dsn`` in ``conftest.py``), its ``public`` schema emptied
for each test. An outage is the server cut off behind a TCP proxy (``database_helpers.Proxy``):
its connections dropped, new ones refused, as when the server stops or the network goes.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import AsyncIterator
from functools import partial

import psycopg
import pytest
import trio
from database_helpers import (
    FAIL_SAFE,
    Proxy,
    closed_port,
    make_notes,
    reset_postgres,
    server_port,
    through,
)

from trio_supervise.integrations.database import (
    Database,
    DatabaseUnavailable,
    PostgresDatabase,
    open_database,
)

LOST = "lost the connection to the PostgreSQL server"
CANNOT_CONNECT = "cannot connect to the PostgreSQL server"


@pytest.fixture
async def pg(postgres_dsn: str) -> AsyncIterator[Database]:
    reset_postgres(postgres_dsn)
    database = await open_database(postgres_dsn)
    try:
        yield database
    finally:
        await database.aclose()


# ------------------------------------------------------------------------------ opening


async def test_an_unreachable_server_is_named_without_its_password() -> None:
    dsn = f"postgresql://app:secret@127.0.0.1:{closed_port()}/app?connect_timeout=5"
    redacted = dsn.replace(":secret@", ":***@")
    with pytest.raises(DatabaseUnavailable) as excinfo:
        await open_database(dsn)
    assert excinfo.value.reason == CANNOT_CONNECT
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


# ----------------------------------------------------------------- on the server


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


# ------------------------------------------------------- losing the connection


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
    with pytest.raises(
        DatabaseUnavailable,
        match=rf"^lost the connection to PostgreSQL at {re.escape(repr(pg.target))}:"
        r" terminating connection due to administrator command; the next call reconnects$",
    ) as excinfo:
        await pg.execute("SELECT 1")
    assert excinfo.value.reason == LOST
    assert isinstance(excinfo.value.__cause__, psycopg.errors.AdminShutdown)
    assert not pg.availability.available
    note = await pg.insert("INSERT INTO notes (text) VALUES (?)", ("after",))
    assert await pg.execute("SELECT text FROM notes WHERE id = ?", (note,)) == [("after",)]
    [(new_pid,)] = await pg.execute("SELECT pg_backend_pid()")
    assert new_pid != pid
    assert pg.availability.available


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
            with pytest.raises(DatabaseUnavailable):
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


# ------------------------------------------------------------------------------- outages


async def test_a_server_outage_raises_database_unavailable_until_it_is_back(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    reset_postgres(postgres_dsn)
    caplog.set_level(logging.INFO, logger="trio_supervise.database")
    proxy = Proxy(server_port(postgres_dsn))
    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.run)
            async with await open_database(through(proxy, postgres_dsn)) as db:
                target = re.escape(repr(db.target))
                await make_notes(db)
                await db.insert("INSERT INTO notes (text) VALUES (?)", ("before",))
                proxy.down()
                with pytest.raises(
                    DatabaseUnavailable,
                    match=rf"(?s)^lost the connection to PostgreSQL at {target}: .+; the next call"
                    r" reconnects$",
                ) as lost:
                    await db.insert("INSERT INTO notes (text) VALUES (?)", ("lost",))
                assert lost.value.reason == LOST
                assert isinstance(lost.value.__cause__, psycopg.OperationalError)
                down = db.availability
                assert (down.available, down.reason) == (False, LOST)
                # The next call tries to reconnect, and says why it cannot.
                for call in (
                    partial(db.execute, "SELECT 1"),
                    db.ping,
                    partial(db.executescript, "SELECT 1"),
                ):
                    with pytest.raises(
                        DatabaseUnavailable,
                        match=rf"^cannot connect to PostgreSQL at {target}: .*Connection refused",
                    ) as refused:
                        await call()
                    assert refused.value.reason == CANNOT_CONNECT
                assert db.availability.reason == CANNOT_CONNECT
                assert db.availability.since == down.since  # one outage, since the loss
                await db.flush()  # nothing to do on PostgreSQL, with or without a server
                await proxy.up()
                await db.ping()
                assert db.availability.available
                assert await db.execute("SELECT text FROM notes ORDER BY id") == [("before",)]
            proxy.stop()
    messages = [
        (r.levelname, r.getMessage()) for r in caplog.records if "available" in r.getMessage()
    ]
    assert [level for level, _ in messages] == ["WARNING", "WARNING", "INFO"], messages
    assert messages[0][1].startswith(f"{db.target}: unavailable: lost the connection")
    assert messages[1][1].startswith(f"{db.target}: unavailable: cannot connect")
    assert re.fullmatch(
        rf"{re.escape(db.target)}: available again after \d+\.\d seconds \({CANNOT_CONNECT}\)",
        messages[2][1],
    )


async def test_monitor_follows_an_outage_without_calls(postgres_dsn: str) -> None:
    reset_postgres(postgres_dsn)
    proxy = Proxy(server_port(postgres_dsn))

    async def wait_for(available: bool) -> None:
        while db.availability.available is not available:  # noqa: ASYNC110 - no event for it
            await trio.sleep(0.01)

    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.run)
            db = await open_database(through(proxy, postgres_dsn))
            async with trio.open_nursery() as watching:
                await watching.start(db.monitor, 0.05)
                assert db.availability.available
                proxy.down()
                await wait_for(False)
                assert db.availability.reason in (LOST, CANNOT_CONNECT)
                await proxy.up()
                await wait_for(True)
                await db.aclose()  # the monitor returns by itself
            assert (db.availability.available, db.availability.reason) == (
                False,
                "the database is closed",
            )
            proxy.stop()


async def test_an_error_of_the_server_on_a_live_connection_is_the_drivers(pg: Database) -> None:
    # A statement timeout is an OperationalError too, but the server answered.
    await pg.execute("SET statement_timeout = 10")
    with pytest.raises(psycopg.errors.QueryCanceled):
        await pg.execute("SELECT pg_sleep(1)")
    assert pg.availability.available
