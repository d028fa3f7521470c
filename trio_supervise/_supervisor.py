"""The supervisor runtime: one nursery per supervisor, one cancel scope per child run.

A supervisor is an actor in the OTP sense: a single task (``_serve``) owns all of its state
and handles one message at a time: a child's exit, a failed health check, a stop request,
or a call from the tree handle. That keeps restarts, group stops and API calls from racing
each other without locks. The policy (what to restart, whether it is allowed, how long to
wait) comes from ``_policy`` and the specs; this module only acts on it.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, TypeVar, final

import attrs
import outcome
import trio

from ._context import ChildContext, ChildState, _current
from ._errors import (
    ChildStartError,
    HealthCheckFailed,
    RestartIntensityExceeded,
    SupervisionError,
)
from ._events import EventBus, EventKind, log
from ._policy import RestartWindow, auto_shutdown_due, restart_group, should_restart
from ._spec import (
    ChildSpec,
    HealthCheck,
    HealthStatus,
    Restart,
    ServiceTarget,
    Strategy,
    SupervisorSpec,
    check_service_class,
)

T = TypeVar("T")


def join_path(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


@final
@attrs.define(eq=False)
class TreeShared:
    """What every supervisor of one tree shares."""

    bus: EventBus
    rng: random.Random
    # Woken on every change of a child's state, for waits in tests and tools.
    changed: trio.lowlevel.ParkingLot = attrs.field(factory=trio.lowlevel.ParkingLot)
    # Paths of runs that overran their shutdown_timeout and have not exited yet.
    unstopped: dict[str, Run] = attrs.field(factory=dict)


@final
@attrs.define(eq=False)
class Run:
    """One run of a child: from one (re)start to its exit."""

    child: Child
    ctx: ChildContext
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    # True once the run has ended, however it ended.
    exited: bool = False
    # Made only when someone waits for the exit: most runs are never waited for.
    _exit_event: trio.Event | None = None
    # True once the target is running for the supervisor (after started() for task_status).
    started: bool = False
    # The exception the run ended with; a failed health check is set here before the stop.
    error: BaseException | None = None
    # Set when the supervisor decided to stop this run: its exit is then handled by the
    # stopper, not reported to the supervisor's inbox.
    stop_kind: EventKind | None = None
    stop_reason: str = ""
    stop_asked_at: float = 0.0
    started_at: float = 0.0
    # The service object of a ChildSpec.service child, once its factory returned.
    service: Any = None
    # The supervisor running inside this run, for a SupervisorSpec child.
    nested: Supervisor | None = None
    # The health probe's scope, cancelled when the run ends; None without a health check.
    probe_scope: trio.CancelScope | None = None

    def mark_exited(self) -> None:
        self.exited = True
        if self._exit_event is not None:
            self._exit_event.set()

    async def wait_exited(self) -> None:
        if self.exited:
            await trio.lowlevel.checkpoint()
            return
        if self._exit_event is None:
            self._exit_event = trio.Event()
        await self._exit_event.wait()


@final
@attrs.define(eq=False)
class Child:
    """A child slot of a supervisor: its spec and what it has been through."""

    spec: ChildSpec | SupervisorSpec
    path: str
    changed: trio.lowlevel.ParkingLot
    _state: ChildState = ChildState.STOPPED
    restarts: int = 0
    # Consecutive restarts since the child last ran for backoff.reset_after: the n of backoff.
    consecutive: int = 0
    # The current run, or the last one; None before the first start.
    run: Run | None = None
    last_error: BaseException | None = None
    started_at: float | None = None
    # True when stopped on purpose by terminate_child: no strategy restarts it.
    terminated: bool = False
    # True when it exited and its policy does not restart it (for health and auto_shutdown).
    gone: bool = False
    # True once its spec left the supervisor (temporary child exited, delete_child).
    removed: bool = False
    # The due time of the pending restart that includes this child, while it waits.
    restart_due: float | None = None
    health: HealthStatus = HealthStatus.HEALTHY
    health_failures: int = 0

    @property
    def state(self) -> ChildState:
        return self._state

    @state.setter
    def state(self, state: ChildState) -> None:
        self._state = state
        if self.changed:  # somebody waits for a change
            self.changed.unpark_all()

    @property
    def kind(self) -> str:
        return "supervisor" if isinstance(self.spec, SupervisorSpec) else "worker"

    @property
    def nested(self) -> Supervisor | None:
        return self.run.nested if self.run is not None else None


@final
@attrs.define(eq=False)
class _Call:
    """A call from the tree handle, run by the supervisor's own task."""

    fn: Callable[[], Awaitable[Any]]
    done: trio.Event = attrs.field(factory=trio.Event)
    result: outcome.Outcome[Any] | None = None


@final
@attrs.define(eq=False)
class _HealthFailure:
    run: Run
    error: HealthCheckFailed


@final
@attrs.define(eq=False)
class _Pending:
    """A restart waiting for its backoff delay: the group starts in this order when due."""

    due: float
    group: list[Child]


_STOP: Final = object()


@final
class _Starter:
    """The ``task_status`` handed to a target: records the start, then passes it on."""

    __slots__ = ("_run", "_status")

    def __init__(self, run: Run, status: trio.TaskStatus[None]) -> None:
        self._run = run
        self._status = status

    def started(self, value: object = None) -> None:
        if self._run.started:
            raise RuntimeError(f"child {self._run.child.path!r} called task_status.started() twice")
        self._run.started = True
        self._status.started()


class Supervisor:
    """The runtime of one supervisor. Made by its parent (or the tree), never by users."""

    def __init__(
        self,
        spec: SupervisorSpec,
        path: str,
        shared: TreeShared,
    ) -> None:
        self.spec = spec
        self.path = path
        self.shared = shared
        self.children: list[Child] = [
            Child(child_spec, join_path(path, child_spec.name), shared.changed)
            for child_spec in spec.children
        ]
        self.window = RestartWindow(spec.max_restarts, spec.max_seconds)
        self._reset_after = spec.backoff.reset_after if spec.backoff is not None else math.inf
        self._inbox_send, self._inbox = trio.open_memory_channel[Any](math.inf)
        # True while the serve loop waits for a message and none has been posted since: the
        # supervisor's state is then at rest, and an exiting run may apply the policy to
        # itself synchronously, exactly as the loop would (see ``_restart_in_place``).
        self._idle = False
        self._pending: list[_Pending] = []
        self._nursery: trio.Nursery | None = None
        # How the children are reported when the supervisor stops them all at its end.
        self._stop_kind = EventKind.EXITED
        self._stop_reason = ""
        self._stop_requested = False
        # The run being started right now, so that a stop request can cut its start short.
        self._starting: Run | None = None
        # Significant children removed from the list (temporary ones that exited).
        self._significant_removed = 0
        # True between the end of the first start and the end of the serve loop.
        self.accepting = False
        self.failure: RestartIntensityExceeded | None = None

    # ----------------------------------------------------------------- public to the tree

    def find(self, name: str) -> Child | None:
        for child in self.children:
            if child.spec.name == name:
                return child
        return None

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` in the supervisor's own task, between two messages, and return its result."""
        if not self.accepting:
            raise SupervisionError(
                f"supervisor {self.path or '(root)'!r} is not running, so it cannot take this"
                " call; wait for it to start or restart"
            )
        call = _Call(fn)
        self._post(call)
        await call.done.wait()
        assert call.result is not None
        return call.result.unwrap()  # type: ignore[no-any-return]

    def request_stop(self, kind: EventKind, reason: str) -> None:
        """Ask the supervisor to stop its children in reverse start order and exit cleanly."""
        if self._stop_requested:
            return
        self._stop_requested = True
        self._stop_kind = kind
        self._stop_reason = reason
        starting = self._starting
        if starting is not None:
            starting.stop_kind, starting.stop_reason = kind, reason
            if starting.nested is not None:
                starting.nested.request_stop(kind, reason)
            else:
                starting.scope.cancel(reason=f"{reason}: cut short while starting")
        with contextlib.suppress(trio.ClosedResourceError):  # it has already exited
            self._post(_STOP)

    def _post(self, message: object) -> None:
        self._idle = False
        self._inbox_send.send_nowait(message)

    # ----------------------------------------------------------------------- lifecycle

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the children in order, then supervise them until stopped or failed.

        Raises:
          ChildStartError: a child failed to start; the started ones were stopped.
          RestartIntensityExceeded: too many restarts; every child was stopped first.
        """
        start_error: ChildStartError | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for child in list(self.children):
                    if self._stop_requested:
                        break
                    error = await self.start(child, restarted=False)
                    if error is not None and not self._stop_requested:
                        start_error = ChildStartError(child.path, error)
                        self._stop_kind, self._stop_reason = EventKind.EXITED, str(start_error)
                        break
                if start_error is None:
                    self.accepting = True
                    task_status.started()
                    await self._serve()
                self.accepting = False
                await self.stop_children(self.children, self._stop_kind, self._stop_reason)
                self._inbox_send.close()
                self._fail_calls()
        finally:
            # The nursery knows its task, whose context holds the tree: keeping it would
            # make the finished tree a reference cycle, left to the cyclic GC.
            self._nursery = None
        if start_error is not None:
            raise start_error
        if self.failure is not None:
            raise self.failure

    async def _serve(self) -> None:
        inbox = self._inbox
        while not self._stop_requested and self.failure is None:
            if self._pending:
                due = min(pending.due for pending in self._pending)
                message = None
                with trio.move_on_at(due):
                    self._idle = True
                    message = await inbox.receive()
                self._idle = False
                if message is None:
                    await self._start_due()
                    continue
            else:
                self._idle = True
                message = await inbox.receive()
                self._idle = False
            await self._handle(message)

    async def _handle(self, message: object) -> None:
        if isinstance(message, Run):
            # Not when a terminate_child came in between its exit and now: it stays stopped.
            child = message.child
            if child.run is message and message.stop_kind is None and not child.terminated:
                await self._exited(message)
        elif isinstance(message, _Call):
            message.result = await outcome.acapture(message.fn)
            message.done.set()
        elif isinstance(message, _HealthFailure):
            run = message.run
            if run.child.run is run and run.stop_kind is None and not run.exited:
                run.error = message.error
                await self._stop_one(run.child, EventKind.CRASHED, str(message.error))
                await self._exited(run)
        # _STOP needs no handling: the serve loop checks the flag it set.

    def _fail_calls(self) -> None:
        while True:
            try:
                message = self._inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return
            if isinstance(message, _Call):
                message.result = outcome.Error(
                    SupervisionError(
                        f"supervisor {self.path or '(root)'!r} stopped before it could take"
                        " this call"
                    )
                )
                message.done.set()

    # -------------------------------------------------------------------------- starting

    async def start(self, child: Child, *, restarted: bool) -> BaseException | None:
        """Start one run of ``child``; return the error if it failed before it started."""
        assert self._nursery is not None
        run = self._new_run(child)
        spec = child.spec
        if isinstance(spec, SupervisorSpec) or spec.takes_task_status:
            self._starting = run
            try:
                await self._nursery.start(self._run_child, run)
            finally:
                self._starting = None
            if not run.started:
                # It failed to start, or a stop request cut its start short (no error).
                child.state = ChildState.STOPPED
                if run.error is not None:
                    child.last_error = run.error
                return run.error
            # It took its time to call started().
            self._announce(child, run, restarted, trio.current_time())
        else:
            run.started = True
            self._nursery.start_soon(self._run_child, run)
            self._announce(child, run, restarted, run.started_at)
        return None

    def _new_run(self, child: Child) -> Run:
        spec = child.spec
        if isinstance(spec, SupervisorSpec) and child.run is not None:
            self._forget_dynamic_children(child.run.nested, spec)
        run = Run(child, ChildContext(spec.name, child.path, child.restarts))
        child.run = run
        child.state = ChildState.STARTING
        child.restart_due = None
        child.gone = False
        run.started_at = trio.current_time()
        if isinstance(spec, SupervisorSpec):
            run.nested = Supervisor(spec, child.path, self.shared)
        return run

    def _forget_dynamic_children(self, old: Supervisor | None, spec: SupervisorSpec) -> None:
        # A restarted supervisor starts from its spec, as in OTP: the children added to the
        # old one by start_child are gone. Say so, or watchers keep them forever.
        if old is None:
            return
        static = {child_spec.name for child_spec in spec.children}
        for gone in old.children:
            if gone.spec.name not in static:
                self.shared.bus.emit(
                    EventKind.REMOVED,
                    gone.path,
                    gone.restarts,
                    detail=f"added by start_child; {old.path!r} restarted from its spec",
                )

    def _announce(self, child: Child, run: Run, restarted: bool, now: float) -> None:
        """Record that ``run`` has started: state, event, health."""
        assert self._nursery is not None
        bus = self.shared.bus
        if not run.exited:
            child.state = ChildState.RUNNING
        child.started_at = run.started_at
        bus.emit(
            EventKind.RESTARTED if restarted else EventKind.STARTED,
            child.path,
            child.restarts,
            time=now,
        )
        if child.health is not HealthStatus.HEALTHY:
            # A fresh run starts healthy; say so, or watchers keep the old status.
            bus.emit(
                EventKind.HEALTH_CHANGED,
                child.path,
                child.restarts,
                detail=f"{child.health.value} -> healthy: restarted",
                time=now,
            )
            child.health = HealthStatus.HEALTHY
        child.health_failures = 0
        health = child.spec.health if isinstance(child.spec, ChildSpec) else None
        if health is not None:
            run.probe_scope = trio.CancelScope()
            self._nursery.start_soon(self._probe, run, health)

    async def _run_child(
        self, run: Run, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The task of a child's runs. It never raises what the child raised: it reports it.

        A plain target restarted in place (see ``_restart_in_place``) runs again in this
        same task, each run in its own cancel scope.
        """
        child = run.child
        spec = child.spec
        restarted = False
        while True:
            _current.set(run.ctx)
            try:
                with run.scope:
                    try:
                        if restarted:
                            # Let other tasks run between two runs of a crash loop.
                            await trio.lowlevel.checkpoint()
                        if run.nested is not None:
                            await run.nested.run(task_status=_Starter(run, task_status))
                        else:
                            assert isinstance(spec, ChildSpec)
                            if isinstance(spec.target, ServiceTarget):
                                await self._run_service(run, spec, task_status)
                            elif spec.takes_task_status:
                                await spec.target(
                                    *spec.args, task_status=_Starter(run, task_status)
                                )
                            else:
                                await spec.target(*spec.args)
                        if not run.started:
                            raise RuntimeError(
                                f"child {child.path!r} returned without calling"
                                " task_status.started()"
                            )
                    except trio.Cancelled:
                        raise
                    except Exception as exc:
                        run.error = exc
                    except BaseExceptionGroup as group:
                        # A nursery inside the child failed while being cancelled: keep the
                        # child's own errors. Cancellation is level-triggered, so an outer
                        # cancel still reaches the supervisor at its next checkpoint.
                        _, rest = group.split(trio.Cancelled)
                        if rest is None or rest.split(Exception)[1] is not None:
                            raise
                        run.error = group
            finally:
                run.mark_exited()
                if run.probe_scope is not None:
                    run.probe_scope.cancel()
                if self.shared.unstopped:
                    self.shared.unstopped.pop(child.path, None)
            self._report_exit(run)
            if not run.started:
                task_status.started()
                return
            if run.stop_kind is not None:
                return
            if self._idle:
                next_run = self._restart_in_place(run)
                if next_run is not None:
                    run, restarted = next_run, True
                    continue
            self._post(run)
            return

    def _restart_in_place(self, run: Run) -> Run | None:
        """Apply the policy to an exited run from its own task; return the next run.

        Only when the supervisor is idle (so its state is at rest and this is what its loop
        would do next), for a one-for-one restart of a plain target with no backoff: that
        needs no stop and no wait, so it is all synchronous. Saves the hop through the
        inbox and a new task per restart. Returns None when the loop must decide.
        """
        child = run.child
        spec = child.spec
        if (
            self.spec.strategy is not Strategy.ONE_FOR_ONE
            or self.spec.backoff is not None
            or child.run is not run
            or self._stop_requested
            or self.failure is not None
            or not isinstance(spec, ChildSpec)
            or spec.takes_task_status
            or isinstance(spec.target, ServiceTarget)
            or not should_restart(spec.restart, run.error is not None)
        ):
            return None
        child.state = ChildState.STOPPED
        if run.error is not None:
            child.last_error = run.error
        now = trio.current_time()
        if not self.window.allow(now):
            self._give_up(child, run.error)
            self._post(_STOP)  # wake the loop: it ends on the failure
            return None
        self._schedule_restart(child, [child], run.error, 0.0, now)
        next_run = self._new_run(child)
        next_run.started = True
        self._announce(child, next_run, True, next_run.started_at)
        return next_run

    async def _run_service(
        self, run: Run, spec: ChildSpec, task_status: trio.TaskStatus[None]
    ) -> None:
        assert isinstance(spec.target, ServiceTarget)
        service = spec.target.factory()
        run_method = getattr(service, "run", None)
        if not inspect.isclass(spec.target.factory):
            check_service_class(f"ChildSpec {spec.name!r}", type(service))
        run.service = service
        assert run_method is not None
        if "task_status" in inspect.signature(run_method).parameters:
            await run_method(task_status=_Starter(run, task_status))
        else:
            _Starter(run, task_status).started()
            await run_method()

    def _report_exit(self, run: Run) -> None:
        child = run.child
        bus = self.shared.bus
        if run.stop_kind is not None and child.run is run:
            # Stopped on purpose: it is STOPPED by the time its event is out.
            child.state = ChildState.STOPPED
        if run.error is not None:
            detail = "failed to start" if not run.started else run.stop_reason
            bus.emit(EventKind.CRASHED, child.path, child.restarts, run.error, detail)
        elif run.stop_kind is EventKind.TERMINATED:
            bus.emit(EventKind.TERMINATED, child.path, child.restarts, detail=run.stop_reason)
        elif run.stop_kind is not None:
            bus.emit(EventKind.EXITED, child.path, child.restarts, detail=run.stop_reason)
        else:
            bus.emit(EventKind.EXITED, child.path, child.restarts, detail="returned")

    # --------------------------------------------------------------------------- exits

    async def _exited(self, run: Run) -> None:
        """Apply the policy to a run that ended by itself (or failed its health checks)."""
        child = run.child
        abnormal = run.error is not None
        child.state = ChildState.STOPPED
        if abnormal:
            child.last_error = run.error
        policy = child.spec.restart
        if not should_restart(policy, abnormal):
            self._not_restarted(child)
            return
        now = trio.current_time()
        if run.started and now - run.started_at >= self._reset_after:
            child.consecutive = 0
        await self._restart(child, run.error, now)

    def _not_restarted(self, child: Child) -> None:
        if child.spec.restart is Restart.TEMPORARY:
            self.remove(child, "temporary child exited")
        else:
            child.gone = True
        if child.spec.significant:
            significant = [c.gone for c in self.children if c.spec.significant]
            significant += [True] * self._significant_removed
            if auto_shutdown_due(self.spec.auto_shutdown, significant):
                self.request_stop(
                    EventKind.EXITED, f"auto_shutdown: significant child {child.path!r} exited"
                )

    def forget_pending(self, child: Child) -> None:
        """Take ``child`` out of any pending restart (it is being stopped or started by hand)."""
        child.restart_due = None
        for pending in self._pending:
            if child in pending.group:
                pending.group.remove(child)
        self._pending = [p for p in self._pending if p.group]

    def remove(self, child: Child, why: str) -> None:
        self.children.remove(child)
        child.removed = True
        if child.spec.significant:
            self._significant_removed += 1
        self.shared.bus.emit(EventKind.REMOVED, child.path, child.restarts, detail=why)

    async def _restart(self, failed: Child, error: BaseException | None, now: float) -> None:
        """Restart ``failed`` and its strategy group, within the intensity, after backoff.

        ``now`` is when the restart is decided: it counts in the intensity from then.
        """
        while True:
            if not self.window.allow(now):
                self._give_up(failed, error)
                return
            if self.spec.strategy is Strategy.ONE_FOR_ONE:
                group = [failed]  # it has exited already: nothing to stop
            else:
                group = await self._stop_group(failed)
            backoff = self.spec.backoff
            delay = backoff.delay(failed.consecutive + 1, self.shared.rng) if backoff else 0.0
            self._schedule_restart(failed, group, error, delay, now)
            if delay > 0:
                due = now + delay
                for child in group:
                    child.restart_due = due
                self._pending.append(_Pending(due, group))
                return
            next_failure = await self._start_group(group)
            if next_failure is None:
                return
            failed, error = next_failure
            now = trio.current_time()

    def _give_up(self, failed: Child, error: BaseException | None) -> None:
        failure = RestartIntensityExceeded(self.path, self.spec.max_restarts, self.spec.max_seconds)
        failure.__cause__ = error
        self.failure = failure
        self._stop_kind = EventKind.EXITED
        self._stop_reason = f"supervisor gave up after {failed.path!r} exited"
        self.shared.bus.emit(EventKind.INTENSITY_EXCEEDED, self.path, 0, failure, str(failure))

    def _schedule_restart(
        self,
        failed: Child,
        group: list[Child],
        error: BaseException | None,
        delay: float,
        now: float,
    ) -> None:
        failed.consecutive += 1
        for child in group:
            child.state = ChildState.RESTARTING
            child.restarts += 1
        detail = f"in {delay:.3f}s" if delay else "in 0.000s"
        if len(group) > 1:
            detail += f" with {', '.join(c.path for c in group if c is not failed)}"
        self.shared.bus.emit(
            EventKind.RESTART_SCHEDULED, failed.path, failed.restarts, error, detail, now
        )

    async def _stop_group(self, failed: Child) -> list[Child]:
        """Stop the strategy group of ``failed`` (reverse order); return who is to restart."""
        # Stopped children (terminated on purpose, or gone by their policy) stay stopped.
        live = [c for c in self.children if c is failed or c.state is not ChildState.STOPPED]
        group = restart_group(self.spec.strategy, live, failed)
        reason = f"{self.spec.strategy.value} restart after {failed.path!r} exited"
        for child in group:
            self.forget_pending(child)
        await self.stop_children(group, EventKind.EXITED, reason)
        for child in list(group):
            if child is not failed and child.spec.restart is Restart.TEMPORARY:
                self.remove(child, f"temporary child stopped by {reason}")
                group.remove(child)
        return group

    async def _start_group(self, group: list[Child]) -> tuple[Child, BaseException] | None:
        for child in group:
            if child.state is not ChildState.RESTARTING or child.removed:
                continue  # terminated, restarted by hand or removed while it waited
            error = await self.start(child, restarted=True)
            if error is not None:
                if not should_restart(child.spec.restart, abnormal=True):
                    self._not_restarted(child)
                    continue
                return child, error
        return None

    async def _start_due(self) -> None:
        now = trio.current_time()
        due = [p for p in self._pending if p.due <= now]
        self._pending = [p for p in self._pending if p.due > now]
        for pending in due:
            failure = await self._start_group(pending.group)
            if failure is not None:
                await self._restart(*failure, trio.current_time())
            if self.failure is not None or self._stop_requested:
                return

    # -------------------------------------------------------------------------- stopping

    async def stop_children(self, children: Iterable[Child], kind: EventKind, reason: str) -> None:
        """Stop ``children`` one at a time in reverse order, then wait for the stragglers."""
        todo = list(children)
        stragglers: list[Run] = []
        while todo:
            # One timer scope for the whole loop rather than one per child: a scope per
            # child doubled the cost of a stop. Its deadline only moves earlier (moving it is
            # not free either): when it fires for an earlier child's deadline, the wait for
            # the current one goes on below until its own. A service's stop() must not be cut
            # short by another child's deadline, so for services it is set exactly.
            stopping: Run | None = None
            deadline = math.inf
            with trio.CancelScope() as timer:
                while todo:
                    child = todo.pop()
                    if child.restart_due is not None:
                        self.forget_pending(child)
                        child.state = ChildState.STOPPED
                    stopping = child.run
                    if stopping is None or stopping.exited:
                        continue
                    limit = self._begin_stop(child, stopping, kind, reason)
                    deadline = _stop_deadline(stopping, limit)
                    if deadline < timer.deadline or stopping.service is not None:
                        timer.deadline = deadline
                    await self._ask_and_wait(child, stopping, limit)
                    if child.state is not ChildState.STOPPED:
                        child.state = ChildState.STOPPED
            if stopping is not None and not stopping.exited:
                with trio.move_on_at(deadline):
                    await stopping.wait_exited()
                if stopping.exited:
                    stopping.child.state = ChildState.STOPPED
                else:
                    self._overran(stopping.child, stopping, reason)
                    stragglers.append(stopping)
        for run in stragglers:
            await run.wait_exited()
            run.child.state = ChildState.STOPPED

    async def _stop_one(self, child: Child, kind: EventKind, reason: str) -> None:
        """Stop the current run of ``child`` as §4 says, and wait for it past its timeout.

        Ask first (``stop_requested``, ``stop()``, or a nested supervisor's stop request),
        cancel a plain function at once, and emit ``STOP_TIMEOUT`` if it is still running
        ``shutdown_timeout`` seconds after it was asked.
        """
        run = child.run
        assert run is not None
        if run.exited:
            child.state = ChildState.STOPPED
            return
        timeout = self._begin_stop(child, run, kind, reason)
        with trio.move_on_at(_stop_deadline(run, timeout)):
            await self._ask_and_wait(child, run, timeout)
        if not run.exited:
            self._overran(child, run, reason)
            await run.wait_exited()
        child.state = ChildState.STOPPED

    def _begin_stop(self, child: Child, run: Run, kind: EventKind, reason: str) -> float | None:
        run.stop_kind = kind
        run.stop_reason = reason
        run.stop_asked_at = trio.current_time()
        child.state = ChildState.STOPPING
        return child.spec.shutdown_timeout

    async def _ask_and_wait(self, child: Child, run: Run, limit: float | None) -> None:
        """Ask ``run`` to stop (or cancel it for a ``limit`` of 0) and wait until it has exited."""
        reason = run.stop_reason
        if limit == 0:  # brutal kill: no asking, and no timeout to overrun
            run.scope.cancel(reason=f"trio_supervise stopped {child.path!r}: {reason}")
            await run.wait_exited()
            return
        run.ctx._request_stop()
        if run.nested is not None:
            assert run.stop_kind is not None
            run.nested.request_stop(run.stop_kind, reason)
        elif run.service is not None:
            await self._ask_service(child, run)
        else:
            run.scope.cancel(reason=f"trio_supervise stopped {child.path!r}: {reason}")
        await run.wait_exited()

    def _overran(self, child: Child, run: Run, reason: str) -> None:
        timeout = child.spec.shutdown_timeout
        assert timeout is not None
        self.shared.unstopped[child.path] = run
        self.shared.bus.emit(
            EventKind.STOP_TIMEOUT,
            child.path,
            child.restarts,
            detail=f"still running {timeout:g}s after it was asked to stop ({reason})",
        )
        run.scope.cancel(
            reason=f"trio_supervise stopped {child.path!r}: {reason}"
            f" (shutdown_timeout {timeout:g}s passed)"
        )

    async def _ask_service(self, child: Child, run: Run) -> None:
        stop = getattr(run.service, "stop", None)
        if stop is None:
            run.scope.cancel(reason=f"trio_supervise stopped {child.path!r}: it has no stop()")
            return
        # stop() runs in the supervisor's task; let current_child() answer for the service.
        token = _current.set(run.ctx)
        try:
            await stop()
        except Exception:
            log(
                logging.WARNING,
                "stop() of %s raised; cancelling it",
                child.path,
                path=child.path,
                kind="STOP_ERROR",
                exc_info=True,
            )
            run.scope.cancel(reason=f"trio_supervise stopped {child.path!r}: its stop() raised")
        finally:
            _current.reset(token)

    # ---------------------------------------------------------------------------- health

    async def _probe(self, run: Run, health: HealthCheck) -> None:
        assert run.probe_scope is not None
        _current.set(run.ctx)
        child = run.child
        check = health.check
        if check is None:
            check = getattr(run.service, "check_health", None)
            if check is None:
                log(
                    logging.WARNING,
                    "%s has a HealthCheck without check and its service has no"
                    " check_health(); not probing it",
                    child.path,
                    path=child.path,
                    kind="HEALTH_CHANGED",
                )
                return
        failures = 0
        with run.probe_scope:
            while True:
                await trio.sleep(health.interval)
                status, problem, cause = await _probe_once(check, health.timeout)
                if status is not child.health:
                    old, child.health = child.health, status
                    self.shared.bus.emit(
                        EventKind.HEALTH_CHANGED,
                        child.path,
                        child.restarts,
                        detail=f"{old.value} -> {status.value}"
                        + (f": {problem}" if problem else ""),
                    )
                if status is HealthStatus.UNHEALTHY:
                    failures += 1
                else:
                    failures = 0
                child.health_failures = failures
                if failures >= health.threshold:
                    error = HealthCheckFailed(
                        f"{child.path!r} failed {failures} health probes in a row; last: {problem}"
                    )
                    error.__cause__ = cause
                    self._post(_HealthFailure(run, error))
                    return


def _stop_deadline(run: Run, timeout: float | None) -> float:
    # None waits without a limit; 0 cancels at once and has nothing to overrun.
    return math.inf if not timeout else run.stop_asked_at + timeout


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
