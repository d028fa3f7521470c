"""``PostgresLock`` (§9) against a real PostgreSQL server, on the real clock."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest
import trio
from servers import EtcdMember

from trio_supervise import SpecError
from trio_supervise.integrations.locks import (
    EtcdLock,
    FileLock,
    PostgresLock,
    advisory_key,
    default_holder,
)

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


Lock = PostgresLock | EtcdLock | FileLock


async def one_holder_at_a_time(first: Lock, second: Lock, held_for: float) -> float:
    """``first`` holds for ``held_for`` s while ``second`` waits; seconds until it takes over.

    Checks that the second never holds while the first does, that each is named as the
    holder while it holds, and that the waiting one was told who held the lock.
    """
    order: list[str] = []
    seen: list[str | None] = []
    b_holds = trio.Event()

    async def wait_and_hold() -> None:
        async with second.hold("replica-b", report_holder=seen.append):
            order.append("b holds")
            assert await first.holder() == "replica-b"
            b_holds.set()

    assert await first.holder() is None
    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery:
            async with first.hold("replica-a"):
                order.append("a holds")
                assert await first.holder() == "replica-a"
                nursery.start_soon(wait_and_hold)
                await trio.sleep(held_for)  # b tries meanwhile and must not get it
                order.append("a releases")
            released = time.monotonic()
            await b_holds.wait()
            handover = time.monotonic() - released
    assert order == ["a holds", "a releases", "b holds"]
    assert seen
    assert set(seen) == {"replica-a"}  # b named the holder while it waited
    assert await first.holder() is None
    return handover


async def test_one_holder_at_a_time_and_the_holder_is_named(postgres_dsn: str) -> None:
    lock = PostgresLock(postgres_dsn, "one-at-a-time")
    handover = await one_holder_at_a_time(lock, lock, 1.2)
    assert handover < 0.1, handover  # it waited in the server: granted at the release
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
    from trio_supervise.integrations.locks import EtcdLock, FileLock, PostgresLock

    async def main():
        kind, ttl, *where = sys.argv[1:]
        if kind == "postgres":
            lock = PostgresLock(where[0], "killed")
        elif kind == "file":
            lock = FileLock(where[0])
        else:
            lock = EtcdLock(where, "killed", ttl=int(ttl))
        async with lock.hold("doomed"):
            print("holding", flush=True)
            await trio.sleep_forever()

    trio.run(main)
"""


async def takeover_after_sigkill(lock: Lock, *holder_args: str) -> float:
    """Seconds from a SIGKILL of a process holding ``lock`` until this one holds it."""
    holder = subprocess.Popen(  # noqa: ASYNC220 - it must be killed by hand
        [sys.executable, "-c", textwrap.dedent(HOLDER), *holder_args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert await trio.to_thread.run_sync(holder.stdout.readline) == "holding\n"
        assert await lock.holder() == "doomed"
        holder.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        with trio.fail_after(FAIL_SAFE):
            async with lock.hold("heir"):
                return time.monotonic() - killed_at
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


async def test_the_lock_of_a_holder_killed_by_sigkill_is_free_within_2_seconds(
    postgres_dsn: str,
) -> None:
    lock = PostgresLock(postgres_dsn, "killed")
    took = await takeover_after_sigkill(lock, "postgres", "0", postgres_dsn)
    print(f"\nSIGKILLed holder's lock taken over {took * 1000:.0f} ms later")
    assert took < 2.0


# ------------------------------------------------------------------------------- file


async def test_a_file_lock_has_one_holder_at_a_time_and_names_it(tmp_path: Path) -> None:
    lock = FileLock(tmp_path / "lock")
    assert await lock.holder() is None  # no file yet
    handover = await one_holder_at_a_time(lock, FileLock(tmp_path / "lock"), 0.7)
    assert handover < 0.2, handover  # within a poll (FILE_POLL_EVERY)
    assert (tmp_path / "lock").exists()  # left in place for the next replica


async def test_a_killed_holders_file_lock_is_free_at_once(tmp_path: Path) -> None:
    took = await takeover_after_sigkill(
        FileLock(tmp_path / "lock"), "file", "0", str(tmp_path / "lock")
    )
    print(f"\nSIGKILLed holder's file lock taken over {took * 1000:.0f} ms later")
    assert took < 0.2  # the next poll (FILE_POLL_EVERY)


@pytest.mark.parametrize("path", ["", None, 3])
def test_bad_file_lock_specs_are_refused(path: object) -> None:
    with pytest.raises(SpecError, match="FileLock: path must be a non-empty file path"):
        FileLock(path)  # type: ignore[arg-type]


async def test_an_error_in_the_holding_body_comes_out_as_itself(
    tmp_path: Path, postgres_dsn: str
) -> None:
    # Not wrapped in the ExceptionGroup of the lock's watcher nursery.
    for lock in (FileLock(tmp_path / "lock"), PostgresLock(postgres_dsn, "raises")):
        with pytest.raises(KeyError, match="inside"):
            async with lock.hold("a"):
                raise KeyError("inside")
        assert await lock.holder() is None


# ------------------------------------------------------------------------------- etcd


@pytest.mark.parametrize(
    ("endpoints", "key", "ttl", "message"),
    [
        ([], "k", 10, "endpoints must be a non-empty sequence"),
        ("http://127.0.0.1:2379", "k", 10, "endpoints must be a non-empty sequence"),
        (["127.0.0.1:2379"], "k", 10, "each endpoint must be an http:// or https:// URL"),
        (["http://x"], "", 10, "key must be a non-empty str"),
        (["http://x"], "k", 0, "ttl must be a whole number of seconds >= 1"),
        (["http://x"], "k", 1.5, "ttl must be a whole number of seconds >= 1"),
        (["http://x"], "k", True, "ttl must be a whole number of seconds >= 1"),
    ],
)
def test_bad_etcd_lock_specs_are_refused(
    endpoints: object, key: object, ttl: object, message: str
) -> None:
    with pytest.raises(SpecError) as caught:
        EtcdLock(endpoints, key, ttl)  # type: ignore[arg-type]
    assert message in str(caught.value)


async def test_etcd_one_holder_at_a_time_and_a_release_hands_over_at_once(
    etcd_cluster: list[EtcdMember],
) -> None:
    endpoints = [member.client_url for member in etcd_cluster]
    lock = EtcdLock(endpoints, "one-at-a-time", ttl=3)
    # Held past the ttl: the renewals keep it the first one's.
    handover = await one_holder_at_a_time(
        lock, EtcdLock(endpoints[1:], "one-at-a-time", ttl=3), 4.0
    )
    assert handover < 1.0, handover  # within a poll (POLL_EVERY)


async def test_etcd_a_holder_cut_off_stops_before_another_can_take_over(
    etcd_cluster: list[EtcdMember],
) -> None:
    # The holder talks to m1 only; m1 is paused (SIGSTOP), as if the holder were partitioned.
    # It must give the lock up while a third of the ttl is left; the other replica, on m2 and
    # m3, gets it only once the lease has expired on the cluster.
    ttl = 3
    cut_off = etcd_cluster[0]
    others = [member.client_url for member in etcd_cluster[1:]]
    lost_at = taken_at = 0.0
    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery:
            async with EtcdLock([cut_off.client_url], "partition", ttl=ttl).hold("a") as lease:
                paused_at = time.monotonic()
                cut_off.process.send_signal(signal.SIGSTOP)

                async def take_over() -> None:
                    nonlocal taken_at
                    async with EtcdLock(others, "partition", ttl=ttl).hold("b"):
                        taken_at = time.monotonic()

                nursery.start_soon(take_over)
                await lease.lost.wait()
                lost_at = time.monotonic()
            cut_off.process.send_signal(signal.SIGCONT)
    print(
        f"\npartitioned holder stopped {lost_at - paused_at:.2f}s after the cut, the other"
        f" replica took over {taken_at - paused_at:.2f}s after it (ttl {ttl}s)"
    )
    assert lost_at < taken_at  # never two holders
    assert lost_at - paused_at <= 2 * ttl / 3 + 0.5
    assert "not renewed" in lease.lost_reason


async def test_etcd_the_lock_of_a_killed_holder_is_free_within_ttl_plus_1(
    etcd_cluster: list[EtcdMember],
) -> None:
    ttl = 2
    endpoints = [member.client_url for member in etcd_cluster]
    lock = EtcdLock(endpoints, "killed", ttl=ttl)
    took = await takeover_after_sigkill(lock, "etcd", str(ttl), *endpoints)
    print(f"\nSIGKILLed etcd holder's lock taken over {took:.2f}s later (ttl {ttl}s)")
    assert took < ttl + 1
