"""(h) the core targets of issue 9, measured as the issue states them: ``core_*``.

Every case runs against bare Trio in the same process, through the public API only, at
``config.children`` (1,000) and ``config.scale_children`` (100,000) children. Each
repetition is its own ``trio.run`` with the real clock, the variants interleaved and
garbage collected before each; every value printed is the median over the repetitions.

* start: from entering ``supervisor_tree`` until every child has run its first line.
  Each child counts itself and the one that runs last records ``perf_counter()`` and sets
  an Event (``FirstLines``), so both sides are timed by the same code. Baseline:
  ``nursery.start_soon`` of the same function N times, from entering ``open_nursery``.
  Target <= 2.5x. The ``concurrent_stop=True`` tree's start is printed for information.
* stop: from the end of the body until the ``async with`` has exited. Baseline: cancelling
  the nursery (``nursery.cancel_scope.cancel()`` at the end of its body). Before the stop
  is timed, every side waits until all tasks are blocked and collects garbage (not timed),
  so that nothing left over from earlier is charged to the stop. Targets: <= 2x for the
  default one-at-a-time stop; <= 1.3x with ``SupervisorSpec(..., concurrent_stop=True)``.
* start_child / terminate_child: in the repetitions of the default tree, between its start
  and its stop, so while the root holds N plain sleeping children, all asleep. A round
  times ``config.calls`` (K = 200) calls ``await tree.start_child(ChildSpec(name,
  sleeper))`` in a row (the ``ChildSpec`` built inside the timed loop, as a caller writes
  it), waits untimed until every task is blocked, times K calls ``await
  tree.terminate_child(name)`` in start order, then ``delete_child``s them untimed, so that
  every round starts from the same N children. Rounds go on until each kind of call has
  been timed for ``config.call_seconds`` (0.05 s), at most ``MAX_CALL_ROUNDS``; the value
  is the total time over the number of calls. Targets: <= 25 us per call, and per call at
  100,000 children over per call at 1,000 <= 1.2x (bare Trio's own growth is
  printed beside it). Baseline, for information, in the bare
  repetitions: ``await nursery.start(...)`` of a task in its own cancel scope that calls
  ``task_status.started()``, its handle kept in a dict by name; then per name: cancel its
  scope and await an Event set in its ``finally``. ``ChildSpec`` construction alone
  (``*_childspec_build_*``) is printed for information, and so is the floor of a call that
  returns once the child ran its first step: ``start_soon`` and await an Event set by that
  step (``*_floor_start_soon_first_step_*``).
* scaling: per-child start time at 100,000 over that at 1,000, divided by bare Trio's same
  growth: target <= 1.2. The same for stop, for information.
* memory: ``tracemalloc`` growth per child from just before ``supervisor_tree`` to its body
  with every child asleep, against ``nursery.start_soon`` of bare tasks running the same
  function (no cancel scope of their own: "a bare task"); at ``config.children``; target
  <= 2x. (``bench_memory`` measures the same against tasks in their own cancel scopes.)

The specs are built once per size, outside the timings, as in ``bench_start_stop``; a live
spec of 100,000 children made no difference to the bare timings beyond the noise.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from time import perf_counter

import trio

from benchmarks._common import Config, Reporter, all_blocked, fresh_heap, median, ratio
from benchmarks.bench_start_stop import sleeper, sleeping_tree
from trio_supervise import ChildSpec, SupervisorSpec, SupervisorTree, supervisor_tree

#: The targets of the issue.
START_TARGET = 2.5
STOP_TARGET = 2.0
CONCURRENT_STOP_TARGET = 1.3
CALL_TARGET_US = 25.0
SCALING_TARGET = 1.2
MEMORY_TARGET = 2.0
#: Most rounds of ``config.calls`` start_child + terminate_child calls per repetition.
MAX_CALL_ROUNDS = 10

US = 1e6


class FirstLines:
    """The target of every child of the start/stop case: counts the children that ran.

    The child that runs ``n``-th records ``perf_counter()`` and sets ``all_ran``; then every
    child sleeps until it is cancelled.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.reset()

    def reset(self) -> None:
        """Before each repetition: nobody has run yet."""
        self.count = 0
        self.last_at = 0.0
        self.all_ran = trio.Event()

    async def child(self) -> None:
        self.count += 1
        if self.count == self.n:
            self.last_at = perf_counter()
            self.all_ran.set()
        await trio.sleep_forever()


def counting_tree(lines: FirstLines, *, concurrent_stop: bool) -> SupervisorSpec:
    """A root supervisor with ``lines.n`` children running ``lines.child`` (defaults)."""
    children = [ChildSpec(f"c{i}", lines.child) for i in range(lines.n)]
    return SupervisorSpec("bench", children, concurrent_stop=concurrent_stop)


# ------------------------------------------------------------------------- repetitions
# One repetition of each variant: start, then (default variant and bare only) the calls,
# then stop. Each returns a ``Run``.


@dataclass(frozen=True)
class Run:
    """Seconds measured in one repetition (the call times are per call, 0 when not run)."""

    start: float
    stop: float
    start_child: float = 0.0
    terminate_child: float = 0.0
    # Bare repetitions only: start_soon and wait for the first step (the floor of a call).
    start_soon_first_step: float = 0.0


async def _supervised_calls(
    tree: SupervisorTree, k: int, min_seconds: float
) -> tuple[float, float]:
    """Seconds per ``start_child`` and per ``terminate_child`` call, in rounds of ``k``.

    Each round: ``k`` starts (timed), a wait until every task is blocked (not timed), ``k``
    terminations in start order (timed), ``k`` ``delete_child`` (not timed), so every
    round starts from the same N children. Rounds go on until both phases have been timed
    for ``min_seconds`` in total, at most ``MAX_CALL_ROUNDS``.
    """
    starts = terminations = 0.0
    rounds = 0
    while rounds == 0 or (rounds < MAX_CALL_ROUNDS and min(starts, terminations) < min_seconds):
        names = [f"dyn{rounds}-{i}" for i in range(k)]
        t0 = perf_counter()
        for name in names:
            await tree.start_child(ChildSpec(name, sleeper))
        t1 = perf_counter()
        await all_blocked()
        t2 = perf_counter()
        for name in names:
            await tree.terminate_child(name)
        t3 = perf_counter()
        for name in names:
            tree.delete_child(name)
        starts, terminations, rounds = starts + t1 - t0, terminations + t3 - t2, rounds + 1
    return starts / (rounds * k), terminations / (rounds * k)


async def _supervised(
    spec: SupervisorSpec, lines: FirstLines, calls: int, min_seconds: float
) -> Run:
    lines.reset()
    n = lines.n
    t0 = perf_counter()
    async with supervisor_tree(spec) as tree:
        await lines.all_ran.wait()  # already set: the body runs after the last first line
        await all_blocked()  # not timed: the start-up settles
        active = tree.count_children().active
        if active != n or lines.count != n:
            raise RuntimeError(f"expected {n} running children, found {active} ({lines.count})")
        per_start = per_terminate = 0.0
        if calls:
            gc.collect()  # not timed: the start-up's garbage is not charged to the calls
            per_start, per_terminate = await _supervised_calls(tree, calls, min_seconds)
            counts = tree.count_children()
            if counts.specs != n or counts.active != n:
                raise RuntimeError(f"expected {n} specs and active children: {counts}")
            await all_blocked()
        gc.collect()  # not timed, on every side: earlier garbage is not charged to the stop
        t2 = perf_counter()
    t3 = perf_counter()
    return Run(lines.last_at - t0, t3 - t2, per_start, per_terminate)


async def _started_sleeper(
    scope: trio.CancelScope,
    done: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    try:
        with scope:
            task_status.started()
            await trio.sleep_forever()
    finally:
        done.set()


async def _first_step(scope: trio.CancelScope, first_step: trio.Event, done: trio.Event) -> None:
    try:
        with scope:
            first_step.set()
            await trio.sleep_forever()
    finally:
        done.set()


async def _bare_calls(
    nursery: trio.Nursery, k: int, min_seconds: float
) -> tuple[float, float, float]:
    """``_supervised_calls`` by hand: ``nursery.start``, then cancel and await the exit.

    Then, untimed between, the floor of a call that returns once the child ran its first
    step: ``start_soon`` and wait for an Event set by that step (two scheduler passes).
    """
    starts = terminations = soon = 0.0
    rounds = 0
    while rounds == 0 or (rounds < MAX_CALL_ROUNDS and min(starts, terminations) < min_seconds):
        names = [f"dyn{rounds}-{i}" for i in range(k)]
        handles: dict[str, tuple[trio.CancelScope, trio.Event]] = {}
        t0 = perf_counter()
        for name in names:
            scope, done = trio.CancelScope(), trio.Event()
            await nursery.start(_started_sleeper, scope, done)
            handles[name] = (scope, done)
        t1 = perf_counter()
        await all_blocked()
        t2 = perf_counter()
        for name in names:
            scope, done = handles[name]
            scope.cancel()
            await done.wait()
        t3 = perf_counter()
        for name in names:
            del handles[name]
        await all_blocked()
        t4 = perf_counter()
        for name in names:
            scope, first_step, done = trio.CancelScope(), trio.Event(), trio.Event()
            nursery.start_soon(_first_step, scope, first_step, done)
            await first_step.wait()
            handles[name] = (scope, done)
        t5 = perf_counter()
        for name in names:
            scope, done = handles.pop(name)
            scope.cancel()
            await done.wait()
        soon += t5 - t4
        starts, terminations, rounds = starts + t1 - t0, terminations + t3 - t2, rounds + 1
    return starts / (rounds * k), terminations / (rounds * k), soon / (rounds * k)


async def _bare(lines: FirstLines, calls: int, min_seconds: float) -> Run:
    lines.reset()
    n = lines.n
    t0 = perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(lines.child)
        await lines.all_ran.wait()
        await all_blocked()
        if len(nursery.child_tasks) != n or lines.count != n:
            raise RuntimeError(f"expected {n} tasks, found {len(nursery.child_tasks)}")
        per_start = per_terminate = per_soon = 0.0
        if calls:
            gc.collect()
            per_start, per_terminate, per_soon = await _bare_calls(nursery, calls, min_seconds)
            if len(nursery.child_tasks) != n:
                raise RuntimeError(f"expected {n} tasks, found {len(nursery.child_tasks)}")
            await all_blocked()
        gc.collect()
        t2 = perf_counter()
        nursery.cancel_scope.cancel()
    t3 = perf_counter()
    return Run(lines.last_at - t0, t3 - t2, per_start, per_terminate, per_soon)


async def _scoped_child(
    lines: FirstLines, scopes: list[trio.CancelScope], index: int, hand_on: bool
) -> None:
    try:
        with scopes[index]:
            await lines.child()
    finally:
        if hand_on and index > 0:  # the exiting task stops the one started before it
            scopes[index - 1].cancel(reason=f"stopped c{index - 1}: shutdown")


async def _floor(lines: FirstLines, *, ordered: bool) -> Run:
    """The physical floor of a tree: bare tasks, each in its own cancel scope.

    Start: ``start_soon`` each (unordered). Stop, ``ordered``: cancel the last; each task
    on its way out cancels the one before it (one task switch per child, as the tree's
    hand-on). Else: cancel every scope, each with its own reason, as a pool does.
    """
    lines.reset()
    n = lines.n
    scopes = [trio.CancelScope() for _ in range(n)]
    t0 = perf_counter()
    async with trio.open_nursery() as nursery:
        for index in range(n):
            nursery.start_soon(_scoped_child, lines, scopes, index, ordered)
        await lines.all_ran.wait()
        await all_blocked()
        gc.collect()
        t2 = perf_counter()
        if ordered:
            scopes[-1].cancel(reason=f"stopped c{n - 1}: shutdown")
        else:
            for index, scope in enumerate(scopes):
                scope.cancel(reason=f"stopped c{index}: shutdown")
    t3 = perf_counter()
    return Run(lines.last_at - t0, t3 - t2)


def _spec_build(k: int) -> float:
    """Seconds per ``ChildSpec(name, sleeper)``, as built in the timed loop of the calls."""
    names = [f"dyn-{i}" for i in range(k)]
    t0 = perf_counter()
    for name in names:
        ChildSpec(name, sleeper)
    return (perf_counter() - t0) / k


# ----------------------------------------------------------------------- measure, report


@dataclass(frozen=True)
class Core:
    """Medians at one size: seconds per child (start, stop) and per call."""

    start_supervise: float
    start_concurrent: float
    start_bare: float
    stop_supervise: float
    stop_concurrent: float
    stop_bare: float
    start_child_supervise: float
    start_child_bare: float
    start_child_floor_soon: float
    terminate_child_supervise: float
    terminate_child_bare: float
    childspec_build: float
    start_floor: float
    stop_floor_ordered: float
    stop_floor_at_once: float


def measure(n: int, reps: int, config: Config, *, warmup: bool) -> Core:
    """Run the three variants ``reps`` times, interleaved; return the medians."""
    # Built once, outside the timings, as in bench_start_stop: specs are immutable, and the
    # counter they call is reset by each repetition.
    lines = FirstLines(n)
    default = counting_tree(lines, concurrent_stop=False)
    concurrent = counting_tree(lines, concurrent_stop=True)
    k, min_seconds = config.calls, config.call_seconds
    if warmup:
        trio.run(_supervised, default, lines, k, 0.0)
        trio.run(_supervised, concurrent, lines, 0, 0.0)
        trio.run(_bare, lines, k, 0.0)
    supervised: list[Run] = []
    pooled: list[Run] = []
    bare: list[Run] = []
    build: list[float] = []
    floor_ordered: list[Run] = []
    floor_at_once: list[Run] = []
    for _ in range(reps):
        fresh_heap()
        supervised.append(trio.run(_supervised, default, lines, k, min_seconds))
        fresh_heap()
        pooled.append(trio.run(_supervised, concurrent, lines, 0, min_seconds))
        fresh_heap()
        bare.append(trio.run(_bare, lines, k, min_seconds))
        fresh_heap()
        floor_ordered.append(trio.run(partial(_floor, lines, ordered=True)))
        fresh_heap()
        floor_at_once.append(trio.run(partial(_floor, lines, ordered=False)))
        build.append(_spec_build(k))

    def per_child(runs: list[Run], field: str) -> float:
        return median([getattr(run, field) for run in runs]) / n

    def per_call(runs: list[Run], field: str) -> float:
        return median([getattr(run, field) for run in runs])

    return Core(
        start_supervise=per_child(supervised, "start"),
        start_concurrent=per_child(pooled, "start"),
        start_bare=per_child(bare, "start"),
        stop_supervise=per_child(supervised, "stop"),
        stop_concurrent=per_child(pooled, "stop"),
        stop_bare=per_child(bare, "stop"),
        start_child_supervise=per_call(supervised, "start_child"),
        start_child_bare=per_call(bare, "start_child"),
        start_child_floor_soon=per_call(bare, "start_soon_first_step"),
        terminate_child_supervise=per_call(supervised, "terminate_child"),
        terminate_child_bare=per_call(bare, "terminate_child"),
        childspec_build=median(build),
        start_floor=per_child(floor_ordered + floor_at_once, "start"),
        stop_floor_ordered=per_child(floor_ordered, "stop"),
        stop_floor_at_once=per_child(floor_at_once, "stop"),
    )


def report(n: int, result: Core, reporter: Reporter) -> None:
    r = reporter
    start, stop = f"core_start_{n}", f"core_stop_{n}"
    r.metric(f"{start}_supervise_per_child_us_median", result.start_supervise * US, "us")
    r.metric(
        f"{start}_supervise_concurrent_stop_per_child_us_median",
        result.start_concurrent * US,
        "us",
    )
    r.metric(f"{start}_bare_per_child_us_median", result.start_bare * US, "us")
    r.metric(f"{start}_ratio_median", ratio(result.start_supervise, result.start_bare), "x")
    r.metric(
        f"{start}_concurrent_stop_ratio_median",
        ratio(result.start_concurrent, result.start_bare),
        "x",
    )
    r.target(f"{start}_ratio_median", START_TARGET)
    r.metric(f"{start}_floor_scoped_per_child_us_median", result.start_floor * US, "us")
    r.metric(
        f"{start}_floor_ratio_vs_bare_median", ratio(result.start_floor, result.start_bare), "x"
    )
    r.metric(
        f"{start}_ratio_vs_floor_median", ratio(result.start_supervise, result.start_floor), "x"
    )

    r.metric(f"{stop}_supervise_per_child_us_median", result.stop_supervise * US, "us")
    r.metric(
        f"{stop}_supervise_concurrent_stop_per_child_us_median",
        result.stop_concurrent * US,
        "us",
    )
    r.metric(f"{stop}_bare_nursery_cancel_per_child_us_median", result.stop_bare * US, "us")
    r.metric(f"{stop}_ratio_median", ratio(result.stop_supervise, result.stop_bare), "x")
    r.metric(
        f"{stop}_concurrent_stop_ratio_median",
        ratio(result.stop_concurrent, result.stop_bare),
        "x",
    )
    r.target(f"{stop}_ratio_median", STOP_TARGET)
    r.target(f"{stop}_concurrent_stop_ratio_median", CONCURRENT_STOP_TARGET)
    # The floors: what per-child cancel scopes cost by themselves, with no bookkeeping.
    floors = (
        ("ordered", result.stop_floor_ordered, result.stop_supervise),
        ("at_once", result.stop_floor_at_once, result.stop_concurrent),
    )
    for label, floor, supervise in floors:
        r.metric(f"{stop}_floor_{label}_per_child_us_median", floor * US, "us")
        r.metric(f"{stop}_floor_{label}_ratio_vs_bare_median", ratio(floor, result.stop_bare), "x")
        r.metric(f"{stop}_{label}_ratio_vs_floor_median", ratio(supervise, floor), "x")

    for call, sup, bare in (
        ("start_child", result.start_child_supervise, result.start_child_bare),
        ("terminate_child", result.terminate_child_supervise, result.terminate_child_bare),
    ):
        name = f"core_{call}_{n}"
        r.metric(f"{name}_supervise_per_call_us_median", sup * US, "us")
        r.metric(f"{name}_bare_per_call_us_median", bare * US, "us")
        r.metric(f"{name}_ratio_median", ratio(sup, bare), "x")
        r.target(f"{name}_supervise_per_call_us_median", CALL_TARGET_US)
    r.metric(f"core_start_child_{n}_childspec_build_us_median", result.childspec_build * US, "us")
    r.metric(
        f"core_start_child_{n}_floor_start_soon_first_step_per_call_us_median",
        result.start_child_floor_soon * US,
        "us",
    )


# ------------------------------------------------------------------------------ memory


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def _supervised_memory(n: int) -> int:
    spec = sleeping_tree(n)
    before = _traced()
    async with supervisor_tree(spec) as tree:
        await all_blocked()
        after = _traced()
        tracemalloc.stop()  # the teardown need not be traced (it is slow under tracing)
        if tree.count_children().active != n:
            raise RuntimeError(f"expected {n} running children")
    return after - before


async def _bare_memory(n: int) -> int:
    async with trio.open_nursery() as nursery:
        before = _traced()
        for _ in range(n):
            nursery.start_soon(sleeper)
        await all_blocked()
        after = _traced()
        tracemalloc.stop()
        if len(nursery.child_tasks) != n:
            raise RuntimeError(f"expected {n} tasks")
        nursery.cancel_scope.cancel()
    return after - before


def _traced_run(fn: Callable[[], int]) -> int:
    """Run ``fn`` with tracemalloc on; ``fn`` may stop it early, once it has measured."""
    fresh_heap()
    tracemalloc.start()
    try:
        return fn()
    finally:
        tracemalloc.stop()


def measure_memory(n: int, reps: int) -> tuple[float, float]:
    """Median bytes per child: (supervise, bare task)."""
    supervised: list[int] = []
    bare: list[int] = []
    for _ in range(reps):
        supervised.append(_traced_run(lambda: trio.run(_supervised_memory, n)))
        bare.append(_traced_run(lambda: trio.run(_bare_memory, n)))
    return median(supervised) / n, median(bare) / n


# --------------------------------------------------------------------------------- run


def _report_growth(
    reporter: Reporter,
    name: str,
    supervise: tuple[float, float],
    bare: tuple[float, float],
) -> str:
    """Print the growth (big over small) of supervise, of bare and their quotient.

    Returns the quotient's name.
    """
    growth, bare_growth = ratio(*supervise), ratio(*bare)
    reporter.metric(f"{name}_supervise_median", growth, "x")
    reporter.metric(f"{name}_bare_median", bare_growth, "x")
    reporter.metric(f"{name}_supervise_over_bare_median", ratio(growth, bare_growth), "x")
    return f"{name}_supervise_over_bare_median"


def run(config: Config, reporter: Reporter) -> None:
    """(h) every core target of the issue, at ``config.children`` and ``config.scale_children``."""
    small, big, r = config.children, config.scale_children, reporter
    at_small = measure(small, config.reps, config, warmup=True)
    report(small, at_small, r)
    at_big = measure(big, config.core_scale_reps, config, warmup=False)
    report(big, at_big, r)

    growth = f"core_scaling_start_{big}_vs_{small}"
    r.target(
        _report_growth(
            r,
            growth,
            (at_big.start_supervise, at_small.start_supervise),
            (at_big.start_bare, at_small.start_bare),
        ),
        SCALING_TARGET,
    )
    _report_growth(  # for information: the issue sets no scaling target on the stop
        r,
        f"core_scaling_stop_{big}_vs_{small}",
        (at_big.stop_supervise, at_small.stop_supervise),
        (at_big.stop_bare, at_small.stop_bare),
    )
    for call, big_call, small_call, big_bare, small_bare in (
        (
            "start_child",
            at_big.start_child_supervise,
            at_small.start_child_supervise,
            at_big.start_child_bare,
            at_small.start_child_bare,
        ),
        (
            "terminate_child",
            at_big.terminate_child_supervise,
            at_small.terminate_child_supervise,
            at_big.terminate_child_bare,
            at_small.terminate_child_bare,
        ),
    ):
        name = f"core_scaling_{call}_{big}_vs_{small}_supervise_median"
        r.metric(name, ratio(big_call, small_call), "x")
        r.target(name, SCALING_TARGET)
        # For information: bare Trio's own calls grow too (its target is absolute).
        r.metric(
            f"core_scaling_{call}_{big}_vs_{small}_bare_median",
            ratio(big_bare, small_bare),
            "x",
        )

    supervise, bare = measure_memory(small, config.core_memory_reps)
    name = f"core_memory_{small}"
    r.metric(f"{name}_supervise_per_child_bytes_median", supervise, "B", 0)
    r.metric(f"{name}_bare_task_per_child_bytes_median", bare, "B", 0)
    r.metric(f"{name}_ratio_median", ratio(supervise, bare), "x")
    r.target(f"{name}_ratio_median", MEMORY_TARGET)
