"""(f) the shutdown machinery's own cost, against bare Trio doing the same awaits.

Case A, hooks: a tree with no children and ``BANDS`` x ``HOOKS_PER_BAND`` (5 x 20) shutdown
hooks at priorities 0, 10, 20, 30 and 40, each ``await trio.lowlevel.checkpoint()`` and
return. Timed from ``tree.shutdown()`` in the body to the ``SHUTDOWN_FINISHED`` event (both
``trio.current_time()``): the trigger, the body's cancellation, the five bands (with the
built-in ``"supervisor"`` hook, here with nothing to stop), a timeout scope, a ``HookResult``
and a ``HOOK_FINISHED`` event per hook, and the report. Bare: the same 100 awaits, as five
nurseries one after another, each running 20 tasks. Several shutdowns are timed in each
``trio.run`` (one fresh tree each) and averaged, as one takes about a millisecond.

Case B, the ``"supervisor"`` step: a tree of N sleeping children (all defaults) shut down;
the time is the ``duration`` of the built-in ``"supervisor"`` hook in the report, which
stops the children one at a time in reverse start order. Bare: the ordered stop of N tasks
of ``bench_start_stop`` (each task in its own cancel scope, cancelled in reverse order,
each exit awaited before the next cancel); per child.

Sizes follow ``config.children``: N = 10 x it (10,000; 100 with ``--quick``) and
``config.children // 20`` shutdowns per repetition of case A (50; 1 with ``--quick``).
Each repetition is its own ``trio.run`` with the real clock; the two sides are interleaved.
Every value printed is the median over the repetitions; target: ratio <= 1.5 for both.
"""

from __future__ import annotations

import trio

from benchmarks._common import Config, Reporter, all_blocked, fresh_heap, median, ratio
from benchmarks.bench_start_stop import _bare_ordered, sleeping_tree
from trio_supervise import EventKind, ShutdownHook, SupervisorSpec, supervisor_tree

#: Case A: this many bands of this many hooks each.
BANDS = 5
HOOKS_PER_BAND = 20
#: The target of both ratios.
TARGET = 1.5


async def quick_hook() -> None:
    """Every hook of case A, on both sides: one checkpoint, then return."""
    await trio.lowlevel.checkpoint()


def hooks_in_bands() -> list[ShutdownHook]:
    return [
        ShutdownHook(f"h{band}-{i}", quick_hook, priority=10 * band)
        for band in range(BANDS)
        for i in range(HOOKS_PER_BAND)
    ]


def sizes(config: Config) -> tuple[int, int]:
    """(N children of case B, shutdowns per repetition of case A)."""
    return 10 * config.children, max(1, config.children // 20)


# Each function below is one repetition; it returns seconds.


async def _supervised_hooks(hooks: list[ShutdownHook], rounds: int) -> float:
    """Mean seconds from ``tree.shutdown()`` to ``SHUTDOWN_FINISHED``, over ``rounds`` trees."""
    spec = SupervisorSpec("bench", [])
    total = 0.0
    for _ in range(rounds):
        async with supervisor_tree(spec, hooks=hooks) as tree:
            start = trio.current_time()
            tree.shutdown("bench")
            await trio.sleep_forever()
        finished = tree.history[-1]  # not timed: checks
        report = tree.shutdown_report
        if finished.kind is not EventKind.SHUTDOWN_FINISHED or report is None or not report.ok:
            raise RuntimeError(f"the shutdown did not end well: {report}")
        if len(report.hooks) != len(hooks) + 1:
            raise RuntimeError(f"expected {len(hooks) + 1} hook results: {report}")
        total += finished.time - start
    return total / rounds


async def _bare_hooks(rounds: int) -> float:
    """Mean seconds of five nurseries in a row, each running ``HOOKS_PER_BAND`` hooks."""
    total = 0.0
    for _ in range(rounds):
        start = trio.current_time()
        for _band in range(BANDS):
            async with trio.open_nursery() as nursery:
                for _hook in range(HOOKS_PER_BAND):
                    nursery.start_soon(quick_hook)
        total += trio.current_time() - start
    return total / rounds


async def _supervised_step(spec: SupervisorSpec, n: int) -> float:
    """Seconds of the ``"supervisor"`` step stopping ``n`` sleeping children."""
    async with supervisor_tree(spec) as tree:
        await all_blocked()
        active = tree.count_children().active  # not timed: a sanity check
        if active != n:
            raise RuntimeError(f"expected {n} running children, found {active}")
    report = tree.shutdown_report
    if report is None or not report.ok:
        raise RuntimeError(f"the shutdown did not end well: {report}")
    (step,) = [hook for hook in report.hooks if hook.name == "supervisor"]
    return step.duration


async def _bare_step(n: int) -> float:
    return (await _bare_ordered(n))[1]


def run(config: Config, reporter: Reporter) -> None:
    """(f) cases A and B; targets: both ratios <= 1.5."""
    n, rounds = sizes(config)
    hooks = hooks_in_bands()  # built once, outside the timings: hooks are immutable
    spec = sleeping_tree(n)
    trio.run(_supervised_hooks, hooks, rounds)  # warm-up
    trio.run(_bare_hooks, rounds)
    trio.run(_supervised_step, spec, n)
    trio.run(_bare_step, n)
    hooks_supervised: list[float] = []
    hooks_bare: list[float] = []
    step_supervised: list[float] = []
    step_bare: list[float] = []
    for _ in range(config.reps):
        fresh_heap()
        hooks_supervised.append(trio.run(_supervised_hooks, hooks, rounds))
        fresh_heap()
        hooks_bare.append(trio.run(_bare_hooks, rounds))
        fresh_heap()
        step_supervised.append(trio.run(_supervised_step, spec, n))
        fresh_heap()
        step_bare.append(trio.run(_bare_step, n))

    us = 1e6
    r = reporter
    name = f"shutdown_hooks_{BANDS}x{HOOKS_PER_BAND}"
    sup, bare = median(hooks_supervised), median(hooks_bare)
    r.metric(f"{name}_supervise_us_median", sup * us, "us")
    r.metric(f"{name}_bare_us_median", bare * us, "us")
    r.metric(f"{name}_ratio_median", ratio(sup, bare), "x")
    r.target(f"{name}_ratio_median", TARGET)

    name = f"shutdown_step_{n}"
    sup, bare = median(step_supervised) / n, median(step_bare) / n
    r.metric(f"{name}_supervise_per_child_us_median", sup * us, "us")
    r.metric(f"{name}_bare_ordered_per_child_us_median", bare * us, "us")
    r.metric(f"{name}_ratio_vs_ordered_median", ratio(sup, bare), "x")
    r.target(f"{name}_ratio_vs_ordered_median", TARGET)
