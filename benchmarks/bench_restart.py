"""(c) restart latency of one crash-looping child with no backoff, against bare Trio.

The child's target raises at once on each of its first N - 1 starts and sleeps on the N-th.
It times its own first and N-th start, so both sides are timed by the same code, and the
latency per restart is ``(t_N - t_1) / (N - 1)``: the crash, its handling, and the start
of the next run up to its first step.

* supervise: ``SupervisorSpec(..., backoff=None, max_restarts=10**9, max_seconds=1.0)`` with
  that one child (a ``PERMANENT`` ``ChildSpec`` with the defaults). One-for-one with no
  backoff is restarted in place by the exiting run's own task while the supervisor is idle.
* supervise_one_for_all (for information): the same child under ``ONE_FOR_ALL``, which
  goes through the supervisor's loop (a message, a group stop, a new task) every time.
* bare: the same loop by hand. The child task runs the target in its own cancel scope,
  catches the exception and sends it over a memory channel to a loop task, which starts a
  new child task with ``nursery.start_soon``.

Each repetition is its own ``trio.run`` with the real clock; the two sides are interleaved.
Every value printed is the median over the repetitions.
"""

from __future__ import annotations

import math
from time import perf_counter

import trio

from benchmarks._common import Config, Reporter, fresh_heap, median, ratio
from trio_supervise import ChildSpec, Strategy, SupervisorSpec, supervisor_tree


class Crash(Exception):
    """What the crash-looping child raises."""


class CrashLoop:
    """The target: crashes on its first ``n - 1`` starts, then sleeps; times its starts."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.starts = 0
        self.first = 0.0
        self.last = 0.0
        self.done = trio.Event()

    async def target(self) -> None:
        self.starts += 1
        if self.starts == 1:
            self.first = perf_counter()
        if self.starts >= self.n:
            self.last = perf_counter()
            self.done.set()
            await trio.sleep_forever()
        raise Crash(f"crash {self.starts}")

    def per_restart(self) -> float:
        return (self.last - self.first) / (self.n - 1)


async def _supervised(n: int, strategy: Strategy = Strategy.ONE_FOR_ONE) -> float:
    loop = CrashLoop(n)
    spec = SupervisorSpec(
        "bench",
        [ChildSpec("crasher", loop.target)],
        strategy=strategy,
        backoff=None,
        max_restarts=10**9,
        max_seconds=1.0,
    )
    async with supervisor_tree(spec) as tree:
        await loop.done.wait()
        restarts = tree.info("crasher").restarts
        if restarts != n - 1:
            raise RuntimeError(f"expected {n - 1} restarts, counted {restarts}")
    return loop.per_restart()


async def _bare(n: int) -> float:
    loop = CrashLoop(n)
    send, receive = trio.open_memory_channel[BaseException](math.inf)

    async def child(scope: trio.CancelScope) -> None:
        try:
            with scope:
                await loop.target()
        except Exception as exc:
            send.send_nowait(exc)

    async def restarter(nursery: trio.Nursery) -> None:
        async for _error in receive:
            nursery.start_soon(child, trio.CancelScope())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(restarter, nursery)
        nursery.start_soon(child, trio.CancelScope())
        await loop.done.wait()
        nursery.cancel_scope.cancel()
    return loop.per_restart()


def run(config: Config, reporter: Reporter) -> None:
    """(c) with ``config.restarts`` restarts; target: restart <= 1.5x."""
    n = max(config.restarts, 2)
    trio.run(_supervised, min(n, 200))  # warm-up
    trio.run(_bare, min(n, 200))
    supervised: list[float] = []
    one_for_all: list[float] = []
    bare: list[float] = []
    for _ in range(config.reps):
        fresh_heap()
        supervised.append(trio.run(_supervised, n))
        fresh_heap()
        one_for_all.append(trio.run(_supervised, n, Strategy.ONE_FOR_ALL))
        fresh_heap()
        bare.append(trio.run(_bare, n))
    us = 1e6
    sup, base, ofa = median(supervised), median(bare), median(one_for_all)
    reporter.metric("restart_supervise_per_restart_us_median", sup * us, "us")
    reporter.metric("restart_bare_per_restart_us_median", base * us, "us")
    reporter.metric("restart_ratio_median", ratio(sup, base), "x")
    reporter.metric("restart_one_for_all_per_restart_us_median", ofa * us, "us")
    reporter.metric("restart_one_for_all_ratio_median", ratio(ofa, base), "x")
    reporter.target("restart_ratio_median", 1.5)
