"""(e) start, stop and memory at ``config.scale_children`` (100,000), and how they scale.

Runs the start/stop benchmark (a, b) and the memory benchmark (d) at the large size, with
the same baselines, and prints the per-child time at the large size over the per-child time
at ``config.children`` (1,000): target <= 1.5x for the stop. For the start, issue 9 replaced
the absolute 1.5x by the growth relative to bare Trio's (``core_scaling_start_*`` in
``bench_core``, <= 1.2x), since bare Trio misses 1.5x itself; it is printed here for
information. The same ratio of the bare baselines, and trio_supervise's ratio over it, are
printed for information: bare Trio
does not scale flat either: 1,000 new tasks trigger no full (generation 2) collection of
CPython's garbage collector, while 100,000 multiply the heap and trigger about a dozen, each
walking every live object. ``--gc-off`` shows the times without the collector (diagnosis).
"""

from __future__ import annotations

from benchmarks import bench_memory, bench_start_stop
from benchmarks._common import Config, Reporter, ratio


def run(
    config: Config,
    reporter: Reporter,
    base: bench_start_stop.StartStop | None = None,
    base_memory: bench_memory.Memory | None = None,
) -> None:
    """(e); ``base`` is the result of (a, b) at ``config.children``, measured if not given."""
    small, big = config.children, config.scale_children
    if base is None:
        base = bench_start_stop.measure(small, config.reps, warmup=True)
    result = bench_start_stop.measure(big, config.scale_reps, warmup=False)
    bench_start_stop.report(big, result, reporter)
    reporter.target(f"start_{big}_ratio_median", 3.0)
    reporter.target(f"stop_{big}_ratio_vs_ordered_median", 2.0)

    memory = bench_memory.measure(big, config.memory_reps)
    bench_memory.report(big, memory, reporter)
    reporter.target(f"memory_{big}_ratio_median", 3.0)

    r = reporter
    start_scaling = f"scaling_start_{big}_vs_{small}_supervise_median"
    stop_scaling = f"scaling_stop_{big}_vs_{small}_supervise_median"
    r.metric(start_scaling, ratio(result.start_supervise, base.start_supervise), "x")
    r.metric(stop_scaling, ratio(result.stop_supervise, base.stop_supervise), "x")
    r.metric(
        f"scaling_start_{big}_vs_{small}_bare_median",
        ratio(result.start_bare, base.start_bare),
        "x",
    )
    r.metric(
        f"scaling_stop_{big}_vs_{small}_bare_ordered_median",
        ratio(result.stop_bare_ordered, base.stop_bare_ordered),
        "x",
    )
    r.metric(
        f"scaling_start_{big}_vs_{small}_supervise_over_bare_median",
        ratio(
            ratio(result.start_supervise, base.start_supervise),
            ratio(result.start_bare, base.start_bare),
        ),
        "x",
    )
    r.metric(
        f"scaling_stop_{big}_vs_{small}_supervise_over_bare_ordered_median",
        ratio(
            ratio(result.stop_supervise, base.stop_supervise),
            ratio(result.stop_bare_ordered, base.stop_bare_ordered),
        ),
        "x",
    )
    if base_memory is not None:
        r.metric(
            f"scaling_memory_{big}_vs_{small}_supervise_median",
            ratio(memory.supervise, base_memory.supervise),
            "x",
        )
    r.target(stop_scaling, 1.5)
