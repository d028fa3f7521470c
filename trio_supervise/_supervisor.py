"""The supervisor: one nursery per supervisor, and the only writer of its children's state.

A supervisor is an actor in the OTP sense. Its own task (``_serve``) handles one message at
a time: a child's exit, a failed health check, a singleton that came to hold its lock or
lost it, a retry of a failed restart, a stop request, or a call from the tree handle (start,
terminate, restart, delete a child). Restarts, group stops and calls therefore never race
each other, and no lock is needed.

Its children's state (``Child``) is written only by this module's ``Supervisor`` methods,
and only in one of these places:

* the supervisor's own task, handling a message;
* the task of one of its runs reporting its exit (``run_exited``) while the supervisor
  cannot be in the middle of anything: it is idle (waiting for a message, none queued: a
  one-for-one restart without backoff is then applied in place, which saves a hop through
  the queue and a new task), or it is waiting for exactly that exit (a stop it asked for);
* the caller's task of a tree call while the supervisor is idle: ``delete_child``, and
  ``start_child`` / ``terminate_child`` of a plain child (``request_start``,
  ``request_terminate``); the serve loop takes no message until such a call is done.

``_inline`` is True while a handler runs on another task's stack (the tests check that
nothing else writes a ``Child``).

What to do on an exit is decided by ``_policy.decide_exit``, for both of those paths; how a
run is started, stopped and probed is ``_runner``'s.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, TypeVar, final

import attrs
import outcome
import trio

from ._context import ChildState
from ._errors import (
    ChildNotFoundError,
    ChildStartError,
    HealthCheckFailed,
    RestartIntensityExceeded,
    SpecError,
    SupervisionError,
)
from ._events import EventBus, EventKind
from ._policy import ExitAction, ExitDecision, RestartWindow, auto_shutdown_due, decide_exit
from ._runner import (
    HealthFailure,
    LockChanged,
    Run,
    StartChain,
    StopCause,
    StopChain,
    probe,
    run_task,
    stop_at_once,
    stop_deadline,
)
from ._singleton import SingletonRun
from ._spec import (
    AutoShutdown,
    ChildSpec,
    HealthStatus,
    Restart,
    Strategy,
    SupervisorSpec,
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
    # The tasks parked in ``changed``, counted by the tree's ``wait_changed``: a child's
    # state changes several times per start and stop, and this is the cheap test.
    watchers: int = 0
    # Paths of runs that overran their shutdown_timeout and have not exited yet.
    unstopped: dict[str, Run] = attrs.field(factory=dict)
    # What went wrong while the shutdown stopped runs, for its report: the runs cut at a
    # timeout (their shutdown_timeout, or one of their own that raised TooSlowError), and
    # those that raised something else as they stopped.
    shutdown_overran: list[str] = attrs.field(factory=list)
    shutdown_errors: list[str] = attrs.field(factory=list)
    # The backoff's n of each static child of a supervisor that ended, by path, until its
    # parent starts it again: the new instance takes them up, so that escalating to the
    # parent never sends a child that keeps failing back to its shortest delay.
    carried_backoff: dict[str, int] = attrs.field(factory=dict)


@final
@attrs.define(eq=False)
class Child:
    """A child slot of a supervisor: its spec and what it has been through.

    Written only by its ``Supervisor`` (see the module docstring).
    """

    spec: ChildSpec | SupervisorSpec
    path: str
    shared: TreeShared
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
    # The health of the previous run until the new one has started (then it is reset).
    stale_health: HealthStatus = HealthStatus.HEALTHY

    @property
    def state(self) -> ChildState:
        return self._state

    @state.setter
    def state(self, state: ChildState) -> None:
        self._state = state
        shared = self.shared
        if shared.watchers:
            shared.changed.unpark_all()

    @property
    def kind(self) -> str:
        return "supervisor" if isinstance(self.spec, SupervisorSpec) else "worker"

    @property
    def nested(self) -> Supervisor | None:
        nested = self.run.nested if self.run is not None else None
        assert nested is None or isinstance(nested, Supervisor)
        return nested

    @property
    def health(self) -> HealthStatus:
        return self.run.health if self.run is not None else HealthStatus.HEALTHY

    @property
    def health_failures(self) -> int:
        return self.run.health_failures if self.run is not None else 0

    @property
    def active(self) -> bool:
        """Running, as OTP's ``count_children`` counts: not while restarting or waiting."""
        state = self._state
        if state is ChildState.RUNNING or state is ChildState.STOPPING:
            return True
        run = self.run
        return (
            state is ChildState.STARTING
            and run is not None
            and not run.after_exit
            and not isinstance(run.service, SingletonRun)
        )

    @property
    def waiting_for_lock(self) -> bool:
        """A singleton that has started and waits for its lock (in state ``STARTING``)."""
        run = self.run
        return (
            self._state is ChildState.STARTING
            and run is not None
            and run.started
            and isinstance(run.service, SingletonRun)
        )


def is_plain(spec: ChildSpec | SupervisorSpec) -> bool:
    """A plain function target: started with ``start_soon``, no ``task_status``."""
    return isinstance(spec, ChildSpec) and not spec.takes_task_status


@final
@attrs.define(eq=False)
class _Call:
    """A call from the tree handle, run by the supervisor's own task."""

    fn: Callable[..., Awaitable[Any]]
    args: tuple[Any, ...]
    done: trio.Event = attrs.field(factory=trio.Event)
    result: outcome.Outcome[Any] | None = None


@final
@attrs.define(eq=False)
class _Delete:
    """``delete_child`` asked while the supervisor was busy: done when its turn comes."""

    child: Child


@final
@attrs.define(eq=False)
class _RetryRestart:
    """A restart whose start failed: tried again as a message, as OTP's ``try_again_restart``.

    ``rest`` are the children of its group that were not started yet; they start even if
    the retry is dropped (the child was terminated or restarted by hand meanwhile).
    """

    child: Child
    run: Run
    rest: list[Child]


@final
@attrs.define(eq=False)
class _Pending:
    """A restart waiting for its backoff delay: the group starts in this order when due."""

    due: float
    group: list[Child]


@final
@attrs.define(eq=False)
class _InlineOp:
    """A tree call run in the caller's task; ``run`` and ``deadline`` for a terminate."""

    run: Run | None = None
    deadline: float = math.inf
    done: trio.Event = attrs.field(factory=trio.Event)


_STOP: Final = object()


class Supervisor:
    """The runtime of one supervisor. Made by its parent (or the tree), never by users."""

    def __init__(self, spec: SupervisorSpec, path: str, shared: TreeShared) -> None:
        self.spec = spec
        self.path = path
        self.shared = shared
        self.bus = shared.bus
        # By name, in start order (a dict keeps insertion order and finds in O(1)).
        self.children: dict[str, Child] = {
            child_spec.name: Child(child_spec, join_path(path, child_spec.name), shared)
            for child_spec in spec.children
        }
        self.window = RestartWindow(spec.max_restarts, spec.max_seconds)
        self._reset_after = spec.backoff.reset_after if spec.backoff is not None else math.inf
        carried = shared.carried_backoff
        if carried:
            for child in self.children.values():
                child.consecutive = carried.pop(child.path, 0)
        self._inbox_send, self._inbox = trio.open_memory_channel[Any](math.inf)
        # True while the serve loop waits for a message and none has been posted since: the
        # state is then at rest, and an exit or a deletion may be applied synchronously,
        # exactly as the loop would apply it next.
        self._idle = False
        # True while another task runs one of this supervisor's handlers on its behalf: in
        # a run's task when the run exits (the supervisor is idle, or waits for exactly that
        # stop), or in the caller's of an idle delete_child. Only such handlers and the
        # supervisor's own task write its children (checked by the tests).
        self._inline = False
        # A start_child or terminate_child the caller's task does itself, the supervisor
        # being idle (a hop saved each way). The serve loop takes no message until it is done.
        self._inline_op: _InlineOp | None = None
        # The serve loop's wait for a message, whose deadline an inline stop moves earlier.
        self._wait_scope: trio.CancelScope | None = None
        # Restarts in place apply to one-for-one supervisors without backoff only.
        self._restarts_in_place = spec.strategy is Strategy.ONE_FOR_ONE and spec.backoff is None
        self._pending: list[_Pending] = []
        # Messages posted and not yet received.
        self._queued = 0
        # Open while the supervisor runs; its runs start their successors in it.
        self.nursery: trio.Nursery | None = None
        # How the children are stopped when the supervisor stops them all at its end.
        self._stop_cause = StopCause.SUPERVISOR_EXIT
        self._stop_reason = ""
        self._stop_requested = False
        # What is being started right now, so that a stop request can cut it short.
        self._starting: Run | None = None
        self._starting_chain: StartChain | None = None
        # Significant children removed (temporary ones that exited), for auto_shutdown.
        self._significant_removed = 0
        # True between the end of the first start and the end of the serve loop.
        self.accepting = False
        self.failure: RestartIntensityExceeded | None = None
        # The supervisor's own task, once it runs (for checks of who writes child state).
        self.task: trio.lowlevel.Task | None = None

    @property
    def name(self) -> str:
        return self.path or "(root)"

    # ---------------------------------------------------------------- messages and calls

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``fn(*args)`` in the supervisor's own task, between two messages."""
        if not self.accepting:
            raise SupervisionError(
                f"supervisor {self.name!r} is not running, so it cannot take this call;"
                " wait for it to start or restart"
            )
        call = _Call(fn, args)
        self.post(call)
        await call.done.wait()
        assert call.result is not None
        return call.result.unwrap()  # type: ignore[no-any-return]

    def post(self, message: object) -> None:
        """Queue ``message`` for the supervisor's task (dropped once it has ended)."""
        self._idle = False
        with contextlib.suppress(trio.ClosedResourceError):
            self._inbox_send.send_nowait(message)
            self._queued += 1

    def request_stop(self, cause: StopCause, reason: str) -> None:
        """Ask the supervisor to stop its children in reverse start order and exit cleanly."""
        if self._stop_requested:
            return
        self._stop_requested = True
        self._stop_cause = cause
        self._stop_reason = reason
        starting = self._starting
        if starting is not None:
            starting.cause, starting.stop_reason = cause, reason
            if starting.nested is not None:
                starting.nested.request_stop(cause, reason)
            else:
                starting.cancel(f"{reason}: cut short while starting")
        if self._starting_chain is not None:
            self._starting_chain.abort()
        self.post(_STOP)

    # ----------------------------------------------------------------------- lifecycle

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the children in order, then supervise them until stopped or failed.

        Raises:
          ChildStartError: a child failed to start; the started ones were stopped.
          RestartIntensityExceeded: too many restarts; every child was stopped first.
        """
        self.task = trio.lowlevel.current_task()
        start_error: ChildStartError | None = None
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                failure = await self._start_children(
                    list(self.children.values()), restarted=False, after_exit=False
                )
                if failure is not None and not self._stop_requested:
                    child, error, _ = failure
                    start_error = ChildStartError(child.path, error)
                    self._stop_cause = StopCause.SUPERVISOR_EXIT
                    self._stop_reason = str(start_error)
                if start_error is None:
                    self.accepting = True
                    task_status.started()
                    await self._serve()
                self.accepting = False
                await self.stop_children(
                    list(self.children.values()), self._stop_cause, self._stop_reason
                )
                self._inbox_send.close()
                self._fail_calls()
        finally:
            self._carry_backoff()
            # The nursery knows its task, whose context holds the tree: keeping it would
            # make the finished tree a reference cycle, left to the cyclic GC.
            self.nursery = None
            self.task = None
        if start_error is not None:
            raise start_error
        if self.failure is not None:
            raise self.failure

    def _carry_backoff(self) -> None:
        """Leave the static children's backoff counts for the next instance (see TreeShared)."""
        now = trio.current_time()
        carried = self.shared.carried_backoff
        for child_spec in self.spec.children:
            child = self.children.get(child_spec.name)
            if child is None or child.consecutive == 0:
                continue
            run = child.run
            if run is not None and run.started:
                ended = run.exited_at if run.exited else now
                if ended - run.started_at >= self._reset_after:
                    continue  # it ran long enough to start over
            carried[child.path] = child.consecutive

    def _forget_carried_backoff(self, child: Child) -> None:
        carried = self.shared.carried_backoff
        if carried and isinstance(child.spec, SupervisorSpec):
            prefix = f"{child.path}/"
            for path in [path for path in carried if path.startswith(prefix)]:
                del carried[path]

    async def _serve(self) -> None:
        inbox = self._inbox
        while not self._stop_requested and self.failure is None:
            # Queued messages come before a restart that is due: it waits its turn.
            due = math.inf
            if not self._queued:
                due = min((pending.due for pending in self._pending), default=math.inf)
            op = self._inline_op
            if op is not None:
                due = min(due, op.deadline)
            message = None
            with trio.CancelScope(deadline=due) as self._wait_scope:
                self._idle = not self._queued  # else the state is about to change
                message = await inbox.receive()
            self._wait_scope = None
            self._idle = False
            await self._finish_inline_op()
            if message is None:
                if self._pending and trio.current_time() >= min(p.due for p in self._pending):
                    await self._start_due()
                continue
            self._queued -= 1
            await self._handle(message)
        await self._finish_inline_op()

    async def _handle(self, message: object) -> None:
        if isinstance(message, Run):
            await self._exited(message)
        elif isinstance(message, _Call):
            message.result = await outcome.acapture(message.fn, *message.args)
            message.done.set()
        elif isinstance(message, _RetryRestart):
            await self._retry_restart(message)
        elif isinstance(message, HealthFailure):
            await self._health_failed(message.run, message.error)
        elif isinstance(message, LockChanged):
            self._lock_changed(message)
        elif isinstance(message, _Delete):
            self._delete(message.child)
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
                        f"supervisor {self.name!r} stopped before it could take this call"
                    )
                )
                message.done.set()

    def _child_of(self, run: Run) -> Child | None:
        """The child whose current run is ``run``; None once it has a newer one or left."""
        child = self.children.get(run.spec.name)
        return child if child is not None and child.run is run else None

    # -------------------------------------------------------------------------- starting

    async def _start_children(
        self, children: list[Child], *, restarted: bool, after_exit: bool
    ) -> tuple[Child, BaseException, list[Child]] | None:
        """Start ``children`` in order; stop at the first that fails to start.

        Returns that child, its error and the children after it, or None. Runs of
        consecutive plain children start as one ``StartChain``.
        """
        index, count = 0, len(children)
        while index < count and not self._stop_requested:
            child = children[index]
            if is_plain(child.spec):
                end = index + 1
                while end < count and is_plain(children[end].spec):
                    end += 1
                # A restart's last plain children: nothing after them waits for their first
                # steps, so the supervisor goes back to its queue at once (and a crash at a
                # first step finds it idle: a one-for-one restart is then done in place).
                last = after_exit and end == count
                await self._start_chain(children[index:end], restarted, after_exit, wait=not last)
                index = end
                continue
            error = await self._start_one(child, restarted, after_exit)
            if error is not None:
                return child, error, children[index + 1 :]
            index += 1
        return None

    async def _start_chain(
        self, children: list[Child], restarted: bool, after_exit: bool, *, wait: bool = True
    ) -> None:
        """Spawn plain ``children``, which take their first steps in order.

        With ``wait`` the supervisor waits for the last first step, then announces them;
        else it announces them at once (a stop request then stops them as started runs).
        """
        assert self.nursery is not None
        now = trio.current_time()
        runs = [self._new_run(child, after_exit, now) for child in children]
        chain = StartChain(runs)
        start_soon = self.nursery.start_soon
        for run in runs:
            if not wait:
                run.started = True
            start_soon(run_task, chain)
        if not wait:
            for child, run in zip(children, runs, strict=True):
                self._announce(child, run, restarted, now)
            return
        self._starting_chain = chain
        try:
            await chain.done.wait()
        finally:
            self._starting_chain = None
        now = trio.current_time()
        for child, run in zip(children, runs, strict=True):
            if run.started:
                self._announce(child, run, restarted, now)
            else:  # a stop request cut the chain short before its turn
                run.mark_exited()
                run.reported = True
                child.state = ChildState.STOPPED

    async def _start_one(
        self, child: Child, restarted: bool, after_exit: bool
    ) -> BaseException | None:
        """Start a ``task_status`` target, service or supervisor; its error if it failed."""
        assert self.nursery is not None
        run = self._new_run(child, after_exit, trio.current_time())
        self._starting = run
        try:
            await self.nursery.start(run_task, run)
        finally:
            self._starting = None
        if run.started:
            # It took its time to call started().
            self._announce(child, run, restarted, trio.current_time())
            return None
        # It failed to start, or a stop request cut its start short (no error).
        run.reported = True
        child.state = ChildState.RESTARTING if after_exit and run.error else ChildState.STOPPED
        if run.error is not None:
            child.last_error = run.error
            self.bus.emit(
                EventKind.START_FAILED,
                child.path,
                child.restarts,
                run.error,
                "failed to start",
                run.exited_at,
            )
        elif run.cause is not None:
            self.bus.emit(run.cause.event, child.path, child.restarts, detail=run.stop_reason)
        return run.error

    def _new_run(self, child: Child, after_exit: bool, now: float) -> Run:
        spec = child.spec
        previous = child.run
        if previous is not None:
            if previous.started:  # a start that failed had no health of its own
                child.stale_health = previous.health
            if isinstance(spec, SupervisorSpec):
                self._forget_dynamic_children(previous, spec)
        run = Run(self, spec, child.path, child.restarts, after_exit)
        child.run = run
        child.state = ChildState.STARTING
        child.restart_due = None
        child.gone = False
        run.started_at = now
        if isinstance(spec, SupervisorSpec):
            run.nested = Supervisor(spec, child.path, self.shared)
        return run

    def _forget_dynamic_children(self, previous: Run, spec: SupervisorSpec) -> None:
        # A restarted supervisor starts from its spec, as in OTP: the children added to the
        # old one by start_child are gone. Say so, or watchers keep them forever.
        old = previous.nested
        if not isinstance(old, Supervisor):
            return
        static = {child_spec.name for child_spec in spec.children}
        for gone in old.children.values():
            if gone.spec.name not in static:
                self.bus.emit(
                    EventKind.REMOVED,
                    gone.path,
                    gone.restarts,
                    detail=f"added by start_child; {old.path!r} restarted from its spec",
                )

    def _announce(self, child: Child, run: Run, restarted: bool, now: float) -> None:
        """Record that ``run`` has started: state, event, health."""
        assert self.nursery is not None
        bus = self.bus
        if not run.exited and not isinstance(run.service, SingletonRun):
            # A singleton stays STARTING until it reports that it holds its lock.
            child.state = ChildState.RUNNING
        child.started_at = run.started_at
        bus.emit(
            EventKind.RESTARTED if restarted else EventKind.STARTED,
            child.path,
            child.restarts,
            time=now,
        )
        if child.stale_health is not HealthStatus.HEALTHY:
            # A fresh run starts healthy; say so, or watchers keep the old status.
            bus.emit(
                EventKind.HEALTH_CHANGED,
                child.path,
                child.restarts,
                detail=f"{child.stale_health.value} -> healthy: restarted",
                time=now,
            )
            child.stale_health = HealthStatus.HEALTHY
        health = child.spec.health if isinstance(child.spec, ChildSpec) else None
        if health is not None and not run.exited:
            run.probe_scope = trio.CancelScope()
            self.nursery.start_soon(probe, run, health, child.restarts)

    # --------------------------------------------------------------------------- exits

    def run_exited(self, run: Run) -> Run | None:
        """Take the exit of one of this supervisor's runs, in the run's own task.

        A stop the supervisor asked for is recorded at once (it waits for exactly that). A
        run that exited by itself is queued for the supervisor's task, unless the supervisor
        is idle and the exit is a one-for-one restart without backoff of a plain target:
        then it is restarted in place, and the next run is returned to run in this task.
        """
        self._inline = True
        try:
            return self._take_exit(run)
        finally:
            self._inline = False

    def _take_exit(self, run: Run) -> Run | None:
        if run.cause is not None:
            self._record_stopped(run)
            chain = run.stop_chain
            if chain is not None:
                chain.exited(run)
            return None
        if (
            self._idle
            and self._inline_op is None
            and self._restarts_in_place
            and is_plain(run.spec)
        ):
            child = self._child_of(run)
            if child is not None and not self._stop_requested and self.failure is None:
                return self._restart_in_place(child, run)
        self.post(run)
        return None

    def _restart_in_place(self, child: Child, run: Run) -> Run | None:
        self._record_exit(child, run)
        now = trio.current_time()
        decision = self._decide(child, run.error, now, ran_from=run.started_at)
        if decision.action is not ExitAction.RESTART:
            self._stay_down(child, decision, run.error)
            return None
        self._schedule_restart(child, [child], run.error, decision, now)
        following = self._new_run(child, True, now)
        following.started = True
        self._announce(child, following, True, following.started_at)
        return following

    def _record_exit(self, child: Child, run: Run) -> None:
        """Record the exit of a run that ended by itself: state and event."""
        run.reported = True
        child.state = ChildState.STOPPED
        if run.error is not None:
            child.last_error = run.error
            self.bus.emit(
                EventKind.CRASHED, child.path, child.restarts, run.error, "", run.exited_at
            )
        else:
            self.bus.emit(
                EventKind.EXITED, child.path, child.restarts, detail="returned", time=run.exited_at
            )

    def _record_stopped(self, run: Run) -> None:
        """Record the exit of a run the supervisor stopped: state and event."""
        if run.reported:
            return
        run.reported = True
        path = run.path
        unstopped = self.shared.unstopped
        if unstopped and unstopped.get(path) is run:
            del unstopped[path]
        child = self._child_of(run)
        restarts = run.restarts
        if child is not None:
            restarts = child.restarts
            if run.cause is not StopCause.RESTART:
                child.state = ChildState.STOPPED
            if run.error is not None:
                child.last_error = run.error
        cause = run.cause
        assert cause is not None
        if run.error is not None:
            if cause is StopCause.SHUTDOWN:
                if isinstance(run.error, trio.TooSlowError):  # cut by a timeout of its own
                    self.shared.shutdown_overran.append(f"{path} ({run.error})")
                else:
                    self.shared.shutdown_errors.append(f"{path}: {run.error!r}")
            self.bus.emit(
                EventKind.CRASHED, path, restarts, run.error, run.stop_reason, run.exited_at
            )
        else:
            self.bus.emit(cause.event, path, restarts, detail=run.stop_reason, time=run.exited_at)
        op = self._inline_op
        if op is not None and op.run is run:
            self._inline_op = None
            if child is not None and child.spec.restart is Restart.TEMPORARY:
                self._remove(child, "temporary child terminated")
            op.done.set()

    async def _exited(self, run: Run) -> None:
        """Apply the policy to a run that ended by itself (a message from its task)."""
        child = self._child_of(run)
        if child is None or run.reported or run.cause is not None:
            return  # superseded: stopped, restarted or removed since
        self._record_exit(child, run)
        if child.terminated:
            return  # a terminate_child came in between: it stays stopped
        now = trio.current_time()
        await self._apply(
            child, run.error, self._decide(child, run.error, now, run.started_at), now
        )

    def _lock_changed(self, change: LockChanged) -> None:
        """A singleton run came to hold its lock (RUNNING) or lost it (STARTING again)."""
        run = change.run
        child = self._child_of(run)
        if child is None or run.exited or run.cause is not None:
            return  # it is being stopped, or has exited: that is recorded instead
        if change.holding:
            child.state = ChildState.RUNNING
            holder = run.service.holder if isinstance(run.service, SingletonRun) else None
            self.bus.emit(EventKind.LOCK_ACQUIRED, child.path, child.restarts, detail=holder or "")
        else:
            child.state = ChildState.STARTING
            self.bus.emit(EventKind.LOCK_LOST, child.path, child.restarts, detail=change.reason)

    async def _health_failed(self, run: Run, error: HealthCheckFailed) -> None:
        child = self._child_of(run)
        if child is None or run.cause is not None or run.exited:
            return
        run.error = error
        await self.stop_children([child], StopCause.HEALTH, str(error))
        now = trio.current_time()
        await self._apply(child, error, self._decide(child, error, now, run.started_at), now)

    def _decide(
        self, child: Child, error: BaseException | None, now: float, ran_from: float | None
    ) -> ExitDecision[Child]:
        if ran_from is not None and now - ran_from >= self._reset_after:
            child.consecutive = 0
        strategy = self.spec.strategy
        if strategy is Strategy.ONE_FOR_ONE:
            siblings: list[Child] = [child]
        else:
            # Stopped children (terminated on purpose, or gone by their policy) stay down.
            siblings = [
                c for c in self.children.values() if c is child or c.state is not ChildState.STOPPED
            ]
        return decide_exit(
            strategy=strategy,
            restart=child.spec.restart,
            abnormal=error is not None,
            failed=child,
            siblings=siblings,
            window=self.window,
            now=now,
            backoff=self.spec.backoff,
            consecutive=child.consecutive,
            rng=self.shared.rng,
        )

    async def _apply(
        self, child: Child, error: BaseException | None, decision: ExitDecision[Child], now: float
    ) -> None:
        if decision.action is not ExitAction.RESTART:
            self._stay_down(child, decision, error)
            return
        group = list(decision.group)
        if len(group) > 1:
            group = await self._stop_group(child, group)
        self._schedule_restart(child, group, error, decision, now)
        if decision.delay > 0:
            due = now + decision.delay
            for member in group:
                member.restart_due = due
            self._pending.append(_Pending(due, group))
            return
        await self._start_group(group)

    def _stay_down(
        self, child: Child, decision: ExitDecision[Child], error: BaseException | None
    ) -> None:
        if decision.action is ExitAction.GIVE_UP:
            self._give_up(child, error)
            return
        if decision.action is ExitAction.REMOVE:
            self._remove(child, "temporary child exited")
        else:
            child.gone = True
        self._check_auto_shutdown(child)

    def _check_auto_shutdown(self, child: Child) -> None:
        if not child.spec.significant or self.spec.auto_shutdown is AutoShutdown.NEVER:
            return
        significant = [c.gone for c in self.children.values() if c.spec.significant]
        significant += [True] * self._significant_removed
        if auto_shutdown_due(self.spec.auto_shutdown, significant):
            self.request_stop(
                StopCause.SUPERVISOR_EXIT,
                f"auto_shutdown: significant child {child.path!r} exited",
            )

    def _give_up(self, failed: Child, error: BaseException | None) -> None:
        failure = RestartIntensityExceeded(self.path, self.spec.max_restarts, self.spec.max_seconds)
        failure.__cause__ = error
        self.failure = failure
        self._stop_cause = StopCause.SUPERVISOR_EXIT
        self._stop_reason = f"supervisor gave up after {failed.path!r} exited"
        self.bus.emit(EventKind.INTENSITY_EXCEEDED, self.path, 0, failure, str(failure))
        self.post(_STOP)  # wake the loop if this was decided in place: it ends on the failure

    def _schedule_restart(
        self,
        failed: Child,
        group: list[Child],
        error: BaseException | None,
        decision: ExitDecision[Child],
        now: float,
    ) -> None:
        failed.consecutive = decision.attempt
        for member in group:
            member.state = ChildState.RESTARTING
            member.restarts += 1
        detail = f"in {decision.delay:.3f}s"
        if len(group) > 1:
            detail += f" with {', '.join(c.path for c in group if c is not failed)}"
        self.bus.emit(EventKind.RESTART_SCHEDULED, failed.path, failed.restarts, error, detail, now)

    async def _stop_group(self, failed: Child, group: list[Child]) -> list[Child]:
        """Stop the strategy group of ``failed`` (reverse order); return who is to restart."""
        reason = f"{self.spec.strategy.value} restart after {failed.path!r} exited"
        for member in group:
            self.forget_pending(member)
        await self.stop_children(group, StopCause.RESTART, reason)
        restarting: list[Child] = []
        for member in group:
            if member is not failed and member.spec.restart is Restart.TEMPORARY:
                self._remove(member, f"temporary child stopped by {reason}")
            else:
                restarting.append(member)
        return restarting

    async def _start_group(self, group: list[Child]) -> None:
        """Start a restart's group in order; a start that fails is retried as a message."""
        todo = [c for c in group if c.state is ChildState.RESTARTING and not c.removed]
        while todo:
            failure = await self._start_children(todo, restarted=True, after_exit=True)
            if failure is None:
                return
            child, _error, todo = failure
            if child.spec.restart is Restart.TEMPORARY:
                self._remove(child, "temporary child failed to restart")
                self._check_auto_shutdown(child)
                continue
            assert child.run is not None
            self.post(_RetryRestart(child, child.run, todo))
            return

    async def _retry_restart(self, retry: _RetryRestart) -> None:
        child = retry.child
        if child.run is retry.run and not child.removed and child.state is ChildState.RESTARTING:
            now = trio.current_time()
            error = retry.run.error
            await self._apply(child, error, self._decide(child, error, now, None), now)
        else:  # terminated, restarted by hand or removed since: the rest still starts
            await self._start_group(retry.rest)

    async def _start_due(self) -> None:
        # One restart per turn of the loop: what it posts (a retry, say) is handled before
        # the next one due at the same moment, as timer messages queue behind it in OTP.
        pending = min(self._pending, key=lambda p: p.due)
        self._pending.remove(pending)
        await self._start_group(pending.group)

    def forget_pending(self, child: Child) -> None:
        """Take ``child`` out of any pending restart (it is being stopped or started by hand)."""
        if child.restart_due is None:
            return
        child.restart_due = None
        for pending in self._pending:
            if child in pending.group:
                pending.group.remove(child)
        self._pending = [p for p in self._pending if p.group]

    def _remove(self, child: Child, why: str) -> None:
        if child.removed:
            return
        del self.children[child.spec.name]
        child.removed = True
        self._forget_carried_backoff(child)  # a new child of that name starts clean
        if child.spec.significant:
            self._significant_removed += 1
        self.bus.emit(EventKind.REMOVED, child.path, child.restarts, detail=why)

    # -------------------------------------------------------------------------- stopping

    async def stop_children(self, children: Iterable[Child], cause: StopCause, reason: str) -> None:
        """Stop ``children`` (given in start order): in reverse order, or all at once for a
        ``concurrent_stop`` supervisor; then wait for the stragglers.
        """
        stopping = list(children)
        runs: list[Run] = []
        for child in reversed(stopping):
            if child.restart_due is not None:
                self.forget_pending(child)
            run = child.run
            if run is None or run.exited:
                if run is not None and not run.reported and run.cause is None:
                    self._record_exit(child, run)  # it ended by itself meanwhile
                continue
            run.cause, run.stop_reason = cause, reason
            runs.append(run)
        if runs:
            if self.spec.concurrent_stop and len(runs) > 1:
                await stop_at_once(runs, self._begin_stop, self._overran)
            else:
                await StopChain(runs, self._begin_stop, self._overran).run()
        if cause is not StopCause.RESTART:
            for child in stopping:
                if child.state is not ChildState.STOPPED:
                    child.state = ChildState.STOPPED

    def _begin_stop(self, run: Run, now: float) -> float | None:
        """Mark ``run`` as asked to stop at ``now``; return its ``shutdown_timeout``."""
        run.stop_asked_at = now
        child = self._child_of(run)
        if child is not None:
            restarting = run.cause is StopCause.RESTART
            child.state = ChildState.RESTARTING if restarting else ChildState.STOPPING
        return run.spec.shutdown_timeout

    def _overran(self, run: Run) -> None:
        timeout = run.spec.shutdown_timeout
        assert timeout is not None
        self.shared.unstopped[run.path] = run
        if run.cause is StopCause.SHUTDOWN:
            self.shared.shutdown_overran.append(f"{run.path} (shutdown_timeout {timeout:g}s)")
        self.bus.emit(
            EventKind.STOP_TIMEOUT,
            run.path,
            run.restarts,
            detail=f"still running {timeout:g}s after it was asked to stop ({run.stop_reason})",
        )
        run.cancel(f"{run.stop_reason} (shutdown_timeout {timeout:g}s passed)")

    # ------------------------------------------------------- the tree handle's requests

    def _check_new_child(self, spec: ChildSpec | SupervisorSpec) -> None:
        where = f"supervisor {self.name!r}"
        if spec.name in self.children:
            raise SupervisionError(
                f"{where} already has a child named {spec.name!r}; pick another name or"
                " delete_child() the old one first"
            )
        limit = self.spec.max_children
        if limit is not None and len(self.children) >= limit:
            raise SupervisionError(
                f"{where} already holds max_children={limit} children; cannot start {spec.name!r}"
            )
        if spec.significant and self.spec.auto_shutdown is AutoShutdown.NEVER:
            raise SpecError(
                f"ChildSpec {spec.name!r} is significant but {where} has auto_shutdown"
                " NEVER; drop significant or start it under another supervisor"
            )

    def _current(self, child: Child) -> Child:
        """``child`` if it is still one of this supervisor's, else ``ChildNotFoundError``."""
        if self.children.get(child.spec.name) is not child:
            raise ChildNotFoundError(child.path, self.path, list(self.children))
        return child

    def _can_inline(self) -> bool:
        return (
            self._idle
            and self._inline_op is None
            and self.accepting
            and not self._stop_requested
            and self.failure is None
        )

    async def request_start(self, spec: ChildSpec | SupervisorSpec) -> Child:
        """``start_child`` for the tree handle: in the caller's task when that is safe.

        A plain target started while the supervisor is idle needs no hop to its task: the
        caller adds, spawns and announces it in one synchronous step, then waits for its
        first step (so that calls in a row start in order). Everything else is a call.
        """
        if not (is_plain(spec) and self._can_inline()):
            return await self.call(self.start_child, spec)
        assert self.nursery is not None
        self._check_new_child(spec)
        self._inline = True
        try:
            child = Child(spec, join_path(self.path, spec.name), self.shared)
            self.children[spec.name] = child
            now = trio.current_time()
            run = self._new_run(child, False, now)
            first_step = StartChain([run])
            run.started = True
            self.nursery.start_soon(run_task, first_step)
            self._announce(child, run, False, now)
        finally:
            self._inline = False
        await first_step.done.wait()
        return child

    async def request_terminate(self, child: Child) -> None:
        """``terminate_child`` for the tree handle: in the caller's task when that is safe.

        A running plain target of an idle supervisor is cancelled here, and its exit (in
        its own task) completes the call. The caller only waits: cancelling it leaves the
        stop to finish, and the supervisor's loop keeps its deadline (``STOP_TIMEOUT``) and
        takes no other message until the child has exited.
        """
        run = child.run
        if not (
            self._can_inline()
            and is_plain(child.spec)
            and run is not None
            and run.started
            and not run.exited
            and run.cause is None
            and child.restart_due is None
        ):
            await self.call(self.terminate_child, child)
            return
        self._current(child)
        op = self._inline_op = _InlineOp(run)
        self._inline = True
        try:
            child.terminated = True
            run.cause, run.stop_reason = StopCause.TERMINATE, "terminate_child"
            limit = self._begin_stop(run, trio.current_time())
            if limit != 0:  # brutal kill: no asking
                run.request_stop()
            run.cancel(run.stop_reason)
            op.deadline = stop_deadline(run, limit)
            wait = self._wait_scope
            if wait is not None and op.deadline < wait.deadline:
                wait.deadline = op.deadline
        finally:
            self._inline = False
        await op.done.wait()

    async def _finish_inline_op(self) -> None:
        """Wait out an inline call, keeping a terminated child's deadline meanwhile."""
        op = self._inline_op
        if op is None:
            return
        with trio.move_on_at(op.deadline):
            await op.done.wait()
        if op.done.is_set():
            return
        assert op.run is not None
        self._overran(op.run)
        await op.done.wait()

    async def start_child(self, spec: ChildSpec | SupervisorSpec) -> Child:
        """Add ``spec`` and start it; ``ChildStartError`` (spec not kept) if it fails."""
        self._check_new_child(spec)
        child = Child(spec, join_path(self.path, spec.name), self.shared)
        self.children[spec.name] = child
        failure = await self._start_children([child], restarted=False, after_exit=False)
        if failure is not None:
            del self.children[spec.name]
            raise ChildStartError(child.path, failure[1])
        return child

    async def terminate_child(self, child: Child) -> None:
        """Stop ``child`` and keep its spec (a temporary child's spec is removed)."""
        self._current(child)
        child.terminated = True
        await self.stop_children([child], StopCause.TERMINATE, "terminate_child")
        if child.spec.restart is Restart.TEMPORARY:
            self._remove(child, "temporary child terminated")

    async def restart_child(self, child: Child) -> Child:
        """Stop ``child`` if running (or drop its pending restart) and start it now."""
        self._current(child)
        await self.stop_children([child], StopCause.RESTART, "restart_child")
        self._forget_carried_backoff(child)  # a restart on purpose starts clean all the way down
        child.terminated = False
        child.consecutive = 0
        child.restarts += 1
        failure = await self._start_children([child], restarted=True, after_exit=False)
        if failure is not None:
            raise ChildStartError(child.path, failure[1])
        return child

    def delete_child(self, child: Child) -> None:
        """Remove the spec of the stopped ``child``: now if idle, else when its turn comes.

        While the supervisor is in the middle of something (a group restart, a stop), the
        deletion waits in its queue behind it, so it never races that work.
        """
        if self._idle and self._inline_op is None:
            self._inline = True
            try:
                self._delete(child)
            finally:
                self._inline = False
        else:
            self.post(_Delete(child))

    def _delete(self, child: Child) -> None:
        if self.children.get(child.spec.name) is not child:
            return  # removed meanwhile (a temporary child stopped by a group restart)
        if child.state is ChildState.STOPPED:
            self._remove(child, "delete_child")
