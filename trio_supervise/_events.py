"""Events: what happened in a tree, kept in a bounded history, streamed and logged."""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import NamedTuple, final

import trio

logger = logging.getLogger("trio_supervise")


def log(
    level: int,
    message: str,
    *args: object,
    path: str,
    kind: str,
    exc_info: BaseException | bool | None = None,
    to: logging.Logger = logger,
    hook: str | None = None,
    fields: Mapping[str, object] | None = None,
) -> None:
    """Log through ``to`` (the ``trio_supervise`` logger or a child of it) with ``path`` and
    ``kind`` (and ``hook``, for a shutdown or reload hook, and any other ``fields``) as extra
    fields.

    With no handler anywhere (logging not configured) nothing is built: nobody would read
    it, and Python's last-resort handler would otherwise print our warnings to stderr.
    """
    if to.isEnabledFor(level) and to.hasHandlers():
        extra: dict[str, object] = {"path": path, "kind": kind}
        if hook is not None:
            extra["hook"] = hook
        if fields:
            extra.update(fields)
        to.log(level, message, *args, exc_info=exc_info, extra=extra)


class EventKind(enum.Enum):
    """What an ``Event`` reports."""

    #: A child has started for the first time (after ``started()`` for ``task_status`` targets).
    STARTED = "started"
    #: A child exited cleanly: it returned, or was stopped by its supervisor.
    EXITED = "exited"
    #: A child raised, or failed its health checks; ``error`` is the exception.
    CRASHED = "crashed"
    #: A child raised before it had started (before ``task_status.started()``); ``error``
    #: is the exception. OTP's ``start_error``: not a crash of a running child.
    START_FAILED = "start_failed"
    #: A restart was decided; ``detail`` gives the backoff delay.
    RESTART_SCHEDULED = "restart_scheduled"
    #: A restarted child has started again.
    RESTARTED = "restarted"
    #: A child was stopped by ``terminate_child`` or by the shutdown.
    TERMINATED = "terminated"
    #: A child was still running ``shutdown_timeout`` after it was asked to stop.
    STOP_TIMEOUT = "stop_timeout"
    #: A child's spec left the tree: a temporary child exited, or ``delete_child``.
    REMOVED = "removed"
    #: A singleton child's replica came to hold its lock; the child runs (``detail``: holder).
    LOCK_ACQUIRED = "lock_acquired"
    #: A singleton child's lock was lost; it was stopped and waits again (``detail``: why).
    LOCK_LOST = "lock_lost"
    #: A supervisor gave up; ``path`` is the supervisor's.
    INTENSITY_EXCEEDED = "intensity_exceeded"
    #: A child's health status changed; ``detail`` gives ``old -> new``.
    HEALTH_CHANGED = "health_changed"
    #: The tree's shutdown started; ``detail`` gives the reason.
    SHUTDOWN_STARTED = "shutdown_started"
    #: A shutdown hook finished; ``path`` is the hook's name, ``detail`` its status.
    HOOK_FINISHED = "hook_finished"
    #: The tree's shutdown finished.
    SHUTDOWN_FINISHED = "shutdown_finished"
    #: A reload hook finished (after SIGHUP or ``tree.reload()``); ``path`` is its name,
    #: ``error`` what it raised.
    RELOADED = "reloaded"


# Keyed by the kind's name: a str hash is cached, an Enum member's hash is a Python call.
_LEVELS = {
    EventKind.CRASHED.name: logging.WARNING,
    EventKind.START_FAILED.name: logging.WARNING,
    EventKind.STOP_TIMEOUT.name: logging.WARNING,
    EventKind.LOCK_LOST.name: logging.WARNING,
    EventKind.INTENSITY_EXCEEDED.name: logging.ERROR,
}


#: The kinds whose event's path is a hook's name, not a child's.
HOOK_KINDS = frozenset({EventKind.HOOK_FINISHED, EventKind.RELOADED})
# The kinds whose log record carries the error's traceback.
_WITH_TRACEBACK = frozenset({EventKind.CRASHED, EventKind.START_FAILED})


class Event(NamedTuple):
    """One thing that happened in a tree (an immutable named tuple).

    A named tuple rather than an attrs class: the tree makes one per start, exit and
    restart, and a tuple is made in half the time.

    Attributes:
      kind: what happened.
      path: the child's path (``""`` for the root supervisor; a hook's name for hooks).
      time: ``trio.current_time()`` when it happened.
      restarts: the child's restart count at that moment.
      error: the exception, for ``CRASHED`` and ``INTENSITY_EXCEEDED``.
      detail: a human-readable explanation (why it stopped, the backoff delay, ...).
    """

    kind: EventKind
    path: str
    time: float
    restarts: int = 0
    error: BaseException | None = None
    detail: str = ""

    def __str__(self) -> str:
        where = self.path or "(root)"
        text = f"{self.time:10.3f} {self.kind.name:<18} {where}"
        if self.detail:
            text += f" — {self.detail}"
        if self.error is not None:
            text += f" [{type(self.error).__name__}: {self.error}]"
        return text


_new_tuple = tuple.__new__


@final
class EventStream:
    """An async iterator over a tree's events from the moment it was made.

    Use it as an async context manager (or call ``close()``) so that the tree stops
    buffering for it; it ends by itself when the tree has finished.

    Example::

        async with tree.events() as events:
            async for event in events:
                print(event)
    """

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus
        self._send, self._receive = trio.open_memory_channel[Event](math.inf)
        bus.streams.add(self)

    def _push(self, event: Event) -> None:
        self._send.send_nowait(event)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop receiving events; buffered ones are dropped."""
        self._bus.streams.discard(self)
        self._send.close()
        self._receive.close()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@final
class EventBus:
    """Keeps the history, feeds the streams and logs each event."""

    def __init__(self, history_size: int) -> None:
        self.history: deque[Event] = deque(maxlen=history_size)
        self.streams: set[EventStream] = set()
        self.listeners: list[Callable[[Event], object]] = []
        # True once the tree has finished: no more events will come.
        self.closed = False

    def emit(
        self,
        kind: EventKind,
        path: str,
        restarts: int = 0,
        error: BaseException | None = None,
        detail: str = "",
        time: float | None = None,
    ) -> Event:
        """Record, stream and log an event; ``time`` defaults to now."""
        if time is None:
            time = trio.current_time()
        # tuple.__new__ skips the named tuple's Python-level __new__: the tree emits an
        # event per start, exit, restart and shutdown hook.
        event = _new_tuple(Event, (kind, path, time, restarts, error, detail))
        self.history.append(event)
        if self.streams:
            for stream in self.streams:
                stream._push(event)
        if self.listeners:
            self._call_listeners(event)
        level = _LEVELS.get(kind._name_, logging.INFO)
        if logger.isEnabledFor(level):  # checked here too: the hot path skips the call
            # A hook's event carries the hook's name as its path; in the log record that
            # name goes in ``hook``, so that ``path`` always means a child of the tree.
            hook = path if kind in HOOK_KINDS else None
            log(
                level,
                "%s %s%s",
                kind.name,
                path or "(root)",
                f": {detail}" if detail else "",
                path="" if hook is not None else path,
                hook=hook,
                kind=kind.name,
                exc_info=error if kind in _WITH_TRACEBACK else None,
            )
        return event

    def _call_listeners(self, event: Event) -> None:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception as exc:
                # A broken listener (a metrics exporter, say) must not break supervision.
                log(
                    logging.ERROR,
                    "event listener %r failed on %s",
                    listener,
                    event.kind.name,
                    path=event.path,
                    kind="LISTENER_FAILED",
                    exc_info=exc,
                )

    def close(self) -> None:
        self.closed = True
        for stream in list(self.streams):
            stream._send.close()
        self.streams.clear()

    def stream(self) -> EventStream:
        stream = EventStream(self)
        if self.closed:
            stream._send.close()
        return stream
