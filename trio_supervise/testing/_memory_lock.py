"""A lock shared by the trees of one process: singletons (§9) tested in virtual time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import final

import trio

from .._singleton import LockLease, default_holder


@final
class MemoryLock:
    """A ``Lock`` whose replicas are the trees of one ``trio.run``, for tests.

    It behaves as the real locks do, without a server and without polling: a waiting
    replica takes it the moment it is released, so handovers happen at exact virtual times.
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
        self._released = trio.lowlevel.ParkingLot()

    def __repr__(self) -> str:
        holder = None if self._lease is None else self._lease.holder
        return f"MemoryLock(holder={holder!r})"

    @asynccontextmanager
    async def hold(
        self,
        holder: str | None = None,
        *,
        report_holder: Callable[[str | None], object] | None = None,
    ) -> AsyncIterator[LockLease]:
        """Wait until the lock is free, then hold it as ``holder``; release it on exit."""
        lease = LockLease(holder or default_holder())
        await trio.lowlevel.checkpoint()
        while self._lease is not None:
            if report_holder is not None:
                report_holder(self._lease.holder)
            await self._released.park()
        self._lease = lease
        try:
            yield lease
        finally:
            self._free(lease)

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

    def _free(self, lease: LockLease) -> None:
        if self._lease is lease:
            self._lease = None
            self._released.unpark_all()
