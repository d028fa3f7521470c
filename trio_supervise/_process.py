"""One run of a process child: spawn, readiness, output, and the stop ladder (contract §7).

The runner treats a run as a service (``run()`` and ``stop()``), so the supervisor's stop
sequence applies unchanged: ``stop()`` sends ``stop_signal`` to the process group; once the
child's ``shutdown_timeout`` has passed the supervisor emits ``STOP_TIMEOUT`` and cancels
``run()``, which kills the group with SIGKILL.

How a process is spawned and kept from leaking, and why:

* ``subprocess.Popen(start_new_session=True)``: CPython's C code calls ``setsid()`` between
  fork and exec, so each run is a session and process group of its own and no ``preexec_fn``
  runs Python in the forked child (unsafe once threads run, and Trio runs threads).
* Parent death: one guardian process per supervising process (``_guardian.py``) is told each
  group we start and each we are done with; when its pipe from us reaches end of file, which
  the kernel guarantees even after SIGKILL, it kills every group still listed. Chosen over
  ``PR_SET_PDEATHSIG``, which needs ``preexec_fn`` or an exec shim per child, fires when the
  forking *thread* ends (Trio spawns from whichever thread), and reaches only the group leader,
  not the grandchildren in its group. One small process serves every child.
* Pid reuse: the leader is waited for through a pidfd without being reaped (``WNOWAIT``).
  While it is an unreaped zombie its pid, and so the group's id, cannot be reused, so the
  group is signalled only before the leader is reaped, and then the rest of the group is
  killed before the leader is reaped: nothing of the group survives the child's run.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import final

import trio

from ._errors import HealthCheckFailed, ProcessExited
from ._events import log
from ._process_spec import ProcessTarget, Ready, ReadyKind

logger = logging.getLogger("trio_supervise.process")

#: Lines of output a run keeps (``ChildInfo.output_tail``).
TAIL_LINES = 100
#: A line longer than this is logged and kept in pieces of this many bytes.
MAX_LINE = 64 * 1024
#: How often ``Ready.tcp`` tries to connect.
TCP_RETRY = 0.05
#: After the group is dead, how long its output may take to reach end of file (a process
#: that left the group may hold the pipe open for ever).
DRAIN_GRACE = 0.5
#: How long a SIGKILLed group may take to die before we report it and move on.
KILL_WAIT = 10.0

# Variables of a service manager that the supervisor's own environment may hold and that
# would make a child talk to it as if it were the supervisor: only we set them.
_MANAGER_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


@final
class _Guardian:
    """The client side of ``_guardian.py``: one guardian per supervising process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._groups: set[int] = set()

    def watch(self, group: int) -> None:
        with self._lock:
            self._groups.add(group)
            self._send(f"+{group}\n")

    def forget(self, group: int) -> None:
        with self._lock:
            self._groups.discard(group)
            self._send(f"-{group}\n")

    def _send(self, line: str) -> None:
        for _ in range(2):
            process = self._process
            if process is None or process.poll() is not None:
                process = self._start()
                line = "".join(f"+{group}\n" for group in self._groups)
            assert process.stdin is not None
            try:
                process.stdin.write(line.encode())
                process.stdin.flush()
                return
            except BrokenPipeError:  # it died: start another with the whole list
                self._process = None
        raise RuntimeError("trio_supervise: cannot start the process guardian")

    def _start(self) -> subprocess.Popen[bytes]:
        if self._process is not None:
            self._process.wait()
        script = Path(__file__).with_name("_guardian.py")
        self._process = subprocess.Popen(
            [sys.executable, "-I", "-S", str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self._process


guardian = _Guardian()


@final
class ProcessRun:
    """One run of a process child (a service object for the runner)."""

    def __init__(self, target: ProcessTarget, path: str, restarts: int) -> None:
        self.target = target
        self.path = path
        self.restarts = restarts
        self.pid: int | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.status: str | None = None
        self._stop_asked = False
        self._popen: subprocess.Popen[bytes] | None = None
        self._pidfd = -1
        self._exited = trio.Event()
        self._returncode: int | None = None
        self._ready = trio.Event()
        self._drained = trio.Event()
        # True while _wait_exit waits on the pidfd (one waiter per fd at a time in Trio).
        self._exit_waiter = False
        self._last_watchdog = 0.0
        self._notify: trio.socket.SocketType | None = None
        self._notify_dir: str | None = None

    @property
    def running_pid(self) -> int | None:
        """The pid while the process runs (not once it has exited)."""
        return None if self._exited.is_set() else self.pid

    # ------------------------------------------------------------------ service interface

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self._stop_asked:  # asked before it was spawned
            task_status.started()
            return
        failure: BaseException | None = None
        not_ready = ""
        ready = self.target.ready
        try:
            out_fd, err_fd = self._spawn()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_all, out_fd, err_fd)
                nursery.start_soon(self._wait_exit)
                if self._notify is not None:
                    nursery.start_soon(self._notifications)
                not_ready = await self._until_ready(ready)
                if not not_ready:
                    task_status.started()
                    if ready is not None and ready.watchdog is not None:
                        failure = await self._watch(ready.watchdog)
                    else:
                        await self._exited.wait()
                await self._end_group()
                with trio.move_on_after(DRAIN_GRACE):
                    await self._drained.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self._end_group()
                self._close()
        if self._stop_asked:
            return  # whatever it did once asked to stop is a clean exit
        if not_ready:
            raise self._exited_error(not_ready)
        if failure is not None:
            raise failure
        if self._returncode != 0:
            raise self._exited_error()

    async def stop(self) -> None:
        """Send ``stop_signal`` to the group; whatever the process does next is a clean exit."""
        self._stop_asked = True
        self._signal_group(self.target.stop_signal)
        await trio.lowlevel.checkpoint()

    # ------------------------------------------------------------------------- spawning

    def _spawn(self) -> tuple[int, int]:
        target = self.target
        env = {k: v for k, v in os.environ.items() if k not in _MANAGER_VARIABLES}
        env["TRIO_SUPERVISE_PATH"] = self.path
        env["TRIO_SUPERVISE_RESTARTS"] = str(self.restarts)
        env.update(target.env)
        ready = target.ready
        if ready is not None and ready.kind is ReadyKind.NOTIFY:
            env["NOTIFY_SOCKET"] = self._open_notify_socket()
            if ready.watchdog is not None:
                env["WATCHDOG_USEC"] = str(round(ready.watchdog * 1_000_000))
        program = shutil.which(target.command[0], path=env.get("PATH")) or target.command[0]
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            self._popen = subprocess.Popen(
                [program, *target.command[1:]],
                stdin=subprocess.DEVNULL,
                stdout=out_write,
                stderr=err_write,
                env=env,
                cwd=target.cwd,
                pass_fds=target.pass_fds,
                start_new_session=True,
            )
        except BaseException:
            for fd in (out_read, err_read):
                os.close(fd)
            raise
        finally:
            os.close(out_write)
            os.close(err_write)
        self.pid = self._popen.pid
        guardian.watch(self.pid)
        self._pidfd = _pidfd_open(self.pid)
        self._last_watchdog = trio.current_time()
        return out_read, err_read

    def _open_notify_socket(self) -> str:
        self._notify_dir = tempfile.mkdtemp(prefix="trio-supervise-")
        path = os.path.join(self._notify_dir, "notify")
        # Bound before the spawn: the path must exist before the process can send to it.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        self._notify = trio.socket.from_stdlib_socket(sock)
        return path

    # ------------------------------------------------------------------------ readiness

    async def _until_ready(self, ready: Ready | None) -> str:
        """``""`` once ready; why it failed to start if it exited or timed out first."""
        if ready is None:
            return ""
        with trio.move_on_after(ready.timeout) as waiting:
            async with trio.open_nursery() as nursery:

                async def exited() -> None:
                    await self._exited.wait()
                    nursery.cancel_scope.cancel()

                async def became_ready() -> None:
                    if ready.kind is ReadyKind.TCP:
                        await self._connect_until_ready(ready)
                    await self._ready.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(exited)
                nursery.start_soon(became_ready)
        if self._ready.is_set():
            return ""
        what = _describe_ready(ready)
        if waiting.cancelled_caught:
            return f"was not ready within {ready.timeout:g}s ({what}); killed it"
        return f"exited before it was ready ({what})"

    async def _connect_until_ready(self, ready: Ready) -> None:
        while not self._ready.is_set():
            try:
                stream = await trio.open_tcp_stream(ready.host, ready.port)
            except OSError:
                await trio.sleep(TCP_RETRY)
            else:
                await stream.aclose()
                self._ready.set()

    async def _notifications(self) -> None:
        assert self._notify is not None
        while True:
            data = await self._notify.recv(65536)
            for line in data.decode("utf-8", "replace").splitlines():
                key, _, value = line.partition("=")
                if key == "READY" and value == "1":
                    self._ready.set()
                elif key == "STATUS":
                    self.status = value
                    self._log(logging.INFO, "PROCESS_STATUS", "notify", "status: %s", value)
                elif key == "WATCHDOG" and value == "1":
                    self._last_watchdog = trio.current_time()
                elif key == "WATCHDOG" and value == "trigger":
                    self._last_watchdog = -math.inf

    async def _watch(self, watchdog: float) -> BaseException | None:
        """Wait for the exit; the health failure if no ``WATCHDOG=1`` came for ``watchdog`` s."""
        while not self._exited.is_set():
            due = self._last_watchdog + watchdog
            if trio.current_time() >= due:
                await self._kill_group()
                return HealthCheckFailed(
                    f"process child {self.path!r} sent no WATCHDOG=1 for {watchdog:g}s; killed it"
                )
            with trio.move_on_at(due):
                await self._exited.wait()
        return None

    # --------------------------------------------------------------------------- output

    async def _read_all(self, out_fd: int, err_fd: int) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read, out_fd, "stdout", logging.INFO)
            nursery.start_soon(self._read, err_fd, "stderr", logging.WARNING)
        self._drained.set()

    async def _read(self, fd: int, stream_name: str, level: int) -> None:
        pattern = self._line_pattern()
        async with trio.lowlevel.FdStream(fd) as stream:
            pending = b""
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    break
                pending += data
                *lines, pending = pending.split(b"\n")
                while len(pending) > MAX_LINE:
                    lines.append(pending[:MAX_LINE])
                    pending = pending[MAX_LINE:]
                for raw in lines:
                    self._line(raw, stream_name, level, pattern)
            if pending:
                self._line(pending, stream_name, level, pattern)

    def _line(
        self, raw: bytes, stream_name: str, level: int, pattern: re.Pattern[str] | None
    ) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        self.tail.append(line)
        self._log(level, "PROCESS_OUTPUT", stream_name, "%s", line)
        if pattern is not None and pattern.search(line):
            self._ready.set()

    def _line_pattern(self) -> re.Pattern[str] | None:
        ready = self.target.ready
        return ready.pattern if ready is not None and ready.kind is ReadyKind.LINE else None

    def _log(self, level: int, kind: str, stream_name: str, message: str, *args: object) -> None:
        """A record of this run: ``path: message``, with ``path``, ``pid`` and ``stream``."""
        log(
            level,
            f"%s: {message}",
            self.path,
            *args,
            path=self.path,
            kind=kind,
            to=logger,
            fields={"pid": self.pid, "stream": stream_name},
        )

    # ------------------------------------------------------------------ exit and signals

    async def _wait_exit(self) -> None:
        """Wait until the leader has exited, without reaping it (see the module docstring)."""
        self._exit_waiter = True
        try:
            await self._leader_exit()
        finally:
            self._exit_waiter = False
        self._exited.set()

    async def _leader_exit(self) -> None:
        if self._pidfd >= 0:
            await trio.lowlevel.wait_readable(self._pidfd)
        else:
            pid = self.pid
            assert pid is not None
            await trio.to_thread.run_sync(
                os.waitid, os.P_PID, pid, os.WEXITED | os.WNOWAIT, abandon_on_cancel=True
            )

    def _signal_group(self, signum: int) -> None:
        """Signal the group while its leader is unreaped (so its id is still ours)."""
        if self.pid is None or self._returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)

    async def _kill_group(self) -> None:
        self._signal_group(signal.SIGKILL)
        with trio.move_on_after(KILL_WAIT):
            await self._exited.wait()

    async def _end_group(self) -> None:
        """Kill what is left of the group and reap the leader, once it has exited."""
        if self.pid is None or self._returncode is not None:
            return
        if not self._exited.is_set():
            self._signal_group(signal.SIGKILL)
            with trio.move_on_after(KILL_WAIT):
                if self._exit_waiter:
                    await self._exited.wait()
                else:
                    await self._leader_exit()
        # The leader is a zombie now (or stuck): the rest of its group gets SIGKILL.
        self._signal_group(signal.SIGKILL)
        result = _reap(self.pid, self._pidfd)
        if result is None:
            self._log(
                logging.ERROR,
                "PROCESS_STUCK",
                "-",
                "process %d did not die within %gs of SIGKILL; it is left to the guardian",
                self.pid,
                KILL_WAIT,
            )
            return
        self._returncode = result
        assert self._popen is not None
        self._popen.returncode = result  # reaped here: Popen must not wait for it again
        guardian.forget(self.pid)
        self._exited.set()

    def _close(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        if self._notify_dir is not None:
            shutil.rmtree(self._notify_dir, ignore_errors=True)
            self._notify_dir = None

    def _how(self) -> str:
        code = self._returncode
        if code is None:
            return "still running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"

    def _exited_error(self, why: str = "") -> ProcessExited:
        code = self._returncode if self._returncode is not None else -signal.SIGKILL
        return ProcessExited(self.path, self.target.command, code, tuple(self.tail), why=why)


def _pidfd_open(pid: int) -> int:
    """A pidfd for ``pid`` (Linux 5.3 and later), or -1 where there is none."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return -1
    try:
        fd: int = pidfd_open(pid)
    except OSError:
        return -1
    os.set_inheritable(fd, False)
    return fd


def _reap(pid: int, pidfd: int) -> int | None:
    """Reap the exited leader: its ``returncode`` (``-N`` for signal N); None if not dead."""
    try:
        if pidfd >= 0:
            info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG)
        else:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG)
    except ChildProcessError:
        return None
    if info is None:
        return None
    if info.si_code == os.CLD_EXITED:
        return info.si_status
    return -info.si_status


def _describe_ready(ready: Ready) -> str:
    if ready.kind is ReadyKind.NOTIFY:
        return "Ready.notify(): no READY=1"
    if ready.kind is ReadyKind.LINE:
        assert ready.pattern is not None
        return f"Ready.line({ready.pattern.pattern!r}): no line matched"
    return f"Ready.tcp({ready.port}, {ready.host!r}): no connection"
