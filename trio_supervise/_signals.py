"""Signals: which ones a service handles, the handlers ``serve()`` holds, the tree's watcher.

A tree run with ``handle_signals=True`` watches the signals from a task of its own with
``trio.open_signal_receiver``: the first SIGINT or SIGTERM starts the shutdown, a second one
forces it, SIGHUP runs the reload hooks. The watcher acts on the tree through
``SignalControls`` (a few callables), so this module knows nothing of trees and sits below
``_tree.py``.

``HeldSignals`` covers the moments when no watcher is in place (before the tree's, after it is
gone): it only records.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import final

import attrs
import trio

from ._events import log

#: The signals that start the shutdown (and, the second time, force it).
STOP_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)
#: The signal that runs the reload hooks; None where the platform has no SIGHUP (Windows).
RELOAD_SIGNAL: signal.Signals | None = getattr(signal, "SIGHUP", None)
#: Every signal a tree with ``handle_signals=True`` watches, and ``HeldSignals`` holds.
HANDLED_SIGNALS: tuple[signal.Signals, ...] = STOP_SIGNALS + (
    (RELOAD_SIGNAL,) if RELOAD_SIGNAL is not None else ()
)

# The holders entered (outermost first) in the main thread and not yet left.
_holders: list[HeldSignals] = []
# True once a stop signal came while a holder was entered (recorded by it, or acted on by
# a tree's watcher): the process is shutting down because of it.
_stopping_by_signal = False


def _note_stop_signal() -> None:
    global _stopping_by_signal
    if _holders:
        _stopping_by_signal = True


@final
class HeldSignals:
    """Keep SIGINT, SIGTERM and SIGHUP handled, by record-only handlers, while entered.

    The tree handles them while it runs. Outside that (before its handlers are in place,
    and after they are gone while the last tasks finish), the default action would kill
    the process mid-exit, or raise KeyboardInterrupt, because a signal came a moment early
    or late; a storm of signals at the end of a forced shutdown did exactly that. These
    handlers only record the signal; the caller acts on one that came before the tree's
    handlers were in place (``first_stop_signal``), and the previous handlers come back on
    exit. Only in the main thread, where Python allows signal handlers; elsewhere it
    records nothing.

    Nested holders share one record: ``run()`` holds the signals around ``trio.run`` and
    ``serve()`` inside it, and a signal the outer one recorded before ``serve()`` was called
    is one ``serve()`` acts on.

    With ``ignore_after_stop`` (``run()`` and the CLI, whose return is the process's exit),
    a shutdown that a stop signal started leaves the handled signals ignored on exit instead
    of restoring the old handlers: the rest of a storm would otherwise kill the process
    half-way through its exit, with 143 instead of the exit code ``run()`` returned.
    """

    def __init__(self, *, ignore_after_stop: bool = False) -> None:
        #: The signals recorded, oldest first; shared with the outermost holder entered.
        self.received: list[signal.Signals] = []
        self._ignore_after_stop = ignore_after_stop
        # The handlers this holder replaced; empty outside the main thread.
        self._previous: dict[signal.Signals, object] = {}

    def __enter__(self) -> HeldSignals:
        global _stopping_by_signal
        if threading.current_thread() is threading.main_thread():
            if _holders:
                self.received = _holders[0].received
            else:
                _stopping_by_signal = False
            _holders.append(self)
            for signum in HANDLED_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc_info: object) -> None:
        ignore = self._ignore_after_stop and (
            _stopping_by_signal or self.first_stop_signal() is not None
        )
        for signum, handler in self._previous.items():
            signal.signal(signum, signal.SIG_IGN if ignore else handler)  # type: ignore[arg-type]
        self._previous.clear()
        if self in _holders:
            _holders.remove(self)

    def first_stop_signal(self) -> signal.Signals | None:
        """The first SIGINT or SIGTERM recorded, or None."""
        return next((signum for signum in self.received if signum in STOP_SIGNALS), None)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        # A plain Python handler runs between bytecodes: only record, never raise.
        self.received.append(signal.Signals(signum))


@attrs.frozen
class SignalControls:
    """What the signal watcher may do to a tree: read its state, shut it down, reload it.

    Attributes:
      shutting_down: True once the shutdown has been decided.
      shutdown: start the shutdown with this reason (once; later calls do nothing).
      force_shutdown: cut the shutdown short: running hooks cancelled, later bands skipped.
      has_reload_hooks: True when there is a reload hook to run.
      reload: run the reload hooks (its errors are the tree's to log, never raised).
    """

    shutting_down: Callable[[], bool]
    shutdown: Callable[[str], None]
    force_shutdown: Callable[[str], None]
    has_reload_hooks: Callable[[], bool]
    reload: Callable[[], Awaitable[object]]


@final
class _SignalWatcher:
    """The decisions on each signal, and the one reload at a time that SIGHUP asks for."""

    def __init__(self, controls: SignalControls) -> None:
        self._controls = controls
        # Set by SIGHUP; a second SIGHUP during a reload runs one more after it.
        self._reload_requested = trio.Event()
        # True once a signal forced the shutdown: further ones are dropped.
        self._forced = False

    def on_signal(self, signum: signal.Signals) -> None:
        name = signum.name
        controls = self._controls
        if signum in STOP_SIGNALS:
            _note_stop_signal()
        if signum == RELOAD_SIGNAL:
            if controls.shutting_down():
                log(
                    logging.INFO,
                    "received %s during the shutdown: ignored",
                    name,
                    path="",
                    kind="SIGNAL",
                )
            elif not controls.has_reload_hooks():
                log(
                    logging.INFO,
                    "received %s: no reload hooks registered; ignored",
                    name,
                    path="",
                    kind="SIGNAL",
                )
            else:
                log(logging.INFO, "received %s: reloading", name, path="", kind="SIGNAL")
                self._reload_requested.set()
        elif not controls.shutting_down():
            log(
                logging.WARNING,
                "received %s: shutting down (send it again to force)",
                name,
                path="",
                kind="SIGNAL",
            )
            controls.shutdown(f"signal {name}")
        elif not self._forced:
            log(
                logging.WARNING,
                "received %s again: forcing the shutdown",
                name,
                path="",
                kind="SIGNAL",
            )
            self._forced = True
            controls.force_shutdown(f"second signal {name}")
        else:  # at DEBUG: a storm of signals must not flood the log of a dying service
            log(
                logging.DEBUG,
                "received %s after the forced shutdown: dropped",
                name,
                path="",
                kind="SIGNAL",
            )

    async def reload_on_request(self) -> None:
        # One reload at a time; SIGHUPs that come during one coalesce into the next.
        while True:
            await self._reload_requested.wait()
            self._reload_requested = trio.Event()
            await self._controls.reload()


async def watch_signals(
    controls: SignalControls, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Act on ``HANDLED_SIGNALS`` until cancelled; ``started()`` once the handlers are in place.

    The first SIGINT or SIGTERM calls ``controls.shutdown("signal SIGTERM")``; one during
    the shutdown forces it (once; later ones are dropped). SIGHUP runs ``controls.reload``,
    one reload at a time (SIGHUPs during a reload make one more after it); it is logged and
    ignored during the shutdown or when there are no reload hooks.

    Raises:
      RuntimeError: outside the main thread (from ``trio.open_signal_receiver``).
    """
    watcher = _SignalWatcher(controls)
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(*HANDLED_SIGNALS) as signals:
            nursery.start_soon(watcher.reload_on_request)
            task_status.started()
            async for signum in signals:
                watcher.on_signal(signal.Signals(signum))
