"""The multi-core demo: HTTP served by worker processes that share one listening socket.

``trio-supervise demo --workers N`` (N > 1) splits the demo over N + 1 processes:

* **The parent** binds the HTTP port once and passes the socket to N worker processes
  (``ChildSpec.process`` with ``pass_fds``); the kernel hands each new connection to one of
  the workers waiting in ``accept()``. It supervises them one-for-one under ``http``, with
  ``concurrent_stop`` so that a shutdown drains them all at once, and keeps what must exist
  once: the WebSocket server, which follows the notes table to broadcast the notes any
  worker stored (``note-feed``); the notes counter and the flaky worker; and its own
  ``/tree`` (the workers with their pids and restarts), ``/metrics`` and health on
  ``--admin-port``.
* **Each worker** (``--worker-fd``) serves the HTTP API on the shared socket with its own
  database connection, and tells the parent it is ready with ``READY=1`` on the notify
  socket the parent gave it (``serve()`` sends it when ``NOTIFY_SOCKET`` is set). The
  DSN reaches it in ``DATABASE_URL``, not on its command line. Its log lines become the
  parent's, as the output of its process child.

Shutdown: the parent's supervisor sends SIGTERM to every worker at once; each keeps serving
for the drain delay while its ``/health/ready`` says 503, stops accepting and drains its
requests, all within one deadline. Then the parent closes the WebSocket connections and the
database.
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import Final

from trio_supervise import Backoff, ChildSpec, Ready, SupervisorSpec

#: Where a worker finds the DSN: the variable ``trio-supervise demo`` reads without ``--db``.
DB_ENV: Final = "DATABASE_URL"

#: Seconds of the parent's deadline kept for what follows the workers' drain.
PARENT_RESERVE: Final = 3.0
#: Seconds a worker may overrun its own deadline before the parent kills it: its hard exit
#: comes first.
WORKER_OVERRUN: Final = 1.0
#: Connections the shared socket queues while every worker is busy.
BACKLOG: Final = 1024


def open_listener(host: str, port: int) -> socket.socket:
    """The parent's listening socket on ``host:port``, passed to every worker."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host.strip("[]"), port), family=family, backlog=BACKLOG)


def worker_deadline(shutdown_deadline: float, drain_delay: float) -> float:
    """A worker's shutdown deadline: the parent's, less what the parent does after it."""
    return max(shutdown_deadline - PARENT_RESERVE, (shutdown_deadline + drain_delay) / 2)


def workers_spec(
    count: int,
    listener: socket.socket,
    *,
    db: str,
    host: str,
    drain_delay: float,
    shutdown_deadline: float,
) -> SupervisorSpec:
    """The ``http`` supervisor of ``count`` worker processes serving ``listener``."""
    fd = listener.fileno()
    deadline = worker_deadline(shutdown_deadline, drain_delay)
    level = logging.getLevelName(logging.getLogger("trio_supervise").getEffectiveLevel())
    command = [
        sys.executable,
        "-m",
        "trio_supervise",
        "demo",
        "--worker-fd",
        str(fd),
        "--host",
        host,
        "--drain-delay",
        repr(drain_delay),
        "--shutdown-deadline",
        repr(deadline),
        "--log-level",
        level if isinstance(level, str) else "INFO",
    ]
    workers = [
        ChildSpec.process(
            f"w{number}",
            command,
            env={DB_ENV: db},
            pass_fds=[fd],
            ready=Ready.notify(),
            shutdown_timeout=deadline + WORKER_OVERRUN,
        )
        for number in range(1, count + 1)
    ]
    return SupervisorSpec(
        "http",
        workers,
        concurrent_stop=True,
        # A killed worker is back within 0.1 s; one that keeps dying waits up to 2 s, and
        # the others serve meanwhile.
        backoff=Backoff(initial=0.1, maximum=2.0),
        max_restarts=3 * count,
        max_seconds=5,
    )
