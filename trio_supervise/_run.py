"""``run()``: the ``main()`` of a supervised service."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

import trio

from ._errors import ChildStartError, RestartIntensityExceeded
from ._events import log
from ._shutdown import ShutdownHook
from ._spec import SupervisorSpec
from ._tree import SupervisorTree, supervisor_tree

#: Seconds past ``shutdown_deadline`` before ``run()`` gives up on tasks that refuse to stop.
HARD_EXIT_GRACE = 5.0
#: The exit code of a hard exit, as after an orchestrator's SIGKILL.
HARD_EXIT_CODE = 137


def _hard_exit(tree: SupervisorTree) -> None:
    unstopped = tree.unstopped() or [
        info.path for info in tree.children() if info.state.value != "stopped"
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
    grace: float = HARD_EXIT_GRACE,
) -> int:
    """The async body of ``run()``: run the tree until a signal or its end; return the exit code."""
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
    return trio.run(lambda: serve(spec, hooks=hooks, shutdown_deadline=shutdown_deadline))
