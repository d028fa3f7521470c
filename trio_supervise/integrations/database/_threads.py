"""Blocking drivers in Trio worker threads, cancellable without leaking a thread or a connection.

A cancelled call does not just stop waiting: the statement is interrupted (repeatedly, in case
it had not started yet) and the call waits for its thread to end, so the connection is idle
for the next call. A connection made by a thread after its open was cancelled is closed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import trio

logger = logging.getLogger("trio_supervise.database")

#: Seconds a cancelled call keeps interrupting its statement and waiting for the worker
#: thread before it gives the connection up as stuck.
CANCEL_GRACE = 5.0

# Seconds between two interrupts of a cancelled statement: a statement that had not yet
# started when the first one came is caught by the next.
_INTERRUPT_INTERVAL = 0.05

_T = TypeVar("_T")
_C = TypeVar("_C")


class NotStarted(Exception):
    """Raised in a worker thread whose call was cancelled before it began; never seen."""


class _Handover(Generic[_C]):
    """Hands a new connection from a worker thread to Trio, or closes it if Trio left."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # Set (under lock) by the Trio side once it was cancelled and will not take it.
        self.abandoned = False
        # The connection, once the worker made it and Trio had not left yet.
        self.connection: _C | None = None


async def open_connection(connect: Callable[[], _C], close: Callable[[_C], None]) -> _C:
    """Run ``connect`` in a thread; cancellable without leaking what it connects."""
    handover: _Handover[_C] = _Handover()

    def work() -> _C:
        connection = connect()
        with handover.lock:
            if handover.abandoned:
                close(connection)
                raise NotStarted
            handover.connection = connection
        return connection

    try:
        return await trio.to_thread.run_sync(work, abandon_on_cancel=True)
    except trio.Cancelled:
        with handover.lock:
            handover.abandoned = True
            leftover = handover.connection
        if leftover is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(close, leftover)
        raise


async def run_in_worker(
    fn: Callable[[], _T],
    *,
    interrupt: Callable[[float], None],
    on_stuck: Callable[[threading.Event], None],
    target: str,
) -> _T:
    """Run ``fn`` in a worker thread; on cancellation, stop it before ``Cancelled`` goes on.

    Args:
      fn: the blocking call.
      interrupt: stops the statement ``fn`` runs (given the seconds left of the grace); a
        no-op when none runs.
      on_stuck: called with the event the thread sets when it ends at last, when it did not
        stop within ``CANCEL_GRACE`` seconds; ``Cancelled`` is raised after it.
      target: the database, for the log.
    """
    finished = threading.Event()
    cancelled = threading.Event()

    def work() -> _T:
        try:
            if cancelled.is_set():
                raise NotStarted
            return fn()
        finally:
            finished.set()

    try:
        return await trio.to_thread.run_sync(work, abandon_on_cancel=True)
    except trio.Cancelled:
        cancelled.set()
        with trio.CancelScope(shield=True):
            stopped = await trio.to_thread.run_sync(
                _stop_worker, finished, interrupt, CANCEL_GRACE, target
            )
        if not stopped:
            on_stuck(finished)
        raise


def _stop_worker(
    finished: threading.Event, interrupt: Callable[[float], None], grace: float, target: str
) -> bool:
    """Interrupt the statement until the worker has returned; False after the grace."""
    deadline = time.monotonic() + grace
    while not finished.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            interrupt(remaining)
        except Exception:
            logger.debug("%s: interrupting failed", target, exc_info=True)
        finished.wait(min(_INTERRUPT_INTERVAL, remaining))
    return True
