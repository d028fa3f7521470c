"""Specs of OS-process children: the command, its environment and when it counts as ready.

Plain data, checked when built (contract §7): ``ChildSpec.process`` builds a ``ProcessTarget``,
and the runtime in ``_process`` spawns it.
"""

from __future__ import annotations

import enum
import os
import re
import shutil
import signal
from collections.abc import Mapping, Sequence
from typing import Any, final

import attrs

from . import _checks
from ._errors import SpecError


class ReadyKind(enum.Enum):
    """How a process child shows that it is ready."""

    NOTIFY = "notify"
    LINE = "line"
    TCP = "tcp"


@final
@attrs.frozen
class Ready:
    """When a process child has started. Build it with ``notify()``, ``line()`` or ``tcp()``.

    A process that exits, or is not ready within ``timeout``, before it is ready has failed to
    start (as a ``task_status`` target that raises before ``started()``).
    """

    kind: ReadyKind
    timeout: float = 30.0
    watchdog: float | None = None
    pattern: re.Pattern[str] | None = None
    port: int = 0
    host: str = "127.0.0.1"

    @classmethod
    def notify(cls, timeout: float = 30.0, watchdog: float | None = None) -> Ready:
        """Ready on ``READY=1`` to its own ``NOTIFY_SOCKET`` (the systemd protocol).

        ``STATUS=`` lines are kept (``ChildInfo.status``); with ``watchdog`` seconds, a process
        that sends no ``WATCHDOG=1`` for that long fails its health and is restarted (it gets
        ``WATCHDOG_USEC``, as under systemd).
        """
        _timeout("Ready.notify", timeout)
        _checks.number(
            "Ready.notify", "watchdog", watchdog, above=0, finite=True, none=True, error=SpecError
        )
        return cls(ReadyKind.NOTIFY, timeout, watchdog=watchdog)

    @classmethod
    def line(cls, pattern: str, timeout: float = 30.0) -> Ready:
        """Ready once a line of its stdout or stderr matches the regular expression ``pattern``."""
        _timeout("Ready.line", timeout)
        if not isinstance(pattern, str):
            raise SpecError(f"Ready.line: pattern must be a str (got {pattern!r})")
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise SpecError(
                f"Ready.line: pattern {pattern!r} is not a valid regular expression ({exc});"
                " fix it, or re.escape() a literal text"
            ) from None
        return cls(ReadyKind.LINE, timeout, pattern=compiled)

    @classmethod
    def tcp(cls, port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> Ready:
        """Ready once a TCP connection to ``host:port`` succeeds."""
        _checks.integer("Ready.tcp", "port", port, at_least=1, at_most=65535, error=SpecError)
        if not isinstance(host, str) or not host:
            raise SpecError(f"Ready.tcp: host must be a non-empty str (got {host!r})")
        _timeout("Ready.tcp", timeout)
        return cls(ReadyKind.TCP, timeout, port=port, host=host)


def _timeout(owner: str, timeout: object) -> None:
    _checks.number(owner, "timeout", timeout, above=0, finite=True, error=SpecError)


@final
@attrs.frozen
class ProcessTarget:
    """The target of a ``ChildSpec.process`` child: a command spawned anew on every start.

    Not called directly: the supervisor runs it (``_process``).
    """

    command: tuple[str, ...]
    stop_signal: signal.Signals
    ready: Ready | None
    # (name, value) pairs added to the supervisor's environment: hashable, like the spec.
    env: tuple[tuple[str, str], ...]
    cwd: str | None
    pass_fds: tuple[int, ...]

    async def __call__(self, task_status: Any = None) -> None:  # pragma: no cover
        raise TypeError("a ProcessTarget is run by its supervisor, not called")


def process_target(
    name: str,
    command: object,
    *,
    stop_signal: object,
    ready: object,
    env: object,
    cwd: object,
    pass_fds: object,
) -> ProcessTarget:
    """Check the process fields of ``ChildSpec.process(name, ...)`` and build its target."""
    owner = f"ChildSpec {name!r}"
    if isinstance(command, str | bytes) or not isinstance(command, Sequence):
        raise SpecError(
            f"{owner}: command must be a sequence of str, the argv run without a shell (got"
            f" {command!r}); write ['prog', 'arg'], not 'prog arg'"
        )
    argv = tuple(command)
    if not argv:
        raise SpecError(f"{owner}: command is empty; give at least the program to run")
    for arg in argv:
        if not isinstance(arg, str):
            raise SpecError(f"{owner}: every item of command must be a str (got {arg!r})")
        if "\0" in arg:
            raise SpecError(f"{owner}: command items cannot contain NUL (got {arg!r})")
    environment = _environment(owner, env)
    directory = _directory(owner, cwd)
    search_path = dict(environment).get("PATH", os.environ.get("PATH", os.defpath))
    program = argv[0]
    if "/" in program:
        base = directory if directory is not None and not os.path.isabs(program) else ""
        found = shutil.which(os.path.join(base, program))
    else:
        found = shutil.which(program, path=search_path)
    if found is None:
        where = "" if "/" in program else f" on PATH ({search_path})"
        raise SpecError(
            f"{owner}: command[0] {program!r} is not an executable file{where}; install it,"
            " or give its absolute path"
        )
    try:
        stop = signal.Signals(stop_signal)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise SpecError(
            f"{owner}: stop_signal must be a signal number such as signal.SIGTERM (got"
            f" {stop_signal!r})"
        ) from None
    if stop_signal is True or stop_signal is False:
        raise SpecError(f"{owner}: stop_signal must be a signal, not a bool (got {stop_signal!r})")
    if ready is not None and not isinstance(ready, Ready):
        raise SpecError(
            f"{owner}: ready must be Ready.notify(), Ready.line(...), Ready.tcp(...) or None"
            f" (got {ready!r})"
        )
    return ProcessTarget(argv, stop, ready, environment, directory, _fds(owner, pass_fds))


def _environment(owner: str, env: object) -> tuple[tuple[str, str], ...]:
    if env is None:
        return ()
    if not isinstance(env, Mapping):
        raise SpecError(f"{owner}: env must be a mapping of str to str or None (got {env!r})")
    checked: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise SpecError(
                f"{owner}: env must map str to str (got {key!r}: {value!r}); convert the"
                " value with str()"
            )
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise SpecError(
                f"{owner}: env has an invalid variable {key!r}: a name is non-empty, without"
                " '=' or NUL, and a value has no NUL"
            )
        checked[key] = value
    return tuple(checked.items())


def _directory(owner: str, cwd: object) -> str | None:
    if cwd is None:
        return None
    if not isinstance(cwd, str | os.PathLike):
        raise SpecError(f"{owner}: cwd must be a path or None (got {cwd!r})")
    directory = os.fspath(cwd)
    if not isinstance(directory, str):
        raise SpecError(f"{owner}: cwd must be a str path (got {cwd!r})")
    if not os.path.isdir(directory):
        raise SpecError(f"{owner}: cwd {directory!r} is not a directory; create it first")
    return directory


def _fds(owner: str, pass_fds: object) -> tuple[int, ...]:
    if isinstance(pass_fds, str | bytes) or not isinstance(pass_fds, Sequence):
        raise SpecError(f"{owner}: pass_fds must be a sequence of ints (got {pass_fds!r})")
    fds = tuple(pass_fds)
    for fd in fds:
        _checks.integer(owner, "pass_fds", fd, at_least=0, error=SpecError)
    if len(set(fds)) != len(fds):
        raise SpecError(f"{owner}: pass_fds has duplicates (got {list(fds)!r})")
    return fds
