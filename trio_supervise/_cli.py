"""The ``trio-supervise`` command line: ``trio-supervise demo`` runs an example tree."""

from __future__ import annotations

import argparse
import logging
import random
import sys
from collections.abc import Sequence
from typing import TextIO

import trio

from ._context import current_child
from ._events import EventKind
from ._spec import Backoff, ChildSpec, Strategy, SupervisorSpec
from ._tree import supervisor_tree


class DemoCrash(Exception):
    """What the demo's flaky worker raises on purpose."""


async def steady_worker() -> None:
    """Ticks once a second, forever."""
    while True:  # noqa: ASYNC110 - the tick is the work
        await trio.sleep(1)


async def flaky_worker(period: float) -> None:
    """Crashes ``period`` seconds after each start, so its restarts and backoff show."""
    await trio.sleep(period)
    raise DemoCrash(f"flaky crash #{current_child().restarts + 1} (on purpose)")


async def connection(
    lifetime: float, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Stands for a database connection: ready after a handshake, dropped after ``lifetime``."""
    await trio.sleep(0.2)
    task_status.started()
    await trio.sleep(lifetime)
    raise DemoCrash("connection dropped (on purpose)")


async def query_runner() -> None:
    """Depends on ``connection``: rest-for-one restarts it whenever the connection drops."""
    await trio.sleep_forever()


def demo_spec(flaky_period: float = 3.0) -> SupervisorSpec:
    """The demo tree: a steady worker, a flaky one, and a rest-for-one database pair."""
    return SupervisorSpec(
        "demo",
        [
            ChildSpec("steady", steady_worker),
            ChildSpec("flaky", flaky_worker, (flaky_period,)),
            SupervisorSpec(
                "db",
                [
                    ChildSpec("connection", connection, (flaky_period * 4,)),
                    ChildSpec("queries", query_runner),
                ],
                strategy=Strategy.REST_FOR_ONE,
                max_restarts=5,
                max_seconds=30,
            ),
        ],
        # Generous on purpose: the demo crashes for show and must not give up.
        max_restarts=20,
        max_seconds=30,
        backoff=Backoff(initial=0.5, maximum=4.0, reset_after=10.0),
    )


async def run_demo(
    out: TextIO,
    *,
    duration: float | None = None,
    render_every: float = 5.0,
    seed: int | None = None,
    handle_signals: bool = True,
) -> int:
    """Run the demo tree until a signal (or ``duration`` seconds); print events and the tree."""
    rng = random.Random(seed)
    async with supervisor_tree(demo_spec(), handle_signals=handle_signals, rng=rng) as tree:
        started = trio.current_time()
        print(tree.render(), file=out, flush=True)

        async def show_events() -> None:
            async with tree.events() as events:
                async for event in events:
                    line = f"+{event.time - started:7.3f}s {event.kind.name:<17} {event.path}"
                    if event.detail:
                        line += f" — {event.detail}"
                    if event.error is not None and event.kind is EventKind.CRASHED:
                        line += f" ({type(event.error).__name__}: {event.error})"
                    print(line, file=out, flush=True)

        async def show_tree() -> None:
            while True:
                await trio.sleep(render_every)
                print(tree.render(), file=out, flush=True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(show_events)
            nursery.start_soon(show_tree)
            if duration is not None:
                await trio.sleep(duration)
                tree.shutdown(f"--duration {duration:g}s passed")
            else:
                await trio.sleep_forever()
    report = tree.shutdown_report
    if report is not None:
        print(report.format(), file=out, flush=True)
    crashes = sum(event.kind is EventKind.CRASHED for event in tree.history)
    print(f"done: {crashes} crashes handled", file=out, flush=True)
    return 0 if report is None or report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="trio-supervise", description="Supervision trees and graceful shutdown for Trio."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="run an example tree until Ctrl+C, printing its events and the tree"
    )
    demo.add_argument("--duration", type=float, help="stop by itself after this many seconds")
    demo.add_argument("--seed", type=int, help="seed of the backoff jitter")
    demo.add_argument(
        "--log-level",
        default="ERROR",
        help="level of the library's log lines (the events are printed anyway)",
    )
    args = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    )
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    return trio.run(lambda: run_demo(sys.stdout, duration=args.duration, seed=args.seed))
