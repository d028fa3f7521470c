"""A replica for the singleton tests: ``run()`` of a tree whose singleton child records when
it runs, in a table every replica shares, on the database server's clock.

    python singleton_replica.py NAME DSN postgres
    python singleton_replica.py NAME DSN etcd TTL ENDPOINT...
    python singleton_replica.py NAME DSN file PATH

The child inserts a row ``(replica, started, ended)`` when it comes to run and moves
``ended`` on every 20 ms while it runs, and once more as it stops: two rows of different
replicas whose spans cross would be two replicas running it at once. The child's state
and lock holder are printed as a JSON line whenever they change, for the test to follow.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import psycopg
import trio

import trio_supervise
from trio_supervise import ChildSpec, SupervisorSpec, current_tree
from trio_supervise.integrations.locks import EtcdLock, FileLock, PostgresLock

TABLE = "singleton_runs"
BEAT = 0.02


def record(dsn: str, replica: str) -> tuple[psycopg.Connection[Any], int]:
    connection = psycopg.connect(dsn, autocommit=True)
    row = connection.execute(
        f"INSERT INTO {TABLE} (replica, started, ended)"
        " VALUES (%s, clock_timestamp(), clock_timestamp()) RETURNING id",
        (replica,),
    ).fetchone()
    assert row is not None
    return connection, int(row[0])


def beat(connection: psycopg.Connection[Any], row: int) -> None:
    connection.execute(f"UPDATE {TABLE} SET ended = clock_timestamp() WHERE id = %s", (row,))


async def compaction(dsn: str, replica: str) -> None:
    connection, row = await trio.to_thread.run_sync(record, dsn, replica)
    try:
        while True:
            await trio.sleep(BEAT)
            await trio.to_thread.run_sync(beat, connection, row)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(beat, connection, row)
            connection.close()


async def reporter() -> None:
    tree = current_tree()
    last = None
    while True:
        info = tree.info("compaction")
        seen = {"state": info.state.value, "holder": info.lock_holder}
        if seen != last:
            print(json.dumps(seen), flush=True)
            last = seen
        await trio.sleep(0.01)


def main() -> int:
    replica, dsn, backend, *rest = sys.argv[1:]
    lock: PostgresLock | EtcdLock | FileLock
    if backend == "postgres":
        lock = PostgresLock(dsn, "compaction")
    elif backend == "file":
        lock = FileLock(rest[0])
    else:
        ttl, *endpoints = rest
        lock = EtcdLock(endpoints, "compaction", ttl=int(ttl))
    spec = SupervisorSpec(
        "replica",
        [
            ChildSpec("reporter", reporter),
            ChildSpec.singleton("compaction", compaction, (dsn, replica), lock=lock),
        ],
    )
    return trio_supervise.run(spec, shutdown_deadline=10)


if __name__ == "__main__":
    sys.exit(main())
