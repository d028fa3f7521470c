"""What a running child can ask about itself: ``current_child()``."""

from __future__ import annotations

import enum
from contextvars import ContextVar
from typing import Protocol, final

import attrs
import trio


class ChildState(enum.Enum):
    """Where a child is in its life."""

    #: Being started; for a ``task_status`` target, until it called ``started()``.
    STARTING = "starting"
    #: Started and not asked to stop.
    RUNNING = "running"
    #: A restart was decided: it is being stopped with its group or waits for its backoff.
    RESTARTING = "restarting"
    #: Asked to stop (``terminate_child``, a group restart or the shutdown) and not gone yet.
    STOPPING = "stopping"
    #: Not running: exited and not to be restarted, or terminated on purpose.
    STOPPED = "stopped"


@final
@attrs.define(eq=False)
class ChildContext:
    """The running child's own view of itself, from ``current_child()``.

    Attributes:
      name: the child's name.
      path: the child's path in the tree (``"db/pool"``).
      restarts: how many times this child had been restarted when this run started.
      stop_requested: set when the supervisor asks this run to stop, before it cancels it;
        a child doing a long step can check it and wind down by itself.
    """

    name: str
    path: str
    restarts: int
    # Made on first use: most runs are stopped without ever looking at it.
    _stop_requested: trio.Event | None = attrs.field(default=None, init=False)
    _asked: bool = attrs.field(default=False, init=False)

    @property
    def stop_requested(self) -> trio.Event:
        if self._stop_requested is None:
            self._stop_requested = trio.Event()
            if self._asked:
                self._stop_requested.set()
        return self._stop_requested

    def _request_stop(self) -> None:
        self._asked = True
        if self._stop_requested is not None:
            self._stop_requested.set()


class ChildRun(Protocol):
    """What the context variable holds: the child's run, which makes its ChildContext."""

    @property
    def path(self) -> str: ...

    def child_context(self) -> ChildContext: ...


_current: ContextVar[ChildRun] = ContextVar("trio_supervise.current_child")


def current_child() -> ChildContext:
    """The context of the supervised child whose task calls this.

    Raises:
      RuntimeError: when called outside a supervised child (or a task it spawned).
    """
    try:
        return _current.get().child_context()
    except LookupError:
        raise RuntimeError(
            "current_child() was called outside a supervised child; call it from a"
            " ChildSpec target (or a task that target spawned)"
        ) from None


def current_child_path() -> str:
    """The path of the supervised child whose task calls this; ``""`` outside one (for logs)."""
    run = _current.get(None)
    return "" if run is None else run.path
