"""Pure restart policy: what to restart and whether a restart is allowed.

Plain synchronous code with no trio import, so that it can be tested with plain numbers and
checked against brute-force models; the runtime in ``_supervisor`` asks it and acts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TypeVar, final

from ._spec import AutoShutdown, Restart, Strategy

T = TypeVar("T")


@final
class RestartWindow:
    """OTP's restart intensity: a sliding window over the times restarts were decided.

    A restart at ``now`` is allowed while the number of restarts in the last
    ``max_seconds`` seconds, counting this one, is at most ``max_restarts``. A restart stays
    in the window while ``now - t <= max_seconds``.
    """

    __slots__ = ("_times", "max_restarts", "max_seconds")

    def __init__(self, max_restarts: int, max_seconds: float) -> None:
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        # Times of the restarts still inside the window, oldest first.
        self._times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        """Count a restart decided at ``now``; return whether it is within the intensity."""
        times = self._times
        times.append(now)
        while now - times[0] > self.max_seconds:
            times.popleft()
        return len(times) <= self.max_restarts

    def __len__(self) -> int:
        return len(self._times)


def should_restart(policy: Restart, abnormal: bool) -> bool:
    """Whether a child with ``policy`` is restarted after a clean or abnormal exit."""
    if policy is Restart.PERMANENT:
        return True
    if policy is Restart.TRANSIENT:
        return abnormal
    return False


def restart_group(strategy: Strategy, children: Sequence[T], failed: T) -> list[T]:
    """The children a restart of ``failed`` affects, in start order (``failed`` included)."""
    if strategy is Strategy.ONE_FOR_ONE:
        return [failed]
    if strategy is Strategy.ONE_FOR_ALL:
        return list(children)
    return list(children[children.index(failed) :])


def auto_shutdown_due(mode: AutoShutdown, significant_gone: Sequence[bool]) -> bool:
    """Whether a supervisor stops by itself, given for each significant child if it is gone.

    Called when a significant child has exited without being restarted.
    """
    if mode is AutoShutdown.NEVER or not significant_gone:
        return False
    if mode is AutoShutdown.ANY_SIGNIFICANT:
        return any(significant_gone)
    return all(significant_gone)
