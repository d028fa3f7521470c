"""A lock shared by the trees of one process: singletons (§9) tested in virtual time."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import final

import trio

from .._singleton import LockLease, ReportHolder, default_holder


@final
class MemoryLock:
    """A ``Lock`` whose replicas are the trees of one ``trio.run``, for tests.

    It behaves as the real locks do, without a server and without polling: the first
    waiting replica takes it the moment it is released, so handovers happen at exact
    virtual times and go to a predictable replica.
    ``lose()`` plays a broken session or a lapsed lease: the holder loses the lock, and
    it is free once the holder has stopped (as the real locks promise: the work stops
    before another replica can take the lock over).

    Example::

        lock = MemoryLock()
        spec = SupervisorSpec("app", [ChildSpec.singleton("compaction", compact, lock=lock)])
        async with supervisor_tree(spec) as a, supervisor_tree(spec) as b:
            ...  # one of a and b runs compaction; lock.lose() hands it to the other
    """

    def __init__(self) -> None:
        self._lease: LockLease | None = None
        # True while the lock passes from a leaving holder to the first waiter.
        self._handing_over = False
        # The waiters, first come first served: a holder that lost the lock and waits
        # again queues behind the replicas that were waiting already.
        self._queue: deque[trio.Event] = deque()

    def __repr__(self) -> str:
        holder = None if self._lease is None else self._lease.holder
        return f"MemoryLock(holder={holder!r}, waiting={len(self._queue)})"

    @asynccontextmanager
    async def hold(
        self,
        holder: str | None = None,
        *,
        report_holder: ReportHolder | None = None,
    ) -> AsyncIterator[LockLease]:
        """Wait until the lock is handed to this waiter (first come, first served), then
        hold it as ``holder``; release it on exit."""
        lease = LockLease(holder or default_holder())
        await trio.lowlevel.checkpoint()
        if self._lease is not None or self._handing_over:
            if report_holder is not None:
                report_holder(None if self._lease is None else self._lease.holder)
            turn = trio.Event()
            self._queue.append(turn)
            try:
                await turn.wait()
            except BaseException:
                if turn.is_set():  # handed the lock as it was cancelled: pass it on
                    self._hand_over()
                else:
                    self._queue.remove(turn)
                raise
            self._handing_over = False
        self._lease = lease
        try:
            yield lease
        finally:
            if self._lease is lease:
                self._lease = None
                self._hand_over()

    async def holder(self) -> str | None:
        """The holder's name, or None when the lock is free."""
        await trio.lowlevel.checkpoint()
        return None if self._lease is None else self._lease.holder

    def lose(self, reason: str = "the lock was lost (MemoryLock.lose)") -> None:
        """Make the holder lose the lock, as a broken session would.

        Raises:
          RuntimeError: when nobody holds it.
        """
        lease = self._lease
        if lease is None:
            raise RuntimeError("MemoryLock.lose(): nobody holds the lock")
        lease.lose(reason)

    def _hand_over(self) -> None:
        self._handing_over = bool(self._queue)
        if self._queue:
            self._queue.popleft().set()
