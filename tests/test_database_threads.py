"""Worker threads (``_threads``): cancellable, without leaking a thread or a connection.

Real threads, so Trio's real clock; ``trio.fail_after`` is a fail-safe only.
"""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing
from database_helpers import FAIL_SAFE

from trio_supervise.integrations.database import _threads
from trio_supervise.integrations.database._threads import open_connection, run_in_worker


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
                nursery.start_soon(open_connection, connect, close)
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
        assert scope.cancelled_caught
        assert closed == []
        go.set()  # the worker connects only now, after the open was given up
        await trio.to_thread.run_sync(closed_event.wait, FAIL_SAFE)
    assert closed == [made]


async def test_a_cancelled_call_interrupts_its_worker_and_waits_for_it() -> None:
    running = threading.Event()
    release = threading.Event()
    interrupts: list[float] = []
    ended: list[str] = []

    def work() -> str:
        running.set()
        release.wait(FAIL_SAFE)
        ended.append("worker")
        return "done"

    def interrupt(timeout: float) -> None:
        interrupts.append(timeout)
        release.set()

    def stuck(finished: threading.Event) -> None:
        raise AssertionError("not stuck")  # pragma: no cover

    with trio.fail_after(FAIL_SAFE):
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def call() -> None:
                    await run_in_worker(work, interrupt=interrupt, on_stuck=stuck, target="t")

                nursery.start_soon(call)
                await trio.to_thread.run_sync(running.wait)
                scope.cancel()
        assert scope.cancelled_caught
    # Cancelled went on only once the worker had ended.
    assert ended == ["worker"]
    assert len(interrupts) >= 1
    assert 0 < interrupts[0] <= _threads.CANCEL_GRACE


async def test_a_worker_deaf_to_interrupts_is_given_up_after_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_threads, "CANCEL_GRACE", 0.2)
    running = threading.Event()
    release = threading.Event()
    given_up: list[threading.Event] = []

    def work() -> None:
        running.set()
        release.wait(FAIL_SAFE)

    try:
        with trio.fail_after(FAIL_SAFE):
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:

                    async def call() -> None:
                        await run_in_worker(
                            work,
                            interrupt=lambda timeout: None,
                            on_stuck=given_up.append,
                            target="t",
                        )

                    nursery.start_soon(call)
                    await trio.to_thread.run_sync(running.wait)
                    cancelled_at = trio.current_time()
                    scope.cancel()
            assert scope.cancelled_caught
            assert 0.2 <= trio.current_time() - cancelled_at < 1.0
            [finished] = given_up
            assert not finished.is_set()
    finally:
        release.set()
    # The event tells when the worker lets go of its connection at last.
    await trio.to_thread.run_sync(given_up[0].wait, FAIL_SAFE)
