"""(a) start and (b) stop N sleeping children, against bare Trio.

Start: from entering ``supervisor_tree`` until its body runs *and* every child is asleep in
``trio.sleep_forever()`` (``wait_all_tasks_blocked``). The body of ``supervisor_tree`` may be
scheduled before the children's first steps, and a bare nursery's body runs before any of
its children did, so "until the body runs" alone would not compare the same work; both sides
wait until all N tasks are asleep.

Stop: from the end of the body until the ``async with`` has exited. The supervisor stops its
children one at a time in reverse start order (ask, cancel, await the exit), so two bare
baselines are measured:

* ``bare_ordered``: the same sequential work by hand. Each task runs in its own cancel scope
  and sets a ``trio.Event`` in its ``finally``; the scopes are cancelled in reverse order,
  awaiting each exit before the next cancel. This is the fair baseline (the target).
* ``bare_nursery_cancel``: cancel the whole nursery at once and let it exit. Cheaper, as it
  stops everything in one scheduling pass; printed for information.

Each repetition is its own ``trio.run`` with the real clock; the variants are interleaved.
Every value printed is the median over the repetitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter

import trio

from benchmarks._common import Config, Reporter, all_blocked, fresh_heap, median, ratio
from trio_supervise import ChildSpec, SupervisorSpec, supervisor_tree


async def sleeper() -> None:
    """The target of every child: sleeps until cancelled."""
    await trio.sleep_forever()


def sleeping_tree(n: int) -> SupervisorSpec:
    """A root supervisor with ``n`` sleeping children (all defaults, as a user writes it)."""
    return SupervisorSpec("bench", [ChildSpec(f"c{i}", sleeper) for i in range(n)])


async def _sleeper_in_scope(scope: trio.CancelScope) -> None:
    with scope:
        await trio.sleep_forever()


async def _sleeper_reporting_exit(scope: trio.CancelScope, done: trio.Event) -> None:
    try:
        with scope:
            await trio.sleep_forever()
    finally:
        done.set()


# Each function below is one repetition: it returns (start seconds, stop seconds).


async def _supervised(spec: SupervisorSpec, n: int) -> tuple[float, float]:
    t0 = perf_counter()
    async with supervisor_tree(spec) as tree:
        await all_blocked()
        t1 = perf_counter()
        active = tree.count_children().active  # not timed: a sanity check
        if active != n:
            raise RuntimeError(f"expected {n} running children, found {active}")
        t2 = perf_counter()
    t3 = perf_counter()
    return t1 - t0, t3 - t2


async def _bare_nursery_cancel(n: int) -> tuple[float, float]:
    t0 = perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(n):
            nursery.start_soon(_sleeper_in_scope, trio.CancelScope())
        await all_blocked()
        t1 = perf_counter()
        if len(nursery.child_tasks) != n:
            raise RuntimeError(f"expected {n} tasks, found {len(nursery.child_tasks)}")
        t2 = perf_counter()
        nursery.cancel_scope.cancel()
    t3 = perf_counter()
    return t1 - t0, t3 - t2


async def _bare_ordered(n: int) -> tuple[float, float]:
    t0 = perf_counter()
    async with trio.open_nursery() as nursery:
        handles: list[tuple[trio.CancelScope, trio.Event]] = []
        for _ in range(n):
            scope, done = trio.CancelScope(), trio.Event()
            handles.append((scope, done))
            nursery.start_soon(_sleeper_reporting_exit, scope, done)
        await all_blocked()
        t1 = perf_counter()
        if len(nursery.child_tasks) != n:
            raise RuntimeError(f"expected {n} tasks, found {len(nursery.child_tasks)}")
        t2 = perf_counter()
        for scope, done in reversed(handles):
            scope.cancel()
            await done.wait()
    t3 = perf_counter()
    return t1 - t0, t3 - t2


@dataclass(frozen=True)
class StartStop:
    """Median seconds per child of each variant."""

    start_supervise: float
    start_bare: float
    start_bare_ordered: float
    stop_supervise: float
    stop_bare_ordered: float
    stop_bare_nursery_cancel: float


def measure(n: int, reps: int, *, warmup: bool) -> StartStop:
    """Run the three variants ``reps`` times, interleaved; return the medians per child."""
    spec = sleeping_tree(n)  # built once, outside the timings: specs are immutable
    if warmup:
        trio.run(_supervised, spec, n)
        trio.run(_bare_nursery_cancel, n)
        trio.run(_bare_ordered, n)
    supervised: list[tuple[float, float]] = []
    bare: list[tuple[float, float]] = []
    ordered: list[tuple[float, float]] = []
    for _ in range(reps):
        fresh_heap()
        supervised.append(trio.run(_supervised, spec, n))
        fresh_heap()
        bare.append(trio.run(_bare_nursery_cancel, n))
        fresh_heap()
        ordered.append(trio.run(_bare_ordered, n))

    def per_child(runs: list[tuple[float, float]], index: int) -> float:
        return median([run[index] for run in runs]) / n

    return StartStop(
        start_supervise=per_child(supervised, 0),
        start_bare=per_child(bare, 0),
        start_bare_ordered=per_child(ordered, 0),
        stop_supervise=per_child(supervised, 1),
        stop_bare_ordered=per_child(ordered, 1),
        stop_bare_nursery_cancel=per_child(bare, 1),
    )


def report(n: int, result: StartStop, reporter: Reporter) -> None:
    us = 1e6
    r = reporter
    r.metric(f"start_{n}_supervise_per_child_us_median", result.start_supervise * us, "us")
    r.metric(f"start_{n}_bare_per_child_us_median", result.start_bare * us, "us")
    r.metric(
        f"start_{n}_bare_with_exit_event_per_child_us_median",
        result.start_bare_ordered * us,
        "us",
    )
    r.metric(f"start_{n}_ratio_median", ratio(result.start_supervise, result.start_bare), "x")
    r.metric(
        f"start_{n}_ratio_vs_bare_with_exit_event_median",
        ratio(result.start_supervise, result.start_bare_ordered),
        "x",
    )
    r.metric(f"stop_{n}_supervise_per_child_us_median", result.stop_supervise * us, "us")
    r.metric(f"stop_{n}_bare_ordered_per_child_us_median", result.stop_bare_ordered * us, "us")
    r.metric(
        f"stop_{n}_bare_nursery_cancel_per_child_us_median",
        result.stop_bare_nursery_cancel * us,
        "us",
    )
    r.metric(
        f"stop_{n}_ratio_vs_ordered_median",
        ratio(result.stop_supervise, result.stop_bare_ordered),
        "x",
    )
    r.metric(
        f"stop_{n}_ratio_vs_nursery_cancel_median",
        ratio(result.stop_supervise, result.stop_bare_nursery_cancel),
        "x",
    )


def run(config: Config, reporter: Reporter) -> StartStop:
    """(a) and (b) at ``config.children``; targets: start <= 3x, stop <= 2x (vs ordered)."""
    n = config.children
    result = measure(n, config.reps, warmup=True)
    report(n, result, reporter)
    reporter.target(f"start_{n}_ratio_median", 3.0)
    reporter.target(f"stop_{n}_ratio_vs_ordered_median", 2.0)
    return result
