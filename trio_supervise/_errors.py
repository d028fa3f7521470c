"""The exceptions trio_supervise raises."""

from __future__ import annotations

import shlex
import signal
from typing import final


class SpecError(ValueError):
    """A spec was built with a bad value.

    Raised at construction, never later. The message names the spec, the field, the value
    and the rule, e.g. ``ChildSpec 'db': shutdown_timeout must be >= 0 or None (got -1)``.
    """


class SupervisionError(RuntimeError):
    """A tree operation cannot be done in the tree's current state.

    For example: starting a child under a name that is taken, deleting a running child, or
    asking a supervisor that has already exited.
    """


@final
class ChildStartError(SupervisionError):
    """A child raised before it called ``task_status.started()``.

    During a supervisor's first start this aborts the supervisor, as in OTP: a tree that
    cannot start is not half started. From ``tree.start_child`` it is raised to the caller
    and the spec is not kept. The child's own exception is the ``__cause__``.

    Attributes:
      path: the path of the child that failed to start.
    """

    def __init__(self, path: str, error: BaseException) -> None:
        super().__init__(
            f"child {path!r} failed to start: it raised {type(error).__name__}: {error}"
        )
        self.path = path
        self.__cause__ = error


@final
class ChildNotFoundError(LookupError):
    """No child lives at the given path.

    The message names the path and its nearest existing parent with that parent's children.

    Attributes:
      path: the path that was looked up.
      nearest: the longest prefix of ``path`` that exists (``""`` is the root).
    """

    def __init__(self, path: str, nearest: str, siblings: list[str]) -> None:
        known = ", ".join(repr(name) for name in siblings) or "none"
        where = repr(nearest) if nearest else "'' (the root)"
        super().__init__(
            f"no child at path {path!r}: nearest existing supervisor is {where},"
            f" whose children are: {known}"
        )
        self.path = path
        self.nearest = nearest

    def __str__(self) -> str:
        # LookupError's str() would quote the message like a dict key.
        return str(self.args[0])


@final
class RestartIntensityExceeded(Exception):
    """A supervisor gave up: more than ``max_restarts`` restarts within ``max_seconds``.

    The supervisor has stopped all its children in reverse start order before raising this.
    Its parent treats it as an abnormal exit of that child; at the root, ``supervisor_tree``
    raises it as itself (never inside an ``ExceptionGroup``). The last child's error is the
    ``__cause__``.

    Attributes:
      path: the path of the supervisor that gave up (``""`` for the root).
      max_restarts: the supervisor's limit.
      max_seconds: the supervisor's window.
    """

    def __init__(self, path: str, max_restarts: int, max_seconds: float) -> None:
        name = repr(path) if path else "'' (the root)"
        super().__init__(
            f"supervisor {name} gave up: more than {max_restarts} restarts"
            f" within {max_seconds:g} seconds"
        )
        self.path = path
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds


@final
class HealthCheckFailed(Exception):
    """A child failed ``threshold`` consecutive health probes and is restarted as if it crashed.

    It is the ``error`` of the child's ``CRASHED`` event; the last probe's failure (an
    exception, ``False``/``UNHEALTHY`` or a timeout) is described in the message and, when
    the probe raised, is the ``__cause__``.
    """


@final
class ProcessExited(SupervisionError):
    """A process child exited abnormally: a non-zero status, or a signal nobody sent it.

    Attributes:
      path: the child's path.
      command: the argv it ran.
      returncode: its exit status, or ``-N`` for a death by signal N (as ``subprocess``).
      signal: the signal that killed it (a ``signal.Signals``), or None.
      output_tail: its last lines of output, oldest first.
    """

    def __init__(
        self,
        path: str,
        command: tuple[str, ...],
        returncode: int,
        output_tail: tuple[str, ...],
        *,
        why: str = "",
    ) -> None:
        self.path = path
        self.command = command
        self.returncode = returncode
        self.signal = _signal_of(returncode)
        self.output_tail = output_tail
        if why:
            how = why
        elif self.signal is not None:
            how = f"was killed by {self.signal.name}"
        else:
            how = f"exited with status {returncode}"
        message = f"process child {path!r} ({shlex.join(command)}) {how}"
        if output_tail:
            last = "\n".join(f"  | {line}" for line in output_tail[-_LINES_IN_MESSAGE:])
            message += f"; its last output:\n{last}"
        else:
            message += "; it wrote no output"
        super().__init__(message)


#: How many of the last output lines a ProcessExited message shows.
_LINES_IN_MESSAGE = 10


def _signal_of(returncode: int) -> signal.Signals | None:
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode)
    except ValueError:
        return None
