"""The graceful shutdown: hooks in priority bands, in a shielded scope with a deadline."""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Literal, NamedTuple, final

import attrs
import trio

from . import _checks
from ._errors import SpecError
from ._events import EventBus, EventKind, _new_tuple, log, logger


class Band(enum.IntEnum):
    """The priority bands of the shutdown, run lowest first. A hook's band is ``priority // 10``."""

    STOP_ACCEPTING = 0
    DRAIN = 10
    FLUSH = 20
    CLOSE = 30
    CLEANUP = 40


HookStatus = Literal["ok", "error", "timed_out", "cancelled", "skipped"]


@final
@attrs.frozen
class ShutdownHook:
    """One step of the shutdown.

    Args:
      name: shown in the report and the events.
      fn: an async function with no arguments.
      priority: an int >= 0; hooks run band by band (``priority // 10``, see ``Band``), the
        hooks of one band concurrently.
      timeout: seconds the hook may take before it is cancelled and recorded as timed out;
        ``None`` for no limit of its own (the shutdown's deadline still applies). A hook
        that raises ``trio.TooSlowError`` (a ``trio.fail_after`` of its own) is recorded as
        timed out too, with the error.

    Raises:
      SpecError: for an empty name, a non-async ``fn``, a negative priority or timeout.
    """

    name: str
    fn: Callable[[], Awaitable[object]]
    priority: int = attrs.field(kw_only=True)
    timeout: float | None = attrs.field(default=None, kw_only=True)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise SpecError(f"ShutdownHook: name must be a non-empty string (got {self.name!r})")
        owner = f"ShutdownHook {self.name!r}"
        _checks.async_function(owner, "fn", self.fn, error=SpecError)
        _checks.integer(owner, "priority", self.priority, at_least=0, error=SpecError)
        _checks.number(owner, "timeout", self.timeout, at_least=0, none=True, error=SpecError)

    @property
    def band(self) -> int:
        """The band index this hook runs in (``priority // 10``)."""
        return self.priority // 10


class HookResult(NamedTuple):
    """How one hook ended (an immutable named tuple, made once per hook of a shutdown).

    ``started`` is the ``trio.current_time()`` its band started the hook at (the hooks of
    a band are started together; None for a skipped hook); ``duration`` is the seconds
    from then until it ended; ``error`` is set for ``"error"``.
    """

    name: str
    priority: int
    status: HookStatus
    duration: float
    error: BaseException | None = None
    started: float | None = None


@final
@attrs.frozen
class ShutdownReport:
    """What the shutdown did.

    Attributes:
      reason: why it started ("requested", "signal SIGTERM", "body ended", ...).
      started: ``trio.current_time()`` when it started.
      duration: seconds it took.
      forced: True when a second signal (or ``force``) cut it short.
      deadline_exceeded: True when ``shutdown_deadline`` cut it short.
      hooks: one result per hook, in the order they were registered.
    """

    reason: str
    started: float
    duration: float
    forced: bool
    hooks: list[HookResult]
    deadline_exceeded: bool = False

    @property
    def ok(self) -> bool:
        """True when the shutdown was neither forced nor late and every hook finished ``ok``
        (or was ``skipped`` by itself, having nothing to do: a drain delay for a tree that
        never got ready, the listeners of a server that never started)."""
        return (
            not self.forced
            and not self.deadline_exceeded
            and all(hook.status == "ok" or hook.status == "skipped" for hook in self.hooks)
        )

    def format(self) -> str:
        """The report as a small text table."""
        lines = [
            f"shutdown ({self.reason}) took {self.duration:.3f}s"
            + (", forced" if self.forced else "")
            + (", deadline exceeded" if self.deadline_exceeded else ""),
        ]
        width = max([24, *(len(hook.name) for hook in self.hooks)])
        lines.append(f"  {'priority':>8}  {'hook':<{width}} {'status':<10} {'seconds':>8}")
        for hook in sorted(self.hooks, key=lambda h: h.priority):
            error = f"  {type(hook.error).__name__}: {hook.error}" if hook.error else ""
            lines.append(
                f"  {hook.priority:>8}  {hook.name:<{width}} {hook.status:<10}"
                f" {hook.duration:>8.3f}{error}"
            )
        return "\n".join(lines)


class NothingToDo(Exception):
    """Raised by a built-in hook that has nothing to do: reported ``skipped``, with why."""


# The shutdown whose hooks run in this context (for the built-in hooks to look at).
_running: ContextVar[Shutdown] = ContextVar("trio_supervise.running_shutdown")


def running_shutdown() -> Shutdown | None:
    """The shutdown running the calling hook; None outside one."""
    return _running.get(None)


@final
class Shutdown:
    """Runs the hooks once; can be triggered early and forced. Owned by the tree."""

    def __init__(self, hooks: Sequence[ShutdownHook], deadline: float, bus: EventBus) -> None:
        self.hooks: list[ShutdownHook] = []
        # Kept as hooks are added, so that the shutdown itself does no bookkeeping.
        self._names: set[str] = set()
        self._bands: dict[int, list[int]] = {}  # band -> indexes into self.hooks
        for hook in hooks:
            self._append(hook)
        self.deadline = deadline
        self._bus = bus
        # Set once the shutdown is decided; the tree's body is cancelled then.
        self.triggered = trio.Event()
        self.reason = ""
        self.forced = False
        # The shielded scope of the running shutdown; None before and after it runs.
        self._scope: trio.CancelScope | None = None
        self.report: ShutdownReport | None = None
        self._deadline_at = math.inf
        # Set by the tree once its root has started every child: something was ready to
        # serve, so there can be something to drain.
        self.was_ready = False

    def add(self, hook: ShutdownHook) -> None:
        if self.triggered.is_set():
            raise RuntimeError(
                f"cannot add shutdown hook {hook.name!r}: the shutdown has already started"
            )
        self._append(hook)

    def _append(self, hook: ShutdownHook) -> None:
        # The report, the events and the metrics tell hooks apart by name.
        if hook.name in self._names:
            raise SpecError(
                f"shutdown hook {hook.name!r}: the name is taken"
                + (" by the tree's own step" if hook.name == "supervisor" else "")
                + "; give each hook its own name"
            )
        self._names.add(hook.name)
        self._bands.setdefault(hook.band, []).append(len(self.hooks))
        self.hooks.append(hook)

    def trigger(self, reason: str) -> bool:
        """Decide the shutdown; return False if it had already been decided."""
        if self.triggered.is_set():
            return False
        self.reason = reason
        self.triggered.set()
        return True

    def force(self, reason: str) -> None:
        """Cut the shutdown short: running hooks are cancelled, later bands skipped."""
        self.trigger(reason)
        self.forced = True
        if self._scope is not None:
            self._scope.cancel(reason=f"shutdown forced: {reason}")

    async def run(self) -> ShutdownReport:
        """Run every band, lowest first, within the deadline; return the report."""
        self.trigger("requested")
        bus = self._bus
        started = trio.current_time()
        bus.emit(EventKind.SHUTDOWN_STARTED, "", detail=self.reason)
        hooks = self.hooks
        results: list[HookResult | None] = [None] * len(hooks)
        self._deadline_at = started + self.deadline
        token = _running.set(self)
        try:
            report = await self._run_bands(started, hooks, results)
        finally:
            _running.reset(token)
        return report

    async def _run_bands(
        self, started: float, hooks: list[ShutdownHook], results: list[HookResult | None]
    ) -> ShutdownReport:
        bus = self._bus
        with trio.CancelScope(shield=True, deadline=self._deadline_at) as scope:
            self._scope = scope
            if self.forced:
                scope.cancel(reason="shutdown forced before it started")
            for band in sorted(self._bands):
                if scope.cancel_called:  # the deadline or a force came while a hook shielded itself
                    break
                # One start time for the band's hooks: they are started together.
                band_started = trio.current_time()
                async with trio.open_nursery() as nursery:
                    for index in self._bands[band]:
                        nursery.start_soon(
                            self._run_hook, hooks[index], index, results, band_started
                        )
        self._scope = None
        # The hooks have run: drop them, with the servers and connections they close over
        # (and the tree's own step, whose tree would otherwise be a reference cycle).
        self.hooks = []
        report = ShutdownReport(
            reason=self.reason,
            started=started,
            duration=trio.current_time() - started,
            forced=self.forced,
            hooks=[
                result or HookResult(hook.name, hook.priority, "skipped", 0.0)
                for hook, result in zip(hooks, results, strict=True)
            ],
            deadline_exceeded=scope.cancel_called and not self.forced,
        )
        self.report = report
        ok = report.ok
        bus.emit(
            EventKind.SHUTDOWN_FINISHED,
            "",
            detail=f"{'ok' if ok else 'not ok'} in {report.duration:.3f}s",
        )
        level = logging.INFO if ok else logging.WARNING
        if logger.isEnabledFor(level):  # the table is only built for someone to read it
            log(level, "%s", report.format(), path="", kind="SHUTDOWN_REPORT")
        return report

    async def _run_hook(
        self, hook: ShutdownHook, index: int, results: list[HookResult | None], start: float
    ) -> None:
        status: HookStatus = "ok"
        error: BaseException | None = None
        why = ""
        try:
            if hook.timeout is None:
                await hook.fn()
            else:
                with trio.move_on_after(hook.timeout) as own:
                    await hook.fn()
                # cancel_called, not cancelled_caught: a hook that shielded itself past its
                # timeout finished late all the same.
                if own.cancel_called:
                    status = "timed_out"
        except trio.Cancelled:
            status = "cancelled"
            raise
        except NothingToDo as nothing:
            status, why = "skipped", f": {nothing}"
        except trio.TooSlowError as exc:
            # What trio.fail_after raises: the hook's own limit on something it waited for.
            status, error = "timed_out", exc
        except Exception as exc:
            status, error = "error", exc
        finally:
            end = trio.current_time()
            # A hook that shielded itself finished, but the deadline or a force had cut in.
            # (What the scope's cancel_called would say, without its own clock read.)
            if status == "ok" and (self.forced or end >= self._deadline_at):
                status = "cancelled"
            took = end - start
            # Built and emitted the cheap way (see EventBus.emit): this runs once per hook,
            # and the shutdown benchmark's 100 hooks add up.
            results[index] = _new_tuple(
                HookResult, (hook.name, hook.priority, status, took, error, start)
            )
            self._bus.emit(
                EventKind.HOOK_FINISHED, hook.name, 0, error, f"{status} in {took:.3f}s{why}", end
            )


@final
class DrainDelay:
    """The Kubernetes drain delay: keep serving for a while after the shutdown starts.

    Kubernetes sends SIGTERM and removes the pod from its Service endpoints at the same
    time; proxies and load balancers learn of the removal a few seconds later and keep
    routing new requests to the pod meanwhile. Closing the listeners at once refuses those
    requests. Put ``drain.hook`` in the shutdown's hooks: it runs in band ``STOP_ACCEPTING``,
    readiness is already false (``tree.health().ready`` turns false when the shutdown
    starts, so ``/health/ready`` answers 503), and it waits ``seconds`` while the listeners
    stay open. Hooks that close listeners in the same band call ``await drain.wait()``
    first (the HTTP and WebSocket integrations do).

    Budget: ``seconds`` + the time to drain in-flight work + the later bands must fit in
    ``shutdown_deadline``, and ``shutdown_deadline`` + ``HARD_EXIT_GRACE`` should stay below
    the pod's ``terminationGracePeriodSeconds`` (default 30), after which the kubelet sends
    SIGKILL.

    One ``DrainDelay`` serves one shutdown: once it has run, ``wait()`` returns at once. Its
    hook must be among the tree's hooks, or ``wait()`` only returns at the deadline.

    Args:
      seconds: how long to keep serving; 5 is typical of kube-proxy and ingress updates.
      name: the hook's name in the report.

    Example::

        drain = DrainDelay(5)
        async with supervisor_tree(spec, hooks=[drain.hook], shutdown_deadline=20) as tree:
            ...
    """

    def __init__(self, seconds: float = 5.0, *, name: str = "drain-delay") -> None:
        _checks.number(f"DrainDelay {name!r}", "seconds", seconds, at_least=0, error=SpecError)
        self.seconds = float(seconds)
        self.hook = ShutdownHook(name, self._run, priority=Band.STOP_ACCEPTING)
        self._done = trio.Event()
        self._ends_at: float | None = None

    async def _run(self) -> None:
        shutdown = running_shutdown()
        if shutdown is not None and not shutdown.was_ready:
            self._done.set()
            raise NothingToDo("the tree never got ready, so no traffic came to drain")
        self._ends_at = trio.current_time() + self.seconds
        try:
            await trio.sleep(self.seconds)
        finally:
            # Also when cut short (deadline, forced): the listeners must close all the same.
            self._done.set()

    @property
    def remaining(self) -> float | None:
        """Seconds left in the delay while it runs; None before it started; 0.0 after."""
        if self._ends_at is None:
            return None
        if self._done.is_set():
            return 0.0
        return max(0.0, self._ends_at - trio.current_time())

    async def wait(self) -> None:
        """Return once the delay has passed (or was cut short by the deadline or a force)."""
        await self._done.wait()
