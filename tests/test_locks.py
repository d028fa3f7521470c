"""``PostgresLock`` (§9) against a real PostgreSQL server, on the real clock."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time

import psycopg
import pytest
import trio

from trio_supervise import SpecError
from trio_supervise.integrations.locks import PostgresLock, advisory_key, default_holder

FAIL_SAFE = 20.0


def test_the_key_hash_is_stable_and_documented() -> None:
    # Fixed vectors: a release must never move a lock other programs share.
    assert advisory_key("compaction") == advisory_key("compaction")
    assert advisory_key("") != advisory_key("compaction")
    assert -(2**63) <= advisory_key("compaction") < 2**63
    digest = hashlib.sha256(b"compaction").digest()
    assert advisory_key("compaction") == int.from_bytes(digest[:8], "big", signed=True)


def test_the_sql_of_the_docstring_gives_the_same_number(postgres_dsn: str) -> None:
    with psycopg.connect(postgres_dsn) as connection:
        row = connection.execute(
            "SELECT ('x' || left(encode(sha256(convert_to(%s, 'UTF8')), 'hex'), 16))"
            "::bit(64)::bigint",
            ("compaction",),
        ).fetchone()
    assert row is not None
    assert row[0] == advisory_key("compaction")


@pytest.mark.parametrize(("dsn", "key"), [("", "k"), ("postgresql://x", ""), (None, "k")])
def test_bad_lock_specs_are_refused(dsn: object, key: object) -> None:
    with pytest.raises(SpecError, match="PostgresLock: "):
        PostgresLock(dsn, key)  # type: ignore[arg-type]


async def test_one_holder_at_a_time_and_the_holder_is_named(postgres_dsn: str) -> None:
    lock = PostgresLock(postgres_dsn, "one-at-a-time")
    order: list[str] = []
    b_holds = trio.Event()

    async def second() -> None:
        async with lock.hold("replica-b"):
            order.append("b holds")
            assert await lock.holder() == "replica-b"
            b_holds.set()

    assert await lock.holder() is None
    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery:
            async with lock.hold("replica-a"):
                order.append("a holds")
                assert await lock.holder() == "replica-a"
                nursery.start_soon(second)
                await trio.sleep(1.2)  # b polls meanwhile and must not get it
                order.append("a releases")
            released = time.monotonic()
            await b_holds.wait()
            handover = time.monotonic() - released
    assert order == ["a holds", "a releases", "b holds"]
    assert handover < 1.0, handover  # within one poll of the release
    assert await lock.holder() is None
    assert default_holder().endswith(f":{os.getpid()}")


async def test_a_broken_session_is_a_lost_lock(postgres_dsn: str) -> None:
    lock = PostgresLock(postgres_dsn, "lost")
    with trio.fail_after(FAIL_SAFE):
        async with lock.hold("replica-a") as lease:
            with psycopg.connect(postgres_dsn, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name = 'replica-a'"
                )
            broken_at = time.monotonic()
            await lease.lost.wait()
            assert time.monotonic() - broken_at < 1.5
            assert "broke" in lease.lost_reason
        async with lock.hold("replica-b"):  # the server released it with the session
            assert await lock.holder() == "replica-b"


HOLDER = """
    import sys, trio
    from trio_supervise.integrations.locks import PostgresLock

    async def main():
        async with PostgresLock(sys.argv[1], "killed").hold("doomed"):
            print("holding", flush=True)
            await trio.sleep_forever()

    trio.run(main)
"""


async def test_the_lock_of_a_holder_killed_by_sigkill_is_free_within_2_seconds(
    postgres_dsn: str,
) -> None:
    holder = subprocess.Popen(  # noqa: ASYNC220 - it must be killed by hand
        [sys.executable, "-c", textwrap.dedent(HOLDER), postgres_dsn],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert await trio.to_thread.run_sync(holder.stdout.readline) == "holding\n"
        lock = PostgresLock(postgres_dsn, "killed")
        assert await lock.holder() == "doomed"
        holder.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        with trio.fail_after(FAIL_SAFE):
            async with lock.hold("heir"):
                took = time.monotonic() - killed_at
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    print(f"\nSIGKILLed holder's lock taken over {took * 1000:.0f} ms later")
    assert took < 2.0
