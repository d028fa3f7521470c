"""(d) memory per idle child, with ``tracemalloc``, against bare Trio tasks in cancel scopes.

Measured: the growth of traced memory from just before ``supervisor_tree`` is entered to its
body with every child asleep (garbage collected at both ends), divided by N. This is what
the running tree holds per child: its runtime records, events, cancel scopes, tasks and
coroutine frames. The ``SupervisorSpec`` and its ``ChildSpec`` values are built before and
not counted there (they are the user's configuration, alive whether or not a tree runs);
their size is printed separately, with a ratio that includes them, for information.

The baseline is ``nursery.start_soon`` of N tasks that each sleep in their own
``trio.CancelScope``, measured the same way from just before the tasks are started.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass

import trio

from benchmarks._common import Config, Reporter, all_blocked, fresh_heap, median, ratio
from benchmarks.bench_start_stop import sleeping_tree
from trio_supervise import SupervisorSpec, supervisor_tree


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def _sleeper_in_scope(scope: trio.CancelScope) -> None:
    with scope:
        await trio.sleep_forever()


async def _supervised(spec: SupervisorSpec, n: int) -> int:
    before = _traced()
    async with supervisor_tree(spec) as tree:
        await all_blocked()
        after = _traced()
        tracemalloc.stop()  # the teardown need not be traced (it is slow under tracing)
        if tree.count_children().active != n:
            raise RuntimeError(f"expected {n} running children")
    return after - before


async def _bare(n: int) -> int:
    async with trio.open_nursery() as nursery:
        before = _traced()
        for _ in range(n):
            nursery.start_soon(_sleeper_in_scope, trio.CancelScope())
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


@dataclass(frozen=True)
class Memory:
    """Median bytes per child."""

    supervise: float
    spec: float
    bare: float


def _traced_spec(n: int) -> tuple[SupervisorSpec, int]:
    """Build the spec of ``n`` sleeping children under tracing: it and its size in bytes."""
    fresh_heap()
    tracemalloc.start()
    try:
        before = _traced()
        spec = sleeping_tree(n)
        return spec, _traced() - before
    finally:
        tracemalloc.stop()


def measure(n: int, reps: int) -> Memory:
    spec, spec_size = _traced_spec(n)  # deterministic: measured once
    supervised: list[int] = []
    bare: list[int] = []
    for _ in range(reps):
        supervised.append(_traced_run(lambda: trio.run(_supervised, spec, n)))
        bare.append(_traced_run(lambda: trio.run(_bare, n)))
    return Memory(median(supervised) / n, spec_size / n, median(bare) / n)


def report(n: int, result: Memory, reporter: Reporter) -> None:
    r = reporter
    r.metric(f"memory_{n}_supervise_per_child_bytes_median", result.supervise, "B", 0)
    r.metric(f"memory_{n}_bare_per_child_bytes_median", result.bare, "B", 0)
    r.metric(f"memory_{n}_ratio_median", ratio(result.supervise, result.bare), "x")
    r.metric(f"memory_{n}_spec_per_child_bytes_median", result.spec, "B", 0)
    r.metric(
        f"memory_{n}_ratio_incl_spec_median",
        ratio(result.supervise + result.spec, result.bare),
        "x",
    )


def run(config: Config, reporter: Reporter) -> dict[int, Memory]:
    """(d) at each of ``config.memory_children``; target: memory <= 3x."""
    results: dict[int, Memory] = {}
    for n in config.memory_children:
        results[n] = measure(n, config.memory_reps)
        report(n, results[n], reporter)
        reporter.target(f"memory_{n}_ratio_median", 3.0)
    return results
