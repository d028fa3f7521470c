"""``run()`` and its async twin ``serve()``: the ``main()`` of a supervised service."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import final

import trio

from ._context import ChildState
from ._errors import ChildStartError, RestartIntensityExceeded
from ._events import log
from ._shutdown import ShutdownHook
from ._signals import HeldSignals
from ._spec import SupervisorSpec
from ._tree import SupervisorTree, supervisor_tree

#: Seconds past ``shutdown_deadline`` before ``run()`` gives up on tasks that refuse to stop.
HARD_EXIT_GRACE = 5.0
#: The exit code of a hard exit, as after an orchestrator's SIGKILL.
HARD_EXIT_CODE = 137


def _still_up(tree: SupervisorTree, path: str = "") -> list[str]:
    """Every child at any depth below ``path`` that is not stopped, through the public API."""
    up: list[str] = []
    for info in tree.children(path):
        if info.state is not ChildState.STOPPED:
            up.append(info.path)
            if info.kind == "supervisor":
                with contextlib.suppress(LookupError):  # between two runs: no children
                    up += _still_up(tree, info.path)
    return up


def _hard_exit(tree: SupervisorTree) -> None:
    # Children past their shutdown_timeout first; else any child, at any depth, still up.
    unstopped = tree.unstopped() or _still_up(tree)
    log(
        logging.CRITICAL,
        "shutdown overran its deadline and grace; children still running: %s; exiting hard",
        ", ".join(unstopped) or "(none found: a task outside the tree)",
        path="",
        kind="HARD_EXIT",
    )
    logging.shutdown()
    os._exit(HARD_EXIT_CODE)


@final
class _HardExitTimer:
    """A thread, started ahead of time, that exits the process once armed and overdue.

    A thread, so that the hard exit comes even if a task blocks the event loop; started
    before the tree, so that arming it when the shutdown starts costs a notify, not a thread
    start (0.3 to 0.6 ms spent before the first child could be asked to stop).
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._due: float | None = None
        self._tree: SupervisorTree | None = None
        self._cancelled = False
        self._thread = threading.Thread(
            target=self._wait, name="trio_supervise hard exit", daemon=True
        )
        self._thread.start()

    def arm(self, seconds: float, tree: SupervisorTree) -> None:
        with self._changed:
            self._due, self._tree = time.monotonic() + seconds, tree
            self._changed.notify()

    def cancel(self) -> None:
        with self._changed:
            self._cancelled = True
            self._changed.notify()
        self._thread.join()

    def _wait(self) -> None:
        with self._changed:
            while not self._cancelled:
                due = self._due
                if due is None:
                    self._changed.wait()
                    continue
                left = due - time.monotonic()
                if left <= 0:
                    assert self._tree is not None
                    _hard_exit(self._tree)
                self._changed.wait(left)


async def serve_with_grace(
    spec: SupervisorSpec,
    *,
    hooks: Sequence[ShutdownHook] = (),
    shutdown_deadline: float = 30.0,
    reload_hooks: Mapping[str, Callable[[], Awaitable[object]]] | None = None,
    on_start: Callable[[SupervisorTree], object] | None = None,
    grace: float,
) -> int:
    """``serve()`` with the hard exit ``grace`` seconds past the deadline (tests shorten it)."""
    if on_start is not None and (not callable(on_start) or inspect.iscoroutinefunction(on_start)):
        raise TypeError(
            "serve(): on_start must be a plain function taking the tree, such as"
            f" metrics.attach (got {on_start!r}); an async one would never be awaited"
        )
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "trio_supervise.serve() and run() handle signals, which Python allows only in the"
            f" main thread (called from thread {threading.current_thread().name!r}); call them"
            " from the main thread, or run supervisor_tree(spec) without handle_signals here"
        )
    with HeldSignals() as held:
        timer = _HardExitTimer()
        try:
            async with supervisor_tree(
                spec,
                hooks=hooks,
                shutdown_deadline=shutdown_deadline,
                handle_signals=True,
                notify_systemd=True,
                reload_hooks=reload_hooks,
            ) as tree:
                try:
                    if on_start is not None:
                        on_start(tree)
                    early = held.first_stop_signal()
                    if early is not None:  # it came before the tree's own handlers were in place
                        tree.shutdown(f"signal {early.name} during the start")
                    await trio.sleep_forever()
                finally:
                    timer.arm(shutdown_deadline + grace, tree)  # the body ends at the shutdown
        except (RestartIntensityExceeded, ChildStartError) as exc:
            log(logging.ERROR, "the tree failed: %s", exc, path="", kind="FAILED", exc_info=exc)
            return 1
        finally:
            timer.cancel()
    report = tree.shutdown_report
    return 0 if report is not None and report.ok else 1


async def serve(
    spec: SupervisorSpec,
    *,
    hooks: Sequence[ShutdownHook] = (),
    shutdown_deadline: float = 30.0,
    reload_hooks: Mapping[str, Callable[[], Awaitable[object]]] | None = None,
    on_start: Callable[[SupervisorTree], object] | None = None,
) -> int:
    """Serve a tree until a signal or its end, and return the exit code: ``run()``'s async twin.

    For a ``main()`` that does async set-up first (opens a database, reads a secret) and
    then runs its tree as ``run()`` would: the same signals, banded shutdown, systemd
    notifications, hard exit and exit codes, inside ``trio.run``.

    Signals:
      From the moment ``serve()`` is called SIGINT, SIGTERM and SIGHUP are handled until
      it returns: one that comes before the tree's own handlers are in place starts the
      shutdown as soon as the tree has started, and one after they are gone is recorded
      and dropped instead of killing the process half-way through its exit. Before the
      call they have their usual effect (in ``trio.run``, SIGINT raises
      ``KeyboardInterrupt``; SIGTERM ends the process): set-up that may take long should
      watch them itself (``trio.open_signal_receiver``). Under ``run()``, or inside another
      holder of the package, a signal recorded before the call counts too. Call it from
      the main thread, where Python allows signal handlers.

    Hard exit:
      When the shutdown overruns ``shutdown_deadline`` by ``HARD_EXIT_GRACE`` seconds (as
      set when ``serve()`` is called), the unstopped children are logged and the process
      exits with code 137, from a thread, even if a task blocks the event loop.

    Args:
      spec: the root supervisor.
      hooks: shutdown hooks (see ``ShutdownHook``).
      shutdown_deadline: seconds the whole shutdown may take.
      reload_hooks: what SIGHUP runs, by name (as ``supervisor_tree(reload_hooks=...)``).
      on_start: called with the tree once every child has started, before the service
        waits for its end: ``on_start=metrics.attach``, for one. A plain function; what it
        raises ends the service like an exception of ``supervisor_tree``'s body.

    Returns:
      The process exit code: 0 after a graceful shutdown in which every hook finished
      ``ok``; 1 after a failure of the tree, a hook error or timeout, the deadline, or a
      forced shutdown.

    Raises:
      SpecError: a bad ``spec``, hook, reload hook or deadline (as ``supervisor_tree``).
      TypeError: ``on_start`` is not a plain function.
      RuntimeError: outside the main thread, where Python allows no signal handlers.

    Example::

        async def main() -> int:
            db = await open_database("app.db")
            return await trio_supervise.serve(spec, hooks=db.shutdown_hooks())

        if __name__ == "__main__":
            sys.exit(trio.run(main))
    """
    return await serve_with_grace(
        spec,
        hooks=hooks,
        shutdown_deadline=shutdown_deadline,
        reload_hooks=reload_hooks,
        on_start=on_start,
        grace=HARD_EXIT_GRACE,
    )


def run(
    spec: SupervisorSpec,
    *,
    hooks: Sequence[ShutdownHook] = (),
    shutdown_deadline: float = 30.0,
    reload_hooks: Mapping[str, Callable[[], Awaitable[object]]] | None = None,
    on_start: Callable[[SupervisorTree], object] | None = None,
) -> int:
    """Run a service: ``trio.run`` a tree with signal handling until a signal or its end.

    SIGINT or SIGTERM starts the graceful shutdown, a second one forces it. When the
    shutdown overruns ``shutdown_deadline`` by ``HARD_EXIT_GRACE`` seconds and tasks still
    refuse to stop, the unstopped children are logged and the process exits hard with code
    137, as it would after an orchestrator's SIGKILL; it never hangs. The signals are held
    (recorded, see ``serve()``) from before ``trio.run`` starts until it has returned, so
    none is lost or kills the process in between; after a shutdown that a stop signal
    started, they stay ignored, so that the rest of a storm cannot kill the exit that
    follows (restore them with ``signal.signal`` to carry on after ``run()``). For async
    set-up before the tree, use ``serve()`` in your own ``trio.run``.

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
    with HeldSignals(ignore_after_stop=True):
        return trio.run(
            partial(
                serve,
                spec,
                hooks=hooks,
                shutdown_deadline=shutdown_deadline,
                reload_hooks=reload_hooks,
                on_start=on_start,
            )
        )
