"""``run()``: the ``main()`` of a supervised service."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Sequence
from types import FrameType

import trio

from ._context import ChildState
from ._errors import ChildStartError, RestartIntensityExceeded
from ._events import log
from ._health import walk
from ._shutdown import ShutdownHook
from ._spec import SupervisorSpec
from ._tree import _RELOAD_SIGNAL, _STOP_SIGNALS, SupervisorTree, supervisor_tree

#: Seconds past ``shutdown_deadline`` before ``run()`` gives up on tasks that refuse to stop.
HARD_EXIT_GRACE = 5.0
#: The exit code of a hard exit, as after an orchestrator's SIGKILL.
HARD_EXIT_CODE = 137


#: The signals ``run()`` keeps handled from start to end (see ``_HeldSignals``).
_SIGNALS = _STOP_SIGNALS + ((_RELOAD_SIGNAL,) if _RELOAD_SIGNAL is not None else ())


def _hard_exit(tree: SupervisorTree) -> None:
    # Children past their shutdown_timeout first; else any child, at any depth, still up.
    unstopped = tree.unstopped() or [
        child.path for child in walk(tree._root) if child.state is not ChildState.STOPPED
    ]
    log(
        logging.CRITICAL,
        "shutdown overran its deadline and grace; children still running: %s; exiting hard",
        ", ".join(unstopped) or "(none found: a task outside the tree)",
        path="",
        kind="HARD_EXIT",
    )
    logging.shutdown()
    os._exit(HARD_EXIT_CODE)


async def serve(
    spec: SupervisorSpec,
    *,
    hooks: Sequence[ShutdownHook] = (),
    shutdown_deadline: float = 30.0,
    grace: float | None = None,
    _held: _HeldSignals | None = None,
) -> int:
    """The async body of ``run()``: run the tree until a signal or its end; return the exit code.

    ``grace`` defaults to ``HARD_EXIT_GRACE`` as it is when ``serve()`` is called.
    """
    if grace is None:
        grace = HARD_EXIT_GRACE
    timer: threading.Timer | None = None
    try:
        async with supervisor_tree(
            spec,
            hooks=hooks,
            shutdown_deadline=shutdown_deadline,
            handle_signals=True,
            notify_systemd=True,
        ) as tree:
            try:
                early = [s for s in (_held.received if _held else []) if s != _RELOAD_SIGNAL]
                if early:  # it came before the tree's own handlers were in place
                    tree.shutdown(f"signal {early[0].name} during the start")
                await trio.sleep_forever()
            finally:
                # The body ends when the shutdown starts. A thread, so that the hard exit
                # comes even if a task blocks the event loop.
                timer = threading.Timer(shutdown_deadline + grace, _hard_exit, (tree,))
                timer.daemon = True
                timer.start()
    except (RestartIntensityExceeded, ChildStartError) as exc:
        log(logging.ERROR, "the tree failed: %s", exc, path="", kind="FAILED", exc_info=exc)
        return 1
    finally:
        if timer is not None:
            timer.cancel()
    report = tree.shutdown_report
    return 0 if report is not None and report.ok else 1


def run(
    spec: SupervisorSpec, *, hooks: Sequence[ShutdownHook] = (), shutdown_deadline: float = 30.0
) -> int:
    """Run a service: ``trio.run`` a tree with signal handling until a signal or its end.

    SIGINT or SIGTERM starts the graceful shutdown, a second one forces it. When the
    shutdown overruns ``shutdown_deadline`` by ``HARD_EXIT_GRACE`` seconds and tasks still
    refuse to stop, the unstopped children are logged and the process exits hard with code
    137, as it would after an orchestrator's SIGKILL; it never hangs.

    Under systemd (``$NOTIFY_SOCKET`` set, as for a ``Type=notify`` unit) it reports
    ``READY=1``, ``STOPPING=1``, ``STATUS=`` lines and, with ``WatchdogSec=``, watchdog
    pings: see ``supervisor_tree(notify_systemd=True)`` and ``SystemdNotifier``.

    Returns:
      The process exit code: 0 after a graceful shutdown in which every hook finished
      ``ok``; 1 after a failure of the tree, a hook error or timeout, the deadline, or a
      forced shutdown.

    Example::

        if __name__ == "__main__":
            sys.exit(trio_supervise.run(spec))
    """
    with _HeldSignals() as held:
        return trio.run(
            lambda: serve(spec, hooks=hooks, shutdown_deadline=shutdown_deadline, _held=held)
        )


class _HeldSignals:
    """Keep SIGINT, SIGTERM and SIGHUP handled for all of ``run()``.

    The tree handles them while it runs. Outside that (before its handlers are in place,
    and after they are gone while the last tasks finish), the default action would kill
    the process mid-exit, or raise KeyboardInterrupt, because a signal came a moment early
    or late; a storm of signals at the end of a forced shutdown did exactly that. These
    handlers only record the signal; ``run()`` acts on one that came before the tree's
    handlers were in place, and the previous handlers come back when it returns. Only in
    the main thread, where Python allows signal handlers.
    """

    def __init__(self) -> None:
        self.received: list[signal.Signals] = []
        self._previous: dict[signal.Signals, object] = {}

    def __enter__(self) -> _HeldSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _record(self, signum: int, frame: FrameType | None) -> None:
        # A plain Python handler runs between bytecodes: only record, never raise.
        self.received.append(signal.Signals(signum))
