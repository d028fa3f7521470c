"""Model-based tests of the supervision core: the runtime against a reference model.

``SupervisorModel`` (hypothesis stateful testing) draws a tree (all three strategies, a
nested supervisor, every restart type, task_status and plain workers, one health-checked
worker, with or without backoff) and a random sequence of crashes, clean exits,
``terminate_child`` / ``restart_child`` / ``start_child`` / ``delete_child``, start
failures, health failures and clock advances. After every step it compares the live tree
with ``supervision_model.Model`` (the contract, api.md §2, §4, §5): each child's state and
restart count, the children in order, ``count_children``, which fakes are running, the
order in which workers ran their first step, the events of each child in order (kind,
restart count, time, error class), the errors of the handle's calls, and the end of the
tree when the root gives up.

The tree runs in a Trio loop in a helper thread with a ``MockClock`` that never moves by
itself: a step pokes the tree from the test thread (``trio.from_thread.run``) and waits
until every task is blocked, and a clock advance jumps exactly to each time the model
expects a timer (a backoff, a health probe), so every step is deterministic.

Depth: CI runs ``MODEL_EXAMPLES`` examples (derandomized: the same ones every run) of up
to ``MODEL_STEPS`` steps. For a deeper, randomized search set the environment variables::

    TRIO_SUPERVISE_MODEL_EXAMPLES=2000 TRIO_SUPERVISE_MODEL_STEPS=60 \
        python -m pytest -q tests/test_supervisor_model.py

``test_only_the_supervisor_task_writes_child_state`` checks the actor rule of the runtime:
no task other than the owning supervisor's writes a child's state.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import random
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import outcome
import pytest
import trio
import trio.lowlevel
import trio.testing
from hypothesis import HealthCheck as HypothesisHealthCheck
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from supervision_model import (
    BACKOFF_FACTOR,
    BACKOFF_INITIAL,
    BACKOFF_MAXIMUM,
    BACKOFF_RESET_AFTER,
    CRASHED,
    EXITED,
    HEALTH_CHANGED,
    HEALTH_INTERVAL,
    HEALTH_THRESHOLD,
    HEALTH_TIMEOUT,
    INTENSITY_EXCEEDED,
    REMOVED,
    RESTART_SCHEDULED,
    RESTARTED,
    START_FAILED,
    STARTED,
    TERMINATED,
    ExpectedEvent,
    Model,
    Shape,
    SupervisorShape,
    WorkerShape,
)

from trio_supervise import (
    Backoff,
    ChildCounts,
    ChildSpec,
    ChildState,
    Event,
    EventKind,
    HealthCheck,
    Restart,
    RestartIntensityExceeded,
    Strategy,
    SupervisorSpec,
    current_child,
    supervisor_tree,
)
from trio_supervise.testing import EventRecorder

T = TypeVar("T")

# ------------------------------------------------------------------------------ switches


MODEL_EXAMPLES = int(os.environ.get("TRIO_SUPERVISE_MODEL_EXAMPLES", "150"))
MODEL_STEPS = int(os.environ.get("TRIO_SUPERVISE_MODEL_STEPS", "30"))
# The default depth is CI's: the same examples every run. A deeper run searches anew.
_DERANDOMIZE = "TRIO_SUPERVISE_MODEL_EXAMPLES" not in os.environ

_KINDS = {
    STARTED: EventKind.STARTED,
    RESTARTED: EventKind.RESTARTED,
    EXITED: EventKind.EXITED,
    CRASHED: EventKind.CRASHED,
    START_FAILED: EventKind.START_FAILED,
    RESTART_SCHEDULED: EventKind.RESTART_SCHEDULED,
    TERMINATED: EventKind.TERMINATED,
    REMOVED: EventKind.REMOVED,
    INTENSITY_EXCEEDED: EventKind.INTENSITY_EXCEEDED,
    HEALTH_CHANGED: EventKind.HEALTH_CHANGED,
}
# The shutdown's own events (after the root gave up, or at the end) are not the model's.
_IGNORED_KINDS = frozenset(
    {
        EventKind.SHUTDOWN_STARTED,
        EventKind.HOOK_FINISHED,
        EventKind.SHUTDOWN_FINISHED,
        EventKind.RELOADED,
    }
)
# Only these events' errors are compared: the others may or may not carry the cause.
_ERROR_KINDS = frozenset({EventKind.CRASHED, EventKind.START_FAILED, EventKind.INTENSITY_EXCEEDED})
_TIME_TOLERANCE = 1e-9

# ----------------------------------------------------------------------------- the fakes


class FakeCrash(Exception):
    """What a fake worker raises when the test tells it to crash."""


class StartRefused(Exception):
    """What a task_status fake raises before ``started()`` when told to fail its start."""


@attrs.define(eq=False)
class FakeRun:
    """One run of a fake worker, waiting for the test's command."""

    go: trio.Event = attrs.field(factory=trio.Event)
    # "crash" or "return", set with go.
    command: str = ""


@attrs.define(eq=False)
class Fakes:
    """The registry of the fake workers of one tree, keyed by path.

    The fakes find their path with ``current_child()`` (the contract's way), so one pair
    of targets serves every worker, static or added by ``start_child``.
    """

    # How many next starts of a task_status worker fail.
    fail_starts: dict[str, int] = attrs.field(factory=dict)
    # What the health probe of a worker answers.
    healthy: dict[str, bool] = attrs.field(factory=dict)
    # The runs that are running now.
    live: dict[str, FakeRun] = attrs.field(factory=dict)
    # Paths in the order the runs (and failed start attempts) ran their first step.
    first_steps: list[str] = attrs.field(factory=list)
    # Things no fake should ever see (two runs of one child at once).
    violations: list[str] = attrs.field(factory=list)

    async def plain(self) -> None:
        path = current_child().path
        self.first_steps.append(path)
        await self._run(path)

    async def startable(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        path = current_child().path
        self.first_steps.append(path)
        if self.fail_starts.get(path, 0) > 0:
            self.fail_starts[path] -= 1
            raise StartRefused(f"{path} was told to fail its start")
        await self._run(path, task_status)

    async def _run(self, path: str, task_status: trio.TaskStatus[None] | None = None) -> None:
        if path in self.live:
            self.violations.append(f"two runs of {path!r} at once")
        run = self.live[path] = FakeRun()
        try:
            if task_status is not None:
                task_status.started()
            await run.go.wait()
            if run.command == "crash":
                raise FakeCrash(f"{path} was told to crash")
        finally:
            if self.live.get(path) is run:
                del self.live[path]

    def probe_for(self, path: str) -> Callable[[], Awaitable[bool]]:
        async def probe() -> bool:
            return self.healthy.get(path, True)

        return probe


def build_spec(shape: SupervisorShape, fakes: Fakes, parent: str = "") -> SupervisorSpec:
    children: list[ChildSpec | SupervisorSpec] = []
    for child in shape.children:
        path = f"{parent}/{child.name}" if parent else child.name
        if isinstance(child, SupervisorShape):
            children.append(build_spec(child, fakes, path))
        else:
            children.append(worker_spec(child, fakes, path))
    return SupervisorSpec(
        shape.name,
        children,
        strategy=shape.strategy,
        max_restarts=shape.max_restarts,
        max_seconds=shape.max_seconds,
        backoff=(
            Backoff(
                initial=BACKOFF_INITIAL,
                maximum=BACKOFF_MAXIMUM,
                factor=BACKOFF_FACTOR,
                jitter=0.0,
                reset_after=BACKOFF_RESET_AFTER,
            )
            if shape.backoff
            else None
        ),
        restart=shape.restart,
    )


def worker_spec(shape: WorkerShape, fakes: Fakes, path: str) -> ChildSpec:
    health = (
        HealthCheck(
            fakes.probe_for(path),
            interval=HEALTH_INTERVAL,
            timeout=HEALTH_TIMEOUT,
            threshold=HEALTH_THRESHOLD,
        )
        if shape.health
        else None
    )
    target = fakes.startable if shape.task_status else fakes.plain
    return ChildSpec(shape.name, target, restart=shape.restart, shutdown_timeout=1.0, health=health)


# ---------------------------------------------------------------------------- the driver


@attrs.frozen
class Observation:
    """What the live tree shows after a step."""

    # Per running supervisor: its children as (name, kind, state, restarts), in order, or
    # the repr of what tree.children() raised.
    children: dict[str, list[tuple[str, str, ChildState, int]] | str]
    counts: dict[str, tuple[int, int, int, int] | str]
    live: frozenset[str]
    first_steps: list[str]
    events: list[Event]
    finished: bool


class TreeDriver:
    """Runs one tree in a Trio loop of its own thread, driven step by step.

    The clock is a ``MockClock`` without autojump: time moves only by ``jump_to``. Every
    ``call`` runs its function in the Trio thread and returns once all tasks are blocked.
    """

    def __init__(self, spec: SupervisorSpec, fakes: Fakes) -> None:
        self._spec = spec
        self.fakes = fakes
        self.clock = trio.testing.MockClock()
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self.tree: Any = None
        self._recorder: EventRecorder | None = None
        self._initial: list[Event] = []
        self._seen = 0
        self._first_seen = 0
        # What supervisor_tree raised: RestartIntensityExceeded after the root gave up.
        self.tree_error: BaseException | None = None
        # Anything else the Trio thread raised: a bug.
        self.crash: BaseException | None = None
        self._thread = threading.Thread(target=self._thread_main, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):  # pragma: no cover
            raise AssertionError("the tree did not start within 30 s of real time")
        if self.crash is not None:
            raise AssertionError("the tree failed to start") from self.crash
        self.call(trio.lowlevel.checkpoint)

    @property
    def finished(self) -> bool:
        return not self._thread.is_alive()

    def _thread_main(self) -> None:
        try:
            trio.run(self._main, clock=self.clock)
        except BaseException as exc:
            self.crash = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        try:
            async with supervisor_tree(self._spec, rng=random.Random(0)) as tree:
                self.tree = tree
                self._initial = tree.history
                self._recorder = EventRecorder(tree)
                self._ready.set()
                await self._stop.wait()
        except RestartIntensityExceeded as exc:
            self.tree_error = exc

    def call(self, fn: Callable[[], Awaitable[T]]) -> outcome.Outcome[T] | None:
        """Run ``fn`` in the Trio thread; its outcome, or None if it did not return.

        Waits until every task is blocked (the tree has settled) before returning.
        """
        if self.finished:
            raise AssertionError("the tree has ended; the model expected it to run")

        async def step() -> outcome.Outcome[T] | None:
            box: list[outcome.Outcome[T]] = []

            async def runner() -> None:
                box.append(await outcome.acapture(fn))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(runner)
                await trio.testing.wait_all_tasks_blocked()
                if not box:
                    nursery.cancel_scope.cancel(reason="the call did not return")
            return box[0] if box else None

        try:
            return trio.from_thread.run(step, trio_token=self._token)
        except BaseException:
            # When the root gives up during the step the tree ends and the loop with it:
            # the step is cancelled (or the loop is gone). Anything else is a bug.
            self._thread.join(30)
            if not self.finished:
                raise
            return None

    def jump_to(self, when: float) -> None:
        """Move the clock to exactly ``when`` and let the tree settle."""

        async def jump() -> None:
            now = trio.current_time()
            # a + (b - a) == b exactly once a >= b / 2 (Sterbenz): jump in two strides.
            if now < when / 2:
                self.clock.jump(when * 0.75 - now)
            self.clock.jump(when - trio.current_time())
            assert trio.current_time() == when, (trio.current_time(), when)

        self.call(jump)

    def observe(self, supervisors: list[str]) -> Observation:
        def take() -> Observation:
            children: dict[str, list[tuple[str, str, ChildState, int]] | str] = {}
            counts: dict[str, tuple[int, int, int, int] | str] = {}
            if not self.finished:
                for path in supervisors:
                    try:
                        children[path] = [
                            (i.name, i.kind, i.state, i.restarts) for i in self.tree.children(path)
                        ]
                        c = self.tree.count_children(path)
                        counts[path] = (c.specs, c.active, c.workers, c.supervisors)
                    except Exception as exc:
                        children[path] = counts[path] = repr(exc)
            assert self._recorder is not None
            events = [*self._initial, *self._recorder.events]
            new_events = events[self._seen :]
            self._seen = len(events)
            first_steps = self.fakes.first_steps[self._first_seen :]
            self._first_seen = len(self.fakes.first_steps)
            return Observation(
                children,
                counts,
                frozenset(self.fakes.live),
                first_steps,
                new_events,
                self.finished,
            )

        if self.finished:
            return take()

        async def take_async() -> Observation:
            return take()

        result = self.call(take_async)
        return result.unwrap() if result is not None else take()

    def close(self) -> None:
        """End the tree (its shutdown runs) and wait for the thread."""
        if not self.finished:
            stop = self._stop
            assert stop is not None
            with contextlib.suppress(trio.RunFinishedError):  # it ended meanwhile
                trio.from_thread.run_sync(stop.set, trio_token=self._token)
        self._thread.join(30)
        if self._thread.is_alive():  # pragma: no cover
            raise AssertionError("the tree did not end within 30 s of real time")


# ------------------------------------------------------------------------- comparing


def _describe(event: Event) -> tuple[str, int | None, float, str | None]:
    error = type(event.error).__name__ if event.kind in _ERROR_KINDS and event.error else None
    return (event.kind.name, event.restarts, event.time, error)


def _expected(event: ExpectedEvent) -> tuple[str, int | None, float, str | None]:
    kind = _KINDS[event.kind]
    error = event.error if kind in _ERROR_KINDS else None
    return (kind.name, event.restarts, event.time, error)


def _same_event(
    real: tuple[str, int | None, float, str | None],
    expected: tuple[str, int | None, float, str | None],
) -> bool:
    return (
        real[0] == expected[0]
        and (expected[1] is None or real[1] == expected[1])
        and math.isclose(real[2], expected[2], rel_tol=0, abs_tol=_TIME_TOLERANCE)
        and real[3] == expected[3]
    )


def compare(model: Model, seen: Observation) -> list[str]:
    """The differences between the model and what the tree shows (empty: they agree)."""
    problems: list[str] = []
    if seen.finished != model.finished:
        problems.append(f"tree ended: {seen.finished}, model: {model.finished}")
    for sup in model.supervisors():
        want = [(c.name, c.kind, c.state, c.restarts) for c in sup.children]
        got = seen.children.get(sup.path)
        if got != want:
            problems.append(
                f"children of {sup.path or '(root)'!r}:\n  tree:  {got}\n  model: {want}"
            )
        # Active (decided for the rewrite): RUNNING, STOPPING, or STARTING in a first start.
        # After a step nothing is starting or stopping, so it is the running ones.
        workers = sum(c.kind == "worker" for c in sup.children)
        active = sum(c.state is ChildState.RUNNING for c in sup.children)
        want_counts = (len(sup.children), active, workers, len(sup.children) - workers)
        if seen.counts.get(sup.path) != want_counts:
            problems.append(
                f"count_children({sup.path!r}): tree {seen.counts.get(sup.path)},"
                f" model (specs, active, workers, supervisors) {want_counts}"
            )
    live = frozenset(c.path for c in model.children() if c.live and c.kind == "worker")
    if seen.live != live:
        problems.append(f"running fakes: tree {sorted(seen.live)}, model {sorted(live)}")
    for sup_path, attempts in model.attempts.items():
        got_steps = [p for p in seen.first_steps if p.rpartition("/")[0] == sup_path]
        if got_steps != attempts:
            problems.append(
                f"first steps under {sup_path or '(root)'!r}: tree {got_steps}, model {attempts}"
            )
    real: dict[str, list[tuple[str, int | None, float, str | None]]] = {}
    for event in seen.events:
        if event.kind not in _IGNORED_KINDS:
            real.setdefault(event.path, []).append(_describe(event))
    expected: dict[str, list[tuple[str, int | None, float, str | None]]] = {}
    for expected_event in model.events:
        expected.setdefault(expected_event.path, []).append(_expected(expected_event))
    for path in sorted(set(real) | set(expected)):
        got_events, want_events = real.get(path, []), expected.get(path, [])
        if len(got_events) != len(want_events) or not all(
            map(_same_event, got_events, want_events)
        ):
            problems.append(
                f"events of {path or '(root)'!r} (kind, restarts, time, error):\n"
                f"  tree:  {got_events}\n  model: {want_events}"
            )
    return problems


# ----------------------------------------------------------------------- tree shapes

_RESTARTS = st.sampled_from([Restart.PERMANENT, Restart.TRANSIENT, Restart.TEMPORARY])
_STRATEGIES = st.sampled_from(list(Strategy))
_MAX_RESTARTS = st.sampled_from([0, 1, 2, 3, 5])
_MAX_SECONDS = st.sampled_from([1.0, 2.0, 5.0])


def _workers(names: str) -> st.SearchStrategy[list[WorkerShape]]:
    """1 to ``len(names)`` workers named by ``names``, in order."""
    kinds = st.lists(st.tuples(_RESTARTS, st.booleans()), min_size=1, max_size=len(names))
    return kinds.map(
        lambda drawn: [WorkerShape(names[i], r, ts) for i, (r, ts) in enumerate(drawn)]
    )


@st.composite
def tree_shapes(draw: st.DrawFn) -> SupervisorShape:
    """A root with 1-3 workers, maybe a nested supervisor, and maybe one health check."""
    nested: list[Shape] = []
    if draw(st.booleans()):
        nested.append(
            SupervisorShape(
                "s",
                draw(_STRATEGIES),
                draw(_MAX_RESTARTS),
                draw(_MAX_SECONDS),
                draw(st.booleans()),
                tuple(draw(_workers("xyz"))),
                restart=draw(_RESTARTS),
            )
        )
    workers: list[Shape] = list(draw(_workers("abc")))
    children = workers + nested
    order = draw(st.permutations(range(len(children))))
    children = [children[i] for i in order]
    health = draw(st.sampled_from([None, *[c.name for c in children if c.name != "s"]]))
    children = [
        WorkerShape(c.name, c.restart, c.task_status, True)
        if isinstance(c, WorkerShape) and c.name == health
        else c
        for c in children
    ]
    return SupervisorShape(
        "root",
        draw(_STRATEGIES),
        # Not 0: a root that gives up at the first restart ends most examples at once.
        draw(_MAX_RESTARTS.filter(bool)),
        draw(_MAX_SECONDS),
        draw(st.booleans()),
        tuple(children),
    )


def _error_name(result: outcome.Outcome[Any] | None) -> str | None:
    """The class name of what a call raised, as the model names it; None if it returned."""
    if result is None:
        return "did not return"
    if not isinstance(result, outcome.Error):
        return None
    error = result.error
    if isinstance(error, LookupError):
        return "LookupError"
    return type(error).__name__


# ------------------------------------------------------------------- the state machine


class SupervisorModel(RuleBasedStateMachine):
    """Random operations on a live tree, each checked against ``Model``."""

    def __init__(self) -> None:
        super().__init__()
        self.model: Model | None = None
        self.driver: TreeDriver | None = None

    @property
    def m(self) -> Model:
        assert self.model is not None
        return self.model

    @property
    def d(self) -> TreeDriver:
        assert self.driver is not None
        return self.driver

    @initialize(shape=tree_shapes())
    def start_tree(self, shape: SupervisorShape) -> None:
        self.model = Model(shape)
        fakes = Fakes()
        self.driver = TreeDriver(build_spec(shape, fakes), fakes)

    def teardown(self) -> None:
        if self.driver is None:
            return
        self.driver.close()
        if self.driver.crash is not None:
            raise AssertionError("the tree raised at its end") from self.driver.crash
        if self.model is not None and self.model.finished:
            error = self.driver.tree_error
            assert isinstance(error, RestartIntensityExceeded), error
            assert error.path == ""
        else:
            assert self.driver.tree_error is None, self.driver.tree_error
        assert self.driver.fakes.violations == []
        assert self.driver.fakes.live == {}

    # --------------------------------------------------------------------- checking

    def check(self, candidates: list[Model] | None = None) -> None:
        """Compare the tree with the model (or the first of ``candidates`` that agrees)."""
        models = candidates if candidates is not None else [self.m]
        seen = self.d.observe([sup.path for sup in models[0].supervisors()])
        first: list[str] | None = None
        for model in models:
            problems = compare(model, seen)
            if not problems:
                self.model = model
                break
            first = first if first is not None else problems
        else:
            assert first is not None
            note = (
                f" (and {len(models) - 1} other orders of the timers due at {self.m.now})"
                if len(models) > 1
                else ""
            )
            raise AssertionError(
                f"the tree disagrees with the model at t={self.m.now}{note}:\n" + "\n".join(first)
            )
        self.m.events.clear()
        self.m.attempts.clear()

    @invariant()
    def agrees_with_model(self) -> None:
        if self.driver is not None:
            self.check()

    # ------------------------------------------------------------------------ rules

    def _running_workers(self) -> list[str]:
        return sorted(c.path for c in self.m.children() if c.live and c.kind == "worker")

    def _paths(self) -> list[str]:
        return sorted(c.path for c in self.m.children())

    def _not_finished(self) -> bool:
        return self.model is not None and not self.m.finished

    def _command(self, path: str, command: str) -> None:
        run = self.d.fakes.live[path]

        async def tell() -> None:
            run.command = command
            run.go.set()

        self.d.call(tell)

    @precondition(lambda self: self._not_finished() and self._running_workers())
    @rule(data=st.data(), abnormal=st.booleans())
    def worker_exits(self, data: st.DataObject, abnormal: bool) -> None:
        """A running worker crashes (raises) or returns."""
        path = data.draw(st.sampled_from(self._running_workers()), label="worker")
        self._command(path, "crash" if abnormal else "return")
        self.m.child_exits(path, abnormal)

    @precondition(lambda self: self._not_finished())
    @rule(dt=st.sampled_from([0.25, 0.5, 1.0, 2.0, 3.5]))
    def advance(self, dt: float) -> None:
        """Virtual time passes: each timer the model knows fires at its exact time."""
        target = self.m.now + dt
        while not self.m.finished:
            when = self.m.next_timer()
            if when is None or when > target:
                break
            self.d.jump_to(when)
            self.m.now = when
            due = self.m.due_count()
            orders = list(itertools.islice(itertools.permutations(range(due)), 24))
            candidates = []
            for order in orders:
                candidate = self.m.copy() if len(orders) > 1 else self.m
                candidate.fire_timers(list(order))
                candidates.append(candidate)
            self.check(candidates)
        if not self.m.finished:
            self.d.jump_to(target)
            self.m.now = target

    @precondition(lambda self: self.model is not None and self.m.finished)
    @rule()
    def tree_has_ended(self) -> None:
        """After the root gave up: supervisor_tree raised it, and nothing runs any more."""
        assert self.d.finished
        error = self.d.tree_error
        assert isinstance(error, RestartIntensityExceeded), error
        assert (error.path, error.max_restarts) == ("", self.m.root.shape.max_restarts)
        assert self.d.fakes.live == {}

    def _call(self, fn: Callable[[], Awaitable[object]], expected_error: str | None) -> None:
        result = self.d.call(fn)
        got = _error_name(result)
        if self.m.finished and result is None:
            return
        assert got == expected_error, (
            f"the call raised {got!r}; the model expected {expected_error!r}"
            + (f": {result.error!r}" if isinstance(result, outcome.Error) else "")
        )

    @precondition(lambda self: self._not_finished())
    @rule(data=st.data())
    def terminate_child(self, data: st.DataObject) -> None:
        path = data.draw(st.sampled_from([*self._paths(), "ghost"]), label="path")
        expected = self.m.terminate_child(path)
        self._call(lambda: self.d.tree.terminate_child(path), expected)

    @precondition(lambda self: self._not_finished())
    @rule(data=st.data())
    def restart_child(self, data: st.DataObject) -> None:
        path = data.draw(st.sampled_from([*self._paths(), "ghost"]), label="path")
        expected = self.m.restart_child(path)
        self._call(lambda: self.d.tree.restart_child(path), expected)

    @precondition(lambda self: self._not_finished())
    @rule(data=st.data())
    def delete_child(self, data: st.DataObject) -> None:
        path = data.draw(st.sampled_from([*self._paths(), "ghost"]), label="path")
        expected = self.m.delete_child(path)

        async def delete() -> None:
            self.d.tree.delete_child(path)

        self._call(delete, expected)

    @precondition(lambda self: self._not_finished())
    @rule(
        data=st.data(),
        name=st.sampled_from(["a", "d", "e"]),
        restart=_RESTARTS,
        task_status=st.booleans(),
    )
    def start_child(
        self, data: st.DataObject, name: str, restart: Restart, task_status: bool
    ) -> None:
        under = data.draw(st.sampled_from([s.path for s in self.m.supervisors()]), label="under")
        shape = WorkerShape(name, restart, task_status)
        path = f"{under}/{name}" if under else name
        spec = worker_spec(shape, self.d.fakes, path)
        expected = self.m.start_child(under, shape)
        self._call(lambda: self.d.tree.start_child(spec, under=under), expected)

    @precondition(lambda self: self._not_finished() and self._startable())
    @rule(data=st.data(), count=st.integers(1, 3))
    def fail_next_starts(self, data: st.DataObject, count: int) -> None:
        """The next ``count`` starts of a task_status worker raise before ``started()``."""
        path = data.draw(st.sampled_from(self._startable()), label="worker")
        self.m.fail_starts[path] = count
        self.d.fakes.fail_starts[path] = count

    def _startable(self) -> list[str]:
        return sorted(
            c.path
            for c in self.m.children()
            if isinstance(c.shape, WorkerShape) and c.shape.task_status
        )

    @precondition(lambda self: self._not_finished() and self._health_checked())
    @rule(data=st.data(), healthy=st.booleans())
    def set_health(self, data: st.DataObject, healthy: bool) -> None:
        """What the health probe of the health-checked worker answers from now on."""
        path = data.draw(st.sampled_from(self._health_checked()), label="worker")
        self.m.healthy[path] = healthy
        self.d.fakes.healthy[path] = healthy

    def _health_checked(self) -> list[str]:
        return sorted(
            c.path for c in self.m.children() if isinstance(c.shape, WorkerShape) and c.shape.health
        )


SupervisorModel.TestCase.settings = settings(
    max_examples=MODEL_EXAMPLES,
    stateful_step_count=MODEL_STEPS,
    deadline=None,
    database=None,
    derandomize=_DERANDOMIZE,
    suppress_health_check=[HypothesisHealthCheck.too_slow],
)
TestSupervisorModel = SupervisorModel.TestCase


# ------------------------------------------------------- the actor rule of the runtime


@attrs.define(eq=False)
class StateWrites:
    """Records every write to a child's state made outside its owning supervisor's task."""

    # Every supervisor made so far, with the task that runs it once it runs.
    supervisors: list[Any] = attrs.field(factory=list)
    tasks: dict[int, trio.lowlevel.Task] = attrs.field(factory=dict)
    violations: list[str] = attrs.field(factory=list)
    writes: int = 0

    # The owner of each child once seen in a supervisor: writes after its removal count too.
    owners: dict[int, Any] = attrs.field(factory=dict)

    def owner_of(self, child: object) -> Any:
        for supervisor in self.supervisors:
            if any(c is child for c in supervisor.children.values()):
                self.owners[id(child)] = supervisor
                return supervisor
        return self.owners.get(id(child))

    def check(self, child: object, name: str) -> None:
        supervisor = self.owner_of(child)
        if supervisor is None:
            return  # being made, or already removed: no supervisor owns it
        self.writes += 1
        task = trio.lowlevel.current_task()
        # The one exception the rewrite allows: the supervisor's own handler, run inline
        # from another task while the supervisor is idle (it sets ``_inline`` meanwhile).
        if task is self.tasks.get(id(supervisor)) or getattr(supervisor, "_inline", False):
            return
        self.violations.append(
            f"{getattr(child, 'path', '?')}.{name} written by task {task.name!r}, not by its"
            f" supervisor {supervisor.path or '(root)'!r}"
        )


async def test_only_the_supervisor_task_writes_child_state(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trio_supervise import _supervisor

    writes = StateWrites()
    child_class: Any = _supervisor.Child
    supervisor_class: Any = _supervisor.Supervisor
    plain_setattr = child_class.__setattr__
    plain_init = supervisor_class.__init__
    plain_run = supervisor_class.run

    def checked_setattr(child: object, name: str, value: object) -> None:
        writes.check(child, name)
        plain_setattr(child, name, value)

    def recorded_init(supervisor: Any, *args: Any, **kwargs: Any) -> None:
        plain_init(supervisor, *args, **kwargs)
        writes.supervisors.append(supervisor)

    async def recorded_run(supervisor: Any, *args: Any, **kwargs: Any) -> None:
        writes.tasks[id(supervisor)] = trio.lowlevel.current_task()
        await plain_run(supervisor, *args, **kwargs)

    monkeypatch.setattr(child_class, "__setattr__", checked_setattr)
    monkeypatch.setattr(supervisor_class, "__init__", recorded_init)
    monkeypatch.setattr(supervisor_class, "run", recorded_run)

    fakes = Fakes()
    fakes.healthy["a"] = False
    shape = SupervisorShape(
        "root",
        Strategy.ONE_FOR_ALL,
        max_restarts=50,
        max_seconds=5.0,
        backoff=True,
        children=(
            WorkerShape("a", Restart.PERMANENT, task_status=True, health=True),
            WorkerShape("b", Restart.PERMANENT, task_status=False),
            SupervisorShape(
                "s",
                Strategy.ONE_FOR_ONE,
                max_restarts=50,
                max_seconds=5.0,
                backoff=False,
                children=(WorkerShape("x", Restart.TRANSIENT, task_status=True),),
            ),
        ),
    )
    async with supervisor_tree(build_spec(shape, fakes), rng=random.Random(0)) as tree:
        # Two failed probes of "a": a one-for-all restart after a backoff.
        await trio.sleep(HEALTH_THRESHOLD * HEALTH_INTERVAL + 0.1)
        fakes.healthy["a"] = True
        await trio.sleep(BACKOFF_INITIAL)
        assert tree.info("a").restarts == 1
        fakes.live["s/x"].command = "crash"
        fakes.live["s/x"].go.set()
        await trio.sleep(1)
        await tree.start_child(worker_spec(WorkerShape("d", Restart.TEMPORARY, True), fakes, "d"))
        await tree.start_child(
            worker_spec(WorkerShape("y", Restart.PERMANENT, False), fakes, "s/y"), under="s"
        )
        await tree.terminate_child("b")
        tree.delete_child("b")
        await tree.restart_child("s/x")
        await tree.terminate_child("d")
        await tree.restart_child("a")
        assert [i.name for i in tree.children()] == ["a", "s"]
        assert tree.count_children() == ChildCounts(2, 2, 1, 1)
        assert [(i.name, i.state) for i in tree.children("s")] == [
            ("x", ChildState.RUNNING),
            ("y", ChildState.RUNNING),
        ]
        assert tree.info("a").restarts == 2
        assert "s" in tree.render()
        assert tree.health().children["a"].state is ChildState.RUNNING
    assert fakes.violations == []
    assert writes.writes > 0
    assert writes.violations == [], "\n".join(sorted(set(writes.violations)))
