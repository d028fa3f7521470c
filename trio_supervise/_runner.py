"""The mechanism of one child run: its task, the stop ladder, and the health probe.

A run is one life of a child, from a (re)start to its exit. This module runs it and stops
it; it decides nothing and writes no child state. Whatever happens to a run is reported to
its supervisor (``RunOwner.run_exited``, ``RunOwner.post``), the only writer of its
children's state, which applies its policy (``_supervisor``).

Two chains keep start and stop cheap per child:

* ``StartChain``: plain children started together run their first step in list order.
  The supervisor spawns one task per child, all at once, and each task takes the next run
  of the chain when it first runs: whatever order Trio runs that batch in (in order or
  reversed, a coin toss per batch), the first steps come in list order, in one pass.
* ``StopChain``: children stopped one at a time in reverse order. The exiting run asks the
  next one to stop, so the supervisor is not woken between two of them.
"""

from __future__ import annotations

import enum
import inspect
import logging
import math
import operator
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, final

import attrs
import trio

from ._context import ChildContext, _current
from ._errors import HealthCheckFailed
from ._events import EventBus, EventKind, log
from ._process import ProcessRun
from ._process_spec import ProcessTarget
from ._singleton import SingletonRun
from ._spec import (
    ChildSpec,
    HealthCheck,
    HealthStatus,
    ServiceTarget,
    SingletonTarget,
    SupervisorSpec,
    check_service_class,
)


class StopCause(enum.Enum):
    """Why a supervisor stopped a run; it names the event its exit is reported as."""

    #: A group restart or ``restart_child``: reported as ``EXITED``.
    RESTART = "restart"
    #: ``terminate_child``: reported as ``TERMINATED``.
    TERMINATE = "terminate"
    #: The tree's shutdown: reported as ``TERMINATED``.
    SHUTDOWN = "shutdown"
    #: Its supervisor is ending (gave up, failed to start, auto_shutdown): ``EXITED``.
    SUPERVISOR_EXIT = "supervisor_exit"
    #: It failed its health checks: reported as ``CRASHED``.
    HEALTH = "health"

    @property
    def event(self) -> EventKind:
        return _CAUSE_EVENTS[self._name_]  # an Enum member hashes in Python; its name in C


_CAUSE_EVENTS = {
    StopCause.RESTART.name: EventKind.EXITED,
    StopCause.TERMINATE.name: EventKind.TERMINATED,
    StopCause.SHUTDOWN.name: EventKind.TERMINATED,
    StopCause.SUPERVISOR_EXIT.name: EventKind.EXITED,
    StopCause.HEALTH.name: EventKind.CRASHED,
}


class NestedSupervisor(Protocol):
    """What a run needs of the supervisor it runs, for a ``SupervisorSpec`` child."""

    async def run(self, task_status: trio.TaskStatus[None] = ...) -> None: ...

    def request_stop(self, cause: StopCause, reason: str) -> None: ...


class RunOwner(Protocol):
    """The supervisor of a run, as the run sees it."""

    nursery: trio.Nursery | None
    bus: EventBus

    def run_exited(self, run: Run) -> Run | None:
        """Take the exit of ``run``; return a run to go on with in the same task, or None."""

    def post(self, message: object) -> None:
        """Queue ``message`` for the supervisor's own task."""


@final
@attrs.define(eq=False)
class Run:
    """One run of a child: from one (re)start to its exit.

    Written by its own task (``exited``, ``error``, ``started``, health) and by its
    supervisor (the stop fields); never by anyone else.
    """

    owner: RunOwner
    spec: ChildSpec | SupervisorSpec
    path: str
    # The child's restarts when this run started.
    restarts: int
    # True for a restart decided after an exit (not a first start or restart_child): such a
    # run is not counted as active while it starts.
    after_exit: bool = False
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    # True once the run has ended, however it ended.
    exited: bool = False
    exited_at: float = 0.0
    # Made only when someone waits for the exit: most runs are never waited for.
    _exit_event: trio.Event | None = None
    # True once the target runs for the supervisor (after started() for task_status).
    started: bool = False
    started_at: float = 0.0
    # The exception the run ended with; a failed health check is set here before the stop.
    error: BaseException | None = None
    # Set when the supervisor decided to stop this run; its exit is then a stop it asked
    # for, never a crash to restart.
    cause: StopCause | None = None
    stop_reason: str = ""
    stop_asked_at: float = 0.0
    # True once the supervisor has recorded the exit (state and event); it is recorded once.
    reported: bool = False
    # The chain that stops this run and hands the stop on once it has exited.
    stop_chain: StopChain | None = None
    # The service object of a ChildSpec.service child, once its factory returned.
    service: Any = None
    # The supervisor running inside this run, for a SupervisorSpec child.
    nested: NestedSupervisor | None = None
    # The health probe's scope, cancelled when the run ends; None without a health check.
    probe_scope: trio.CancelScope | None = None
    health: HealthStatus = HealthStatus.HEALTHY
    health_failures: int = 0
    # True once the supervisor asked this run to stop (``stop_requested``).
    asked: bool = False
    # Made by the first current_child() of the run: most runs never call it, and a child's
    # idle memory is what a large pool pays for.
    _context: ChildContext | None = None

    def child_context(self) -> ChildContext:
        context = self._context
        if context is None:
            context = self._context = ChildContext(self.spec.name, self.path, self.restarts)
            if self.asked:
                context._request_stop()
        return context

    def request_stop(self) -> None:
        """Set ``current_child().stop_requested`` for this run."""
        self.asked = True
        if self._context is not None:
            self._context._request_stop()

    def mark_exited(self) -> None:
        self.exited = True
        self.exited_at = trio.current_time()
        if self.probe_scope is not None:
            self.probe_scope.cancel()
        if self._exit_event is not None:
            self._exit_event.set()

    async def wait_exited(self) -> None:
        if self.exited:
            await trio.lowlevel.checkpoint()
            return
        if self._exit_event is None:
            self._exit_event = trio.Event()
        await self._exit_event.wait()

    def cancel(self, why: str) -> None:
        self.scope.cancel(reason=f"trio_supervise stopped {self.path!r}: {why}")

    def ask(self) -> bool:
        """Ask the run to stop without awaiting; False when it is a service to ``ask_service``.

        ``stop_requested`` is set; a nested supervisor gets a stop request; a plain function
        is cancelled at once (in Trio, cancellation is the polite request).
        """
        self.request_stop()
        if self.nested is not None:
            assert self.cause is not None
            self.nested.request_stop(self.cause, self.stop_reason)
            return True
        if self.service is not None and getattr(self.service, "stop", None) is not None:
            return False
        self.cancel(self.stop_reason)
        return True

    async def ask_service(self) -> None:
        """Await the service's ``stop()`` (in the caller's task, as the service's child)."""
        # stop() runs in the supervisor's task; let current_child() answer for the service.
        token = _current.set(self)
        try:
            await self.service.stop()
        except Exception:
            log(
                logging.WARNING,
                "stop() of %s raised; cancelling it",
                self.path,
                path=self.path,
                kind="STOP_ERROR",
                exc_info=True,
            )
            self.cancel("its stop() raised")
        finally:
            _current.reset(token)


def stop_deadline(run: Run, timeout: float | None) -> float:
    """When ``run``, asked to stop, overruns ``timeout``: never for None or 0 (cancel at once)."""
    return math.inf if not timeout else run.stop_asked_at + timeout


@final
class Starter:
    """The ``task_status`` handed to a target: records the start, then passes it on."""

    __slots__ = ("_run", "_status")

    def __init__(self, run: Run, status: trio.TaskStatus[None]) -> None:
        self._run = run
        self._status = status

    def started(self, value: object = None) -> None:
        if self._run.started:
            raise RuntimeError(f"child {self._run.path!r} called task_status.started() twice")
        self._run.started = True
        self._status.started()


@final
class StartChain:
    """Plain runs spawned together whose first steps come in list order.

    Each task spawned for the chain takes the next run (``take``) at its first step and
    runs it, so the order does not depend on the order in which Trio runs the tasks.
    """

    __slots__ = ("aborted", "done", "runs", "turn")

    def __init__(self, runs: list[Run]) -> None:
        self.runs = runs
        # The index of the next run to take.
        self.turn = 0
        # Set by a stop request: the runs not taken yet never start.
        self.aborted = False
        # Set when the last run is taken, or by the abort.
        self.done = trio.Event()

    def take(self) -> Run | None:
        """The next run, marked as started; None once the chain was aborted."""
        if self.aborted:
            return None
        run = self.runs[self.turn]
        run.started = True
        self.turn += 1
        if self.turn == len(self.runs):
            self.done.set()
        return run

    def abort(self) -> None:
        self.aborted = True
        self.done.set()


def _work(run: Run, task_status: trio.TaskStatus[None]) -> Awaitable[object]:
    """The coroutine of the run's work: the target's, a service's or a nested supervisor's."""
    if run.nested is not None:
        return run.nested.run(task_status=Starter(run, task_status))
    spec = run.spec
    assert isinstance(spec, ChildSpec)
    if not spec.takes_task_status:
        return spec.target(*spec.args)
    if isinstance(spec.target, ServiceTarget):
        return _run_service(run, spec, task_status)
    if isinstance(spec.target, ProcessTarget):
        run.service = process = ProcessRun(spec.target, run.path, run.restarts)
        return process.run(task_status=Starter(run, task_status))
    if isinstance(spec.target, SingletonTarget):
        target = spec.target
        run.service = singleton = SingletonRun(
            run.path,
            target.lock,
            target.fn,
            spec.args,
            target.takes_task_status,
            lambda holding, why: run.owner.post(LockChanged(run, holding, why)),
        )
        return singleton.run(Starter(run, task_status))
    return spec.target(*spec.args, task_status=Starter(run, task_status))


def _only_errors_besides_cancelled(group: BaseExceptionGroup[BaseException]) -> bool:
    """True when a nursery inside the child failed while being cancelled: keep its errors.

    Cancellation is level-triggered, so an outer cancel still reaches the supervisor at its
    next checkpoint.
    """
    _, rest = group.split(trio.Cancelled)
    return rest is not None and rest.split(Exception)[1] is None


async def run_task(
    first: Run | StartChain, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """The task of a child's runs. It never raises what the child raised: it reports it.

    ``first`` is the run, or the chain to take it from (None taken: it never starts). A
    plain target that its supervisor restarts in place (``RunOwner.run_exited`` returns
    the next run) runs again in this same task, each run in its own cancel scope.
    """
    # This frame lives as long as the child: what it needs is made by helpers, and the
    # scope is entered and left by hand (a ``with`` block keeps its bound ``__exit__`` on
    # the frame's stack), so that it stays small: a large pool pays it per idle child.
    run = first.take() if isinstance(first, StartChain) else first
    del first  # the chain is not kept for the child's life
    if run is None:
        return
    restarted = False
    while True:
        _current.set(run)
        try:
            run.scope.__enter__()
            try:
                if restarted:
                    # Let other tasks run between two runs of a crash loop.
                    await trio.lowlevel.checkpoint()
                await _work(run, task_status)
                if not run.started:
                    raise RuntimeError(
                        f"child {run.path!r} returned without calling task_status.started()"
                    )
            # trio.Cancelled is not an Exception: it goes on to the scope's __exit__.
            except Exception as exc:
                run.error = exc
            except BaseExceptionGroup as exc:
                if not _only_errors_besides_cancelled(exc):
                    raise
                run.error = exc
        except BaseException as exc:
            if not run.scope.__exit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            run.scope.__exit__(None, None, None)
        finally:
            run.mark_exited()
        if not run.started:
            task_status.started()  # the supervisor's nursery.start returns; it reads run.error
            return
        following = run.owner.run_exited(run)
        if following is None:
            return
        run, restarted = following, True


async def _run_service(run: Run, spec: ChildSpec, task_status: trio.TaskStatus[None]) -> None:
    assert isinstance(spec.target, ServiceTarget)
    service = spec.target.factory()
    run_method = getattr(service, "run", None)
    if not inspect.isclass(spec.target.factory):
        check_service_class(f"ChildSpec {spec.name!r}", type(service))
    run.service = service
    assert run_method is not None
    if "task_status" in inspect.signature(run_method).parameters:
        await run_method(task_status=Starter(run, task_status))
    else:
        Starter(run, task_status).started()
        await run_method()


@final
class StopChain:
    """Stops runs one at a time, in the given order; each exit asks the next one to stop.

    The supervisor calls ``run()`` and waits in it; ``begin(run, now)``, the supervisor's
    callback (it writes the children's state), marks a run as asked to stop at ``now`` and
    returns its ``shutdown_timeout``. The supervisor records each exit
    (``RunOwner.run_exited``) and then calls ``exited`` so that the chain goes on.
    A service with ``stop()`` needs the supervisor's task to await it, so the chain breaks
    there: the supervisor's own task asks it and waits for it.

    After a run's ``shutdown_timeout`` passes, ``overran(run)`` is called (it emits
    ``STOP_TIMEOUT`` and cancels it), the next run is asked, and the late one is waited for
    at the end.
    """

    __slots__ = (
        "_begin",
        "_deadline",
        "_index",
        "_overran",
        "_runs",
        "_segment_done",
        "_segment_end",
        "_timer",
        "stragglers",
    )

    def __init__(
        self,
        runs: list[Run],
        begin: Callable[[Run, float], float | None],
        overran: Callable[[Run], None],
    ) -> None:
        self._runs = runs
        self._begin = begin
        self._overran = overran
        self._index = 0
        self._segment_end = 0
        self._segment_done: trio.Event | None = None
        self._timer: trio.CancelScope | None = None
        # The deadline of the run being stopped now; the timer's deadline only moves
        # earlier (moving it is not free), and the wait goes on until this one.
        self._deadline = math.inf
        # Runs past their timeout that have not exited yet.
        self.stragglers: list[Run] = []

    def exited(self, run: Run) -> None:
        """Called on the exit of a run of the chain (from the run's task), once recorded."""
        if self._index < len(self._runs) and run is self._runs[self._index]:
            self._hand_on(run.exited_at)

    def _hand_on(self, now: float) -> None:
        self._index += 1
        while self._index < self._segment_end:
            if self._ask_current(now):
                return
            self._index += 1
        if self._segment_done is not None:
            self._segment_done.set()

    def _ask_current(self, now: float) -> bool:
        """Ask the current run to stop; False when it has exited already (skip it)."""
        run = self._runs[self._index]
        if run.exited:
            return False
        limit = self._begin(run, now)
        run.stop_chain = self
        if limit == 0:  # brutal kill: no asking, and no timeout to overrun
            run.cancel(run.stop_reason)
            self._deadline = math.inf
        else:
            asked = run.ask()
            assert asked  # a segment holds no service to ask
            self._deadline = stop_deadline(run, limit)
            timer = self._timer
            if timer is not None and self._deadline < timer.deadline:
                timer.deadline = self._deadline
        return True

    async def run(self) -> None:
        runs = self._runs
        while self._index < len(runs):
            run = runs[self._index]
            if run.exited:
                self._index += 1
                continue
            if run.service is not None and getattr(run.service, "stop", None) is not None:
                await self._stop_service(run)
                self._index += 1
                continue
            # A segment: the runs up to the next service hand the stop on by themselves.
            end = self._index
            while end < len(runs) and not _needs_awaited_ask(runs[end]):
                end += 1
            self._segment_end = end
            done = self._segment_done = trio.Event()
            self._ask_current(trio.current_time())
            while not done.is_set():
                with trio.CancelScope(deadline=self._deadline) as timer:
                    self._timer = timer
                    await done.wait()
                self._timer = None
                if not done.is_set() and trio.current_time() >= self._deadline:
                    late = runs[self._index]
                    self._overran(late)
                    self.stragglers.append(late)
                    self._hand_on(trio.current_time())
                # Else woken by the deadline of a run that has exited since: wait on.
            self._index = end
        for run in self.stragglers:
            await run.wait_exited()

    async def _stop_service(self, run: Run) -> None:
        # No ``stop_chain`` here: this task awaits the exit itself, and a hand-on from the
        # exit would step past the next run.
        limit = self._begin(run, trio.current_time())
        deadline = stop_deadline(run, limit)
        with trio.move_on_at(deadline):
            if limit == 0:
                run.cancel(run.stop_reason)
            else:
                run.request_stop()
                await run.ask_service()
            await run.wait_exited()
        if not run.exited:
            self._overran(run)
            self.stragglers.append(run)


def _needs_awaited_ask(run: Run) -> bool:
    return run.service is not None and getattr(run.service, "stop", None) is not None


async def stop_at_once(
    runs: list[Run],
    begin: Callable[[Run, float], float | None],
    overran: Callable[[Run], None],
) -> None:
    """Ask every run to stop at once, then wait for all, each bounded by its own timeout.

    Services' ``stop()`` are awaited concurrently. ``begin`` and ``overran`` are as for
    ``StopChain``; the exits are reported through ``RunOwner.run_exited`` as usual.
    """
    deadlines: list[tuple[float, Run]] = []
    services: list[tuple[Run, float]] = []
    now = trio.current_time()
    for run in runs:
        if run.exited:
            continue
        limit = begin(run, now)
        deadline = stop_deadline(run, limit)
        if limit == 0:
            run.cancel(run.stop_reason)
        elif not run.ask():
            services.append((run, deadline))
        deadlines.append((deadline, run))
    if services:
        async with trio.open_nursery() as nursery:
            for run, deadline in services:
                nursery.start_soon(_ask_service_until, run, deadline)
    deadlines.sort(key=operator.itemgetter(0))  # stable: the order of runs among equals
    stragglers: list[Run] = []
    for deadline, run in deadlines:
        if run.exited:
            continue
        with trio.move_on_at(deadline):
            await run.wait_exited()
        if not run.exited:
            overran(run)
            stragglers.append(run)
    for run in stragglers:
        await run.wait_exited()


async def _ask_service_until(run: Run, deadline: float) -> None:
    with trio.move_on_at(deadline):
        await run.ask_service()


@final
@attrs.define(eq=False)
class LockChanged:
    """Posted to the supervisor when a singleton run came to hold its lock, or lost it."""

    run: Run
    holding: bool
    reason: str


# ---------------------------------------------------------------------------- health


@final
@attrs.define(eq=False)
class HealthFailure:
    """Posted to the supervisor when a run failed ``threshold`` probes in a row."""

    run: Run
    error: HealthCheckFailed


async def probe(run: Run, health: HealthCheck, restarts: int) -> None:
    """Probe ``run`` every ``health.interval`` until it ends or fails ``threshold`` in a row."""
    assert run.probe_scope is not None
    _current.set(run)
    path = run.path
    check = health.check
    if check is None:
        check = getattr(run.service, "check_health", None)
        if check is None:
            log(
                logging.WARNING,
                "%s has a HealthCheck without check and its service has no"
                " check_health(); not probing it",
                path,
                path=path,
                kind="HEALTH_CHANGED",
            )
            return
    bus = run.owner.bus
    with run.probe_scope:
        while True:
            await trio.sleep(health.interval)
            status, problem, cause = await _probe_once(check, health.timeout)
            if status is not run.health:
                old, run.health = run.health, status
                bus.emit(
                    EventKind.HEALTH_CHANGED,
                    path,
                    restarts,
                    detail=f"{old.value} -> {status.value}" + (f": {problem}" if problem else ""),
                )
            if status is HealthStatus.UNHEALTHY:
                run.health_failures += 1
            else:
                run.health_failures = 0
            if run.health_failures >= health.threshold:
                error = HealthCheckFailed(
                    f"{path!r} failed {run.health_failures} health probes in a row; last: {problem}"
                )
                error.__cause__ = cause
                run.owner.post(HealthFailure(run, error))
                return


async def _probe_once(
    check: Callable[[], Awaitable[bool | HealthStatus]], seconds: float
) -> tuple[HealthStatus, str, BaseException | None]:
    """Run one probe: its status, a description of a failure, and the exception if any."""
    result: object = None
    with trio.move_on_after(seconds) as scope:
        try:
            result = await check()
        except Exception as exc:
            return HealthStatus.UNHEALTHY, f"probe raised {type(exc).__name__}: {exc}", exc
    if scope.cancelled_caught:
        return HealthStatus.UNHEALTHY, f"probe timed out after {seconds:g}s", None
    if result is True:
        return HealthStatus.HEALTHY, "", None
    if result is False:
        return HealthStatus.UNHEALTHY, "probe returned False", None
    if isinstance(result, HealthStatus):
        problem = "" if result is HealthStatus.HEALTHY else f"probe returned {result.value}"
        return result, problem, None
    return (
        HealthStatus.UNHEALTHY,
        f"probe returned {result!r}; it must return a bool or a HealthStatus",
        None,
    )
