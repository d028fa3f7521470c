"""The supervising processes of ``bench_process`` that are not peers: the floor and ours.

Run as a script, each in a process of its own, as supervisord and circusd are::

    python _process_parents.py floor|supervise FIFO MODE N KILL_TIMEOUT
    python _process_parents.py stage python|trio|trio_supervise|tree0 FIFO

* ``floor``: the bare Python parent, the floor of any supervisor written in Python: it
  ``subprocess.Popen``s the N programs, waits for any of them to exit (``os.waitid``, which
  blocks in the kernel until a child exits) and starts it again at once; on SIGTERM it sends
  SIGTERM to every program, waits up to KILL_TIMEOUT seconds for them (a pidfd each, one
  ``poll``), then SIGKILLs the rest. It imports nothing but the standard library and does
  nothing else (no output capture, no process groups, no parent-death handling).
* ``supervise``: ``trio_supervise.run`` of a root with the N programs as
  ``ChildSpec.process(name, command, shutdown_timeout=KILL_TIMEOUT)``, ``backoff=None``,
  ``concurrent_stop=True`` and an intensity that never gives up; SIGTERM is its graceful
  shutdown.
* ``stage``: what the memory of ``supervise`` is made of: an interpreter that has imported
  nothing more (``python``), ``trio``, ``trio_supervise``, or runs a tree without children
  (``tree0``); it reports ``stage PID`` to the FIFO and waits for a signal.

The programs are ``_process_program.py`` (its docstring says what they report); MODE is
theirs (``plain``, ``ignore``, ``grandchild``), named ``p00`` ... in order.

Nothing but the standard library is imported at the top, so that ``floor`` and ``stage
python`` are not charged for trio.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

PROGRAM = str(Path(__file__).resolve().with_name("_process_program.py"))


def program_commands(
    fifo: str, mode: str, n: int, python: str = sys.executable
) -> dict[str, list[str]]:
    """The command of each program, by name (the same for every supervisor)."""
    return {f"p{i:02d}": [python, "-I", "-S", PROGRAM, fifo, f"p{i:02d}", mode] for i in range(n)}


def report(fifo: str, line: str) -> None:
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


class _Stop(Exception):
    """Raised by the floor's SIGTERM handler out of its wait."""


def floor(commands: dict[str, list[str]], kill_timeout: float) -> int:
    stopping = False
    waiting = False

    def on_sigterm(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if waiting:
            raise _Stop

    signal.signal(signal.SIGTERM, on_sigterm)
    children: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}

    def spawn(name: str) -> None:
        popen = subprocess.Popen(commands[name])
        children[popen.pid] = (name, popen)

    def reap(pid: int) -> None:
        _, status = os.waitpid(pid, 0)
        name, popen = children.pop(pid)
        popen.returncode = os.waitstatus_to_exitcode(status)
        if not stopping:
            spawn(name)

    for name in commands:
        spawn(name)
    while not stopping:
        waiting = True
        try:
            # Without reaping (WNOWAIT): a SIGTERM arriving just after it returns loses nothing.
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
        except _Stop:
            break
        finally:
            waiting = False
        if info is not None:
            reap(info.si_pid)
    for pid in children:
        os.kill(pid, signal.SIGTERM)
    pidfds = {os.pidfd_open(pid): pid for pid in children}
    poller = select.poll()
    for fd in pidfds:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + kill_timeout
    killed = False
    while pidfds:
        remaining = deadline - time.monotonic()
        if remaining <= 0 and not killed:
            for pid in pidfds.values():
                os.kill(pid, signal.SIGKILL)
            killed = True
        timeout_ms = None if killed else max(1, round(remaining * 1000))
        for fd, _ in poller.poll(timeout_ms):
            poller.unregister(fd)
            reap(pidfds.pop(fd))
            os.close(fd)
    return 0


def supervise(commands: dict[str, list[str]], kill_timeout: float) -> int:
    import trio_supervise
    from trio_supervise import ChildSpec, SupervisorSpec

    spec = SupervisorSpec(
        "bench",
        [
            ChildSpec.process(name, command, shutdown_timeout=kill_timeout)
            for name, command in commands.items()
        ],
        backoff=None,
        concurrent_stop=True,
        max_restarts=10**9,
        max_seconds=1.0,
    )
    return trio_supervise.run(spec)


def stage(name: str, fifo: str) -> int:
    if name == "tree0":
        import trio_supervise
        from trio_supervise import SupervisorSpec

        def started(tree: object) -> None:
            report(fifo, f"stage {os.getpid()}")

        return trio_supervise.run(SupervisorSpec("bench", []), on_start=started)
    if name == "trio":
        import trio  # noqa: F401
    elif name == "trio_supervise":
        import trio_supervise
    elif name != "python":
        raise SystemExit(f"unknown stage {name!r}")
    report(fifo, f"stage {os.getpid()}")
    while True:
        signal.pause()


def main(argv: list[str]) -> int:
    if argv[0] == "stage":
        return stage(argv[1], argv[2])
    kind, fifo, mode, n, kill_timeout = argv
    commands = program_commands(fifo, mode, int(n))
    if kind == "floor":
        return floor(commands, float(kill_timeout))
    if kind == "supervise":
        return supervise(commands, float(kill_timeout))
    raise SystemExit(f"unknown kind {kind!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
