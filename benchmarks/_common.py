"""Shared pieces of the benchmarks: sizes, the output format, targets, small helpers."""

from __future__ import annotations

import gc
import math
import signal
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import trio
import trio.testing


@dataclass(frozen=True)
class Config:
    """The sizes and repetitions of one run of the benchmarks."""

    #: Children of the start/stop benchmarks (a) and (b); the base of the scaling ratio.
    children: int = 1_000
    #: Children of the memory benchmark (d).
    memory_children: tuple[int, ...] = (1_000, 10_000)
    #: Children of the scaling benchmark (e): start, stop and memory at this size.
    scale_children: int = 100_000
    #: Restarts measured by the restart benchmark (c).
    restarts: int = 5_000
    #: Repetitions of each timing at ``children`` and of the restart benchmark.
    reps: int = 7
    #: Repetitions of each timing at ``scale_children``.
    scale_reps: int = 3
    #: Repetitions of each memory measurement (it barely varies).
    memory_reps: int = 1
    #: The core benchmark (h): start_child and terminate_child calls per round.
    calls: int = 200
    #: The core benchmark (h): rounds of calls go on until each kind has been timed this long.
    call_seconds: float = 0.05
    #: The core benchmark (h): repetitions at ``scale_children`` (the issue asks for >= 5).
    core_scale_reps: int = 5
    #: The core benchmark (h): repetitions of its memory measurement.
    core_memory_reps: int = 5


#: Tiny sizes: every benchmark runs in well under a second (used by the tests).
QUICK = Config(
    children=10,
    memory_children=(10, 20),
    scale_children=40,
    restarts=20,
    reps=2,
    scale_reps=1,
    memory_reps=1,
    calls=5,
    call_seconds=0.0,
    core_scale_reps=1,
    core_memory_reps=1,
)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else math.nan


def fresh_heap() -> None:
    """Collect garbage left by the previous repetition, so that it is not charged to this one.

    The collector stays enabled while measuring: collections triggered by a benchmark's own
    allocations are part of its cost.
    """
    gc.collect()


async def all_blocked() -> None:
    """Wait until every other task is blocked (every child has reached its sleep)."""
    await trio.testing.wait_all_tasks_blocked()


@dataclass(frozen=True)
class Target:
    """A target: ``metric`` must be at most ``limit``."""

    metric: str
    limit: float


@dataclass
class Reporter:
    """Prints ``metric value unit`` lines as they come and keeps the values."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    values: dict[str, float] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)

    def metric(self, name: str, value: float, unit: str, digits: int = 2) -> None:
        if any(ch.isspace() for ch in name + unit) or not name or not unit:
            raise ValueError(f"bad metric name or unit: {name!r} {unit!r}")
        self.values[name] = value
        print(f"{name} {value:.{digits}f} {unit}", file=self.out, flush=True)

    def comment(self, text: str) -> None:
        print(f"# {text}", file=self.out, flush=True)

    def target(self, metric: str, limit: float) -> None:
        """Register a target on an already printed metric and print its ``target_met`` line."""
        self.targets.append(Target(metric, limit))
        met = self.values[metric] <= limit
        self.metric(f"target_met_{metric}_le_{limit:g}", 1.0 if met else 0.0, "bool", digits=0)

    def summary(self) -> int:
        """Print the PASS/FAIL summary; return how many targets were missed."""
        missed = 0
        self.comment("summary of targets (ratios to bare Trio doing the same work):")
        for target in self.targets:
            value = self.values[target.metric]
            ok = value <= target.limit
            missed += not ok
            verdict = "PASS" if ok else "FAIL"
            self.comment(f"{verdict} {target.metric} = {value:.2f} (target <= {target.limit:g})")
        self.metric("targets_met", len(self.targets) - missed, "count", digits=0)
        self.metric("targets_missed", missed, "count", digits=0)
        return missed


#: A benchmark: runs with a config and reports through a reporter.
Benchmark = Callable[[Config, Reporter], None]


def stop_process(process: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """SIGTERM ``process`` and wait for it (reading what it still writes); SIGKILL if it hangs."""
    process.send_signal(signal.SIGTERM)
    try:
        process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
