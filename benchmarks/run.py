"""Run the benchmarks and print ``metric value unit`` lines (``#`` lines are comments).

Usage::

    python -m benchmarks                 # everything, default sizes (about 2.5 minutes)
    python -m benchmarks --quick         # every benchmark with tiny sizes (about 30 seconds)
    python -m benchmarks --only core     # some: start_stop restart memory scaling shutdown http
                                         # core multicore process cli singleton pods
                                         # observer
    python benchmarks/run.py ...         # the same

Exit status 0, or with ``--strict`` 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

if not __package__:  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio

import trio_supervise
from benchmarks import (
    bench_cli,
    bench_core,
    bench_http,
    bench_memory,
    bench_multicore,
    bench_observer,
    bench_pods,
    bench_process,
    bench_restart,
    bench_scaling,
    bench_shutdown,
    bench_singleton,
    bench_start_stop,
)
from benchmarks._common import QUICK, Config, Reporter

BENCHMARKS = (
    "start_stop",
    "restart",
    "memory",
    "scaling",
    "shutdown",
    "http",
    "core",
    "multicore",
    "process",
    "cli",
    "singleton",
    "pods",
    "observer",
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="trio_supervise against bare Trio: start, stop, restart, memory, scaling,"
        " shutdown, HTTP, the core targets of issue 9, and process children against"
        " supervisord and circus (issue 11).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: checks that everything runs"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=BENCHMARKS,
        help="run only this benchmark (repeatable); default: all",
    )
    parser.add_argument("--reps", type=int, help="repetitions of the timings (default 7)")
    parser.add_argument(
        "--scale-children", type=int, help="children of the scaling benchmark (default 100000)"
    )
    parser.add_argument(
        "--gc-off",
        action="store_true",
        help="diagnosis only: disable the cyclic garbage collector during the benchmarks",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 when a target is missed"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, reporter: Reporter | None = None) -> int:
    args = parse_args(argv)
    config = QUICK if args.quick else Config()
    if args.reps is not None:
        config = dataclasses.replace(config, reps=max(args.reps, 1))
    if args.scale_children is not None:
        config = dataclasses.replace(config, scale_children=max(args.scale_children, 1))
    selected = set(args.only or BENCHMARKS)
    r = reporter if reporter is not None else Reporter()
    r.comment(
        f"python {platform.python_version()}, trio {trio.__version__},"
        f" trio_supervise {trio_supervise.__version__}, {platform.machine()}"
    )
    r.comment(f"config: {config}{', gc off' if args.gc_off else ''}")
    r.comment("every value is the median over the repetitions; ratios are supervise / bare")
    gc_was_enabled = gc.isenabled()
    if args.gc_off:
        gc.disable()
    try:
        base = None
        if "start_stop" in selected:
            base = bench_start_stop.run(config, r)
        if "restart" in selected:
            bench_restart.run(config, r)
        memory: dict[int, bench_memory.Memory] = {}
        if "memory" in selected:
            memory = bench_memory.run(config, r)
        if "scaling" in selected:
            bench_scaling.run(config, r, base, memory.get(config.children))
        if "shutdown" in selected:
            bench_shutdown.run(config, r)
        if "http" in selected:
            bench_http.run(config, r)
        if "core" in selected:
            bench_core.run(config, r)
        if "multicore" in selected:
            bench_multicore.run(config, r)
        if "process" in selected:
            bench_process.run(config, r)
        if "cli" in selected:
            bench_cli.run(config, r)
        if "singleton" in selected:
            bench_singleton.run(config, r)
        if "pods" in selected:
            bench_pods.run(config, r)
        if "observer" in selected:
            bench_observer.run(config, r)
    finally:
        if gc_was_enabled:
            gc.enable()
    missed = r.summary()
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
