"""What the database tests share: small schema helpers, and a TCP proxy to cut a server off.

The calls run in worker threads, so the database tests use Trio's real clock (virtual time
would jump while a thread works); ``trio.fail_after(FAIL_SAFE)`` bounds every wait as a
fail-safe only.
"""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

import attrs
import psycopg
import trio

from trio_supervise.integrations.database import Database

# Generous: only hit when something is broken.
FAIL_SAFE = 15.0


def reset_postgres(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("DROP SCHEMA public CASCADE")
        connection.execute("CREATE SCHEMA public")


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


def through(proxy: Proxy, dsn: str) -> str:
    """``dsn`` to the server behind ``proxy`` (its host and port replaced by the proxy's)."""
    parts = urlsplit(dsn)
    return parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}").geturl()


def server_port(dsn: str) -> int:
    return urlsplit(dsn).port or 5432


@attrs.define(eq=False)
class Proxy:
    """A TCP proxy on 127.0.0.1 to a server: ``down()`` is the server going away.

    While up it forwards each connection to ``server_port``; ``down()`` drops every
    connection and closes the listener (new connections are refused), ``up()`` listens on
    the same port again. Run it with ``await nursery.start(proxy.run)``.
    """

    server_port: int
    port: int = 0
    # Cancelled by down(): the listener and every forwarded connection.
    _scope: trio.CancelScope | None = None
    _nursery: trio.Nursery | None = None

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self._serve)
            task_status.started()
            await trio.sleep_forever()  # until stop(): up() starts the listener here again

    async def up(self) -> None:
        assert self._nursery is not None
        assert self._scope is None
        await self._nursery.start(self._serve)

    def down(self) -> None:
        assert self._scope is not None
        self._scope.cancel()
        self._scope = None

    def stop(self) -> None:
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        with trio.CancelScope() as scope:
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            self._scope = scope
            async with trio.open_nursery() as nursery:
                task_status.started()
                await trio.serve_listeners(self._forward, listeners, handler_nursery=nursery)

    async def _forward(self, client: trio.SocketStream) -> None:
        async with client:
            server = await trio.open_tcp_stream("127.0.0.1", self.server_port)
            async with server, trio.open_nursery() as nursery:

                async def pipe(source: trio.SocketStream, sink: trio.SocketStream) -> None:
                    try:
                        while data := await source.receive_some():
                            await sink.send_all(data)
                    except trio.BrokenResourceError:
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(pipe, client, server)
                nursery.start_soon(pipe, server, client)
