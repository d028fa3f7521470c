"""Pure restart policy: what to restart and whether a restart is allowed.

Plain synchronous code with no trio import, so that it can be tested with plain numbers and
checked against brute-force models; the runtime in ``_supervisor`` asks it and acts.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Sequence
from typing import Generic, TypeVar, final

import attrs

from ._spec import AutoShutdown, Backoff, Restart, Strategy

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


class ExitAction(enum.Enum):
    """What a child's exit leads to (see ``decide_exit``)."""

    #: Not restarted by its policy; its spec stays (health and auto_shutdown see it gone).
    STAY_DOWN = "stay_down"
    #: Not restarted, and its spec leaves the supervisor (a temporary child).
    REMOVE = "remove"
    #: The restart is over the intensity: the supervisor stops everything and fails.
    GIVE_UP = "give_up"
    #: Restart ``group`` (in start order) after ``delay`` seconds.
    RESTART = "restart"


@final
@attrs.frozen
class ExitDecision(Generic[T]):
    """The verdict on one exit: the action, and for a restart its group, delay and attempt.

    Attributes:
      action: what to do.
      group: for ``RESTART``, the children to stop (all but the one that exited) and start
        again, in start order; empty otherwise.
      delay: for ``RESTART``, the backoff delay in seconds (0 without backoff).
      attempt: for ``RESTART``, the n of the backoff: this is the child's n-th consecutive
        restart.
    """

    action: ExitAction
    group: tuple[T, ...] = ()
    delay: float = 0.0
    attempt: int = 0


def decide_exit(
    *,
    strategy: Strategy,
    restart: Restart,
    abnormal: bool,
    failed: T,
    siblings: Sequence[T],
    window: RestartWindow,
    now: float,
    backoff: Backoff | None,
    consecutive: int,
    rng: random.Random,
) -> ExitDecision[T]:
    """Decide what the exit of ``failed`` leads to; counts a restart in ``window``.

    Args:
      strategy, restart: the supervisor's strategy and the child's restart type.
      abnormal: whether it raised (or failed to start, or failed its health checks).
      failed: the child that exited.
      siblings: the supervisor's children that a group restart affects, in start order
        (the running and restarting ones; ``failed`` among them).
      window: the supervisor's intensity; a restart decided here is counted in it.
      now: when the decision is made (the restart counts from then, before any delay).
      backoff, consecutive: the supervisor's backoff and the child's consecutive restarts
        so far (already reset by the caller when it ran ``reset_after`` seconds).
      rng: the source of the backoff's jitter.
    """
    if not should_restart(restart, abnormal):
        action = ExitAction.REMOVE if restart is Restart.TEMPORARY else ExitAction.STAY_DOWN
        return ExitDecision(action)
    if not window.allow(now):
        return ExitDecision(ExitAction.GIVE_UP)
    attempt = consecutive + 1
    delay = backoff.delay(attempt, rng) if backoff is not None else 0.0
    group = tuple(restart_group(strategy, siblings, failed))
    return ExitDecision(ExitAction.RESTART, group, delay, attempt)
