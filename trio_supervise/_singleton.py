"""The run of a singleton child (§9): wait for a lock, run the target only while holding it.

A singleton run has started (for ordering: its later siblings and the tree's body go on) as
soon as it waits. It reports each time it comes to hold the lock or loses it, and its
supervisor, the only writer of the child's state, turns that into ``RUNNING`` or back into
``STARTING`` and an event. A lost lock cancels the target at once and the run waits again:
no exit, so no crash and no restart.

``Lock`` is what a lock must offer (``integrations.locks`` has PostgreSQL and etcd); a lock
of one's own only has to follow it.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, final, runtime_checkable

import trio

from ._events import log

#: What a waiting ``Lock.hold`` calls with the holder's name (None: not known).
ReportHolder = Callable[[str | None], object]


def default_holder() -> str:
    """``"<host name>:<pid>"``: this replica's name as a lock holder."""
    return f"{socket.gethostname()}:{os.getpid()}"


@final
class LockLease:
    """A lock while held: ``lost`` is set, and ``scope`` cancelled, the moment it is lost.

    Attributes:
      holder: the name this replica holds the lock under.
      lost: set when the lock was lost while held (the session broke, the lease lapsed).
      lost_reason: why, once lost.
      scope: a cancel scope cancelled when the lock is lost: work that must stop then runs
        inside it (``with lease.scope: ...``).
    """

    def __init__(self, holder: str) -> None:
        self.holder = holder
        self.lost = trio.Event()
        self.lost_reason = ""
        self.scope = trio.CancelScope()

    def lose(self, reason: str) -> None:
        """Record that the lock is gone: called by the lock, never by its user."""
        self.lost_reason = reason
        self.lost.set()
        self.scope.cancel(reason=reason)


@runtime_checkable
class Lock(Protocol):
    """A lock shared by replicas: what ``ChildSpec.singleton`` needs of its ``lock``."""

    def hold(
        self,
        holder: str | None = None,
        *,
        report_holder: ReportHolder | None = None,
    ) -> AbstractAsyncContextManager[LockLease]:
        """Wait until ``holder`` holds the lock; release it on exit.

        While waiting, ``report_holder`` (if given) is called after each attempt with the
        name of the replica that holds the lock, or None when that is not known.
        """
        ...

    async def holder(self) -> str | None:
        """The name of the replica that holds the lock now, or None."""
        ...


@final
class SingletonRun:
    """One run of a singleton child. Its fields are written by the run's own task only.

    ``report(holding, reason)`` tells the supervisor that the run came to hold the lock
    (``True``) or lost it (``False``, with why).
    """

    def __init__(
        self,
        path: str,
        lock: Lock,
        fn: Callable[..., Awaitable[object]],
        args: tuple[Any, ...],
        takes_task_status: bool,
        report: Callable[[bool, str], None],
    ) -> None:
        self._path = path
        self._lock = lock
        self._fn = fn
        self._args = args
        self._takes_task_status = takes_task_status
        self._report = report
        #: The replica holding the lock as last seen: this one while it holds it.
        self.holder: str | None = None
        self.holding = False

    def _saw_holder(self, holder: str | None) -> None:
        self.holder = holder

    def _acquired(self) -> None:
        if not self.holding:
            self.holding = True
            self._report(True, "")

    async def run(self, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()  # for ordering, a singleton has started once it waits
        name = default_holder()
        while True:
            async with self._lock.hold(name, report_holder=self._saw_holder) as lease:
                self.holder = lease.holder
                try:
                    with lease.scope:
                        if self._takes_task_status:
                            await self._fn(*self._args, task_status=_Acquired(self))
                        else:
                            self._acquired()
                            await self._fn(*self._args)
                except Exception:
                    if not lease.lost.is_set():
                        raise
                    # Stopped for the lost lock: what it raised on its way out (its own
                    # resources failing with the same network, often) is no crash.
                    log(
                        logging.WARNING,
                        "%s raised as it stopped for its lost lock",
                        self._path,
                        path=self._path,
                        kind="LOCK_LOST",
                        exc_info=True,
                    )
                if not lease.lost.is_set():
                    return
            self.holder = None
            if self.holding:
                self.holding = False
                self._report(False, lease.lost_reason)


@final
class _Acquired:
    """The ``task_status`` of a singleton's target: ``started()`` makes the child RUNNING."""

    __slots__ = ("_run",)

    def __init__(self, run: SingletonRun) -> None:
        self._run = run

    def started(self, value: object = None) -> None:
        if self._run.holding:
            raise RuntimeError("a singleton's target called task_status.started() twice")
        self._run._acquired()
