"""The optional plot module: the runs behind the pictures exactly, then the artists drawn.

Trees run in virtual time, so every run's start and end is an exact number. The pictures
are checked through their artists (each carries a ``gid``), not their pixels; each is also
saved as a PNG once to make sure it renders.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import trio
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from processes import import_message_without

from trio_supervise import (
    Backoff,
    Band,
    ChildSpec,
    Event,
    EventKind,
    HookResult,
    RestartIntensityExceeded,
    ShutdownHook,
    ShutdownReport,
    Strategy,
    SupervisorSpec,
    supervisor_tree,
)
from trio_supervise.plot import (
    HookBar,
    Run,
    hook_bars,
    restart_timeline,
    runs_from_history,
    shutdown_gantt,
)
from trio_supervise.testing import crash_after, sleeper, slow_stop

K = EventKind
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# (start, end, started_by, ended_by, repr of the error)
Summary = dict[str, list[tuple[float, float | None, K | None, K | None, str | None]]]


def summary(runs: dict[str, list[Run]]) -> Summary:
    return {
        path: [
            (
                run.start,
                run.end,
                run.started_by,
                run.ended_by,
                None if run.error is None else repr(run.error),
            )
            for run in path_runs
        ]
        for path, path_runs in runs.items()
    }


def pipeline(strategy: Strategy) -> SupervisorSpec:
    """Three workers; the middle one crashes once, at 2 s; restarts wait 0.5 s."""
    return SupervisorSpec(
        "pipeline",
        [
            ChildSpec("reader", sleeper()),
            ChildSpec("parser", crash_after(2.0, starts=1)),
            ChildSpec("writer", sleeper()),
        ],
        strategy=strategy,
        backoff=Backoff(initial=0.5, jitter=0.0),
    )


async def history_of(spec: SupervisorSpec, seconds: float) -> list[Event]:
    async with supervisor_tree(spec) as tree:
        await trio.sleep(seconds)
    return tree.history


CRASH = "FakeCrash('crashed after 2s (run 1)')"
WHOLE = (0.0, 5.0, K.STARTED, K.TERMINATED, None)
CRASHED = (0.0, 2.0, K.STARTED, K.CRASHED, CRASH)
STOPPED = (0.0, 2.0, K.STARTED, K.EXITED, None)
AGAIN = (2.5, 5.0, K.RESTARTED, K.TERMINATED, None)


# ----------------------------------------------------------------- runs_from_history


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (
            Strategy.ONE_FOR_ONE,
            {"reader": [WHOLE], "parser": [CRASHED, AGAIN], "writer": [WHOLE]},
        ),
        (
            Strategy.ONE_FOR_ALL,
            {"reader": [STOPPED, AGAIN], "parser": [CRASHED, AGAIN], "writer": [STOPPED, AGAIN]},
        ),
        (
            Strategy.REST_FOR_ONE,
            {"reader": [WHOLE], "parser": [CRASHED, AGAIN], "writer": [STOPPED, AGAIN]},
        ),
    ],
    ids=lambda value: value.name if isinstance(value, Strategy) else "",
)
async def test_runs_of_each_strategy(
    autojump_clock: trio.testing.MockClock, strategy: Strategy, expected: Summary
) -> None:
    history = await history_of(pipeline(strategy), 5.0)
    runs = runs_from_history(history)
    assert summary(runs) == expected
    assert list(runs) == ["reader", "parser", "writer"]
    parser = runs["parser"]
    assert [(run.restarts, run.detail) for run in parser] == [
        (0, ""),
        (1, "shutdown (body ended)"),
    ]
    assert all(run.path == "parser" for run in parser)


async def test_a_restart_that_fails_to_start_is_a_run_of_length_zero(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts = 0

    async def connect(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal starts
        starts += 1
        if starts == 2:
            await trio.sleep(0.25)
            raise OSError("port taken")
        task_status.started()
        await trio.sleep(1.0)
        raise ValueError("lost connection")

    spec = SupervisorSpec(
        "app", [ChildSpec("conn", connect)], backoff=Backoff(initial=0.5, jitter=0.0)
    )
    history = await history_of(spec, 4.0)
    runs = runs_from_history(history)
    assert summary(runs) == {
        "conn": [
            (0.0, 1.0, K.STARTED, K.CRASHED, "ValueError('lost connection')"),
            # Due at 1.5, it raised 0.25 s into its start, before started().
            (1.75, 1.75, None, K.START_FAILED, "OSError('port taken')"),
            (2.75, 3.75, K.RESTARTED, K.CRASHED, "ValueError('lost connection')"),
        ]
    }
    assert runs["conn"][1].detail == "failed to start"


async def test_a_run_still_going_has_no_end(autojump_clock: trio.testing.MockClock) -> None:
    spec = SupervisorSpec(
        "app",
        [ChildSpec("w", crash_after(1.0)), ChildSpec("idle", sleeper())],
        backoff=Backoff(initial=5.0, jitter=0.0),
    )
    async with supervisor_tree(spec) as tree:
        await trio.sleep(2.0)
        runs = runs_from_history(tree.history)
    assert summary(runs) == {
        "w": [(0.0, 1.0, K.STARTED, K.CRASHED, "FakeCrash('crashed after 1s (run 1)')")],
        "idle": [(0.0, None, K.STARTED, None, None)],
    }


async def test_nested_supervisors_come_before_their_children(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # "db" gives up on its second restart in 10 s; the root restarts a fresh "db", whose
    # children start anew (STARTED, restarts 0), as a new OTP supervisor's would.
    spec = SupervisorSpec(
        "app",
        [
            SupervisorSpec(
                "db",
                [ChildSpec("conn", crash_after(1.0, starts=2)), ChildSpec("pool", sleeper())],
                max_restarts=1,
                max_seconds=10.0,
                backoff=None,
            ),
            ChildSpec("web", sleeper()),
        ],
        backoff=None,
    )
    history = await history_of(spec, 2.5)
    runs = runs_from_history(history)
    # First seen: db/conn, db/pool, db, web (a supervisor starts after its children).
    assert list(runs) == ["db", "db/conn", "db/pool", "web"]
    gave_up = "RestartIntensityExceeded(\"supervisor 'db' gave up: more than 1 restarts"
    db = summary(runs)["db"]
    assert [run[:4] for run in db] == [
        (0.0, 2.0, K.STARTED, K.CRASHED),
        (2.0, 2.5, K.RESTARTED, K.TERMINATED),
    ]
    assert db[0][4] is not None
    assert db[0][4].startswith(gave_up)
    assert [run[:4] for run in summary(runs)["db/conn"]] == [
        (0.0, 1.0, K.STARTED, K.CRASHED),
        (1.0, 2.0, K.RESTARTED, K.CRASHED),
        (2.0, 2.5, K.STARTED, K.TERMINATED),
    ]
    assert [run[:4] for run in summary(runs)["db/pool"]] == [
        (0.0, 2.0, K.STARTED, K.EXITED),
        (2.0, 2.5, K.STARTED, K.TERMINATED),
    ]


async def test_a_run_older_than_the_bounded_history_starts_at_its_oldest_event(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec(
        "app", [ChildSpec("slow", slow_stop(3.0), shutdown_timeout=1.0), ChildSpec("w", sleeper())]
    )
    async with supervisor_tree(spec, history_size=2) as tree:
        await trio.sleep(1.0)
        await tree.terminate_child("slow")
        history = tree.history
    # Only STOP_TIMEOUT (at 2.0) and TERMINATED (at 4.0) are left; both STARTED are gone.
    assert [(event.kind, event.time) for event in history] == [
        (K.STOP_TIMEOUT, 2.0),
        (K.TERMINATED, 4.0),
    ]
    assert summary(runs_from_history(history)) == {
        "slow": [(2.0, 4.0, None, K.TERMINATED, None)],
    }


def test_root_hook_reload_and_health_events_make_no_rows() -> None:
    boom = ValueError("boom")
    history = [
        Event(K.STARTED, "w", 0.0),
        Event(K.HEALTH_CHANGED, "w", 1.0, detail="healthy -> unhealthy"),
        Event(K.HEALTH_CHANGED, "only-health", 1.0, detail="healthy -> unhealthy"),
        Event(K.RELOADED, "config", 2.0),
        Event(K.INTENSITY_EXCEEDED, "", 2.5, error=boom),
        Event(K.SHUTDOWN_STARTED, "", 3.0, detail="requested"),
        Event(K.TERMINATED, "w", 3.0, detail="shutdown"),
        Event(K.HOOK_FINISHED, "supervisor", 3.0, detail="ok in 0.000s"),
        Event(K.SHUTDOWN_FINISHED, "", 3.0),
    ]
    assert summary(runs_from_history(history)) == {
        "w": [(0.0, 3.0, K.STARTED, K.TERMINATED, None)],
    }


def test_marks_alone_give_a_row_with_no_runs() -> None:
    history = [
        Event(K.STARTED, "a", 0.0),
        Event(K.REMOVED, "gone", 1.0, detail="delete_child"),
        # A start while a run is open (not something a tree emits): the open run ends there.
        Event(K.STARTED, "a", 2.0),
    ]
    runs = runs_from_history(history)
    assert summary(runs) == {
        "a": [(0.0, 2.0, K.STARTED, None, None), (2.0, None, K.STARTED, None, None)],
        "gone": [],
    }


def test_empty_history_gives_no_runs() -> None:
    assert runs_from_history([]) == {}


@pytest.mark.parametrize(
    ("history", "message"),
    [
        (
            None,
            r"^runs_from_history: history must be a sequence of Event, such as tree\.history"
            r" \(got NoneType\)$",
        ),
        (
            "STARTED",
            r"^runs_from_history: history must be a sequence of Event, such as tree\.history"
            r" \(got str\)$",
        ),
        (
            [Event(K.STARTED, "a", 0.0), ("STARTED", "b", 0.0)],
            r"^runs_from_history: history\[1\] must be an Event"
            r" \(got tuple: \('STARTED', 'b', 0\.0\)\); pass tree\.history$",
        ),
    ],
    ids=["none", "string", "not-an-event"],
)
def test_runs_from_history_rejects_what_is_not_a_history(history: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        runs_from_history(history)  # type: ignore[arg-type]  # wrong on purpose


# ----------------------------------------------------------------- restart_timeline


def only_axes(figure: Figure) -> Axes:
    (ax,) = figure.axes
    return ax


def bars(ax: Axes, gid: str) -> list[tuple[float, float, float]]:
    """(left, width, row) of the bars with ``gid``, in drawing order."""
    out = []
    for patch in ax.patches:
        if patch.get_gid() == gid:
            assert isinstance(patch, Rectangle)
            row = patch.get_y() + patch.get_height() / 2
            out.append((patch.get_x(), patch.get_width(), round(row, 9)))
    return out


def marks(ax: Axes, gid: str) -> list[tuple[float, float]]:
    lines = [line for line in ax.lines if line.get_gid() == gid]
    if not lines:
        return []
    (line,) = lines
    return list(zip(xdata(line), np.asarray(line.get_ydata(), dtype=float).tolist(), strict=True))


def xdata(line: Line2D) -> list[float]:
    values: list[float] = np.asarray(line.get_xdata(), dtype=float).tolist()
    return values


def texts(ax: Axes, gid: str | None = None) -> list[str]:
    return [text.get_text() for text in ax.texts if gid is None or text.get_gid() == gid]


def legend(ax: Axes) -> list[str]:
    drawn = ax.get_legend()
    assert drawn is not None
    return [text.get_text() for text in drawn.get_texts()]


def labels(ax: Axes) -> list[str]:
    return [label.get_text() for label in ax.get_yticklabels()]


def saved(figure: Figure, path: Path) -> bytes:
    figure.savefig(path, format="png", dpi=50)
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 1000
    return data


async def test_timeline_of_one_for_all(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    history = await history_of(pipeline(Strategy.ONE_FOR_ALL), 5.0)
    figure = restart_timeline(history)
    ax = only_axes(figure)
    assert labels(ax) == ["reader", "parser", "writer"]
    assert ax.get_ylim() == (2.5, -0.5)  # first row on top
    # Per row: the first run, the hatched wait for the 0.5 s backoff, the restarted run.
    assert bars(ax, "run") == [
        (0.0, 2.0, 0.0),
        (2.5, 2.5, 0.0),
        (0.0, 2.0, 1.0),
        (2.5, 2.5, 1.0),
        (0.0, 2.0, 2.0),
        (2.5, 2.5, 2.0),
    ]
    assert bars(ax, "waiting") == [(2.0, 0.5, 0.0), (2.0, 0.5, 1.0), (2.0, 0.5, 2.0)]
    run_colors = [patch.get_facecolor() for patch in ax.patches if patch.get_gid() == "run"]
    assert run_colors == [to_rgba("tab:blue"), to_rgba("tab:green")] * 3
    assert marks(ax, "crash") == [(2.0, 1.0)]
    assert marks(ax, "exit") == [(2.0, 0.0), (2.0, 2.0)]
    assert marks(ax, "terminated") == [(5.0, 0.0), (5.0, 1.0), (5.0, 2.0)]
    assert marks(ax, "stop-timeout") == []
    assert texts(ax, "error") == ["FakeCrash"]
    assert legend(ax) == [
        "run",
        "waiting to restart",
        "restarted run",
        "crash",
        "clean exit / stopped by supervisor",
        "terminated",
    ]
    assert ax.get_title() == "restart timeline: 3 children, 1 crash, 3 restarts"
    assert ax.get_xlabel() == "seconds"
    assert ax.get_xlim() == pytest.approx((0.0, 5.1))
    saved(figure, tmp_path / "one_for_all.png")


async def test_timeline_of_one_for_one_waits_for_the_crashed_child_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    history = await history_of(pipeline(Strategy.ONE_FOR_ONE), 5.0)
    ax = only_axes(restart_timeline(history, title="", annotate_errors=False))
    assert bars(ax, "run") == [(0.0, 5.0, 0.0), (0.0, 2.0, 1.0), (2.5, 2.5, 1.0), (0.0, 5.0, 2.0)]
    assert bars(ax, "waiting") == [(2.0, 0.5, 1.0)]
    assert marks(ax, "crash") == [(2.0, 1.0)]
    assert marks(ax, "exit") == []
    assert texts(ax) == []
    assert ax.get_title() == ""


async def test_timeline_shows_a_pending_restart_up_to_until(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec(
        "app", [ChildSpec("w", crash_after(1.0))], backoff=Backoff(initial=5.0, jitter=0.0)
    )
    async with supervisor_tree(spec) as tree:
        await trio.sleep(2.0)
        history = tree.history
    assert [event.time for event in history] == [0.0, 1.0, 1.0]
    ax = only_axes(restart_timeline(history, until=3.0))
    assert bars(ax, "run") == [(0.0, 1.0, 0.0)]
    assert bars(ax, "waiting") == [(1.0, 2.0, 0.0)]
    assert ax.get_xlim() == pytest.approx((0.0, 3.06))
    with pytest.raises(
        ValueError,
        match=(
            r"^restart_timeline: until must not be before the last event of the history"
            r" \(got until=0\.5, last event at 1\.0\); leave it out to end there$"
        ),
    ):
        restart_timeline(history, until=0.5)


async def test_timeline_marks_a_root_that_gave_up(autojump_clock: trio.testing.MockClock) -> None:
    spec = SupervisorSpec(
        "app", [ChildSpec("w", crash_after(1.0))], max_restarts=2, max_seconds=10.0, backoff=None
    )
    with pytest.raises(RestartIntensityExceeded):
        async with supervisor_tree(spec) as tree:
            await trio.sleep(10.0)
    ax = only_axes(restart_timeline(tree.history))
    # No backoff: no waiting; the last crash is not restarted.
    assert bars(ax, "run") == [(0.0, 1.0, 0.0), (1.0, 1.0, 0.0), (2.0, 1.0, 0.0)]
    assert bars(ax, "waiting") == []
    assert marks(ax, "crash") == [(1.0, 0.0), (2.0, 0.0), (3.0, 0.0)]
    (line,) = [line for line in ax.lines if line.get_gid() == "gave-up"]
    assert xdata(line) == [3.0, 3.0]
    assert "root gave up" in legend(ax)
    assert texts(ax, "error") == ["FakeCrash"] * 3


async def test_timeline_marks_a_nested_supervisor_that_gave_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec(
        "app",
        [
            SupervisorSpec(
                "db",
                [ChildSpec("conn", crash_after(1.0, starts=2))],
                max_restarts=1,
                max_seconds=10.0,
                backoff=None,
            ),
        ],
        backoff=None,
    )
    history = await history_of(spec, 2.5)
    ax = only_axes(restart_timeline(history))
    assert labels(ax) == ["db", "db/conn"]
    assert marks(ax, "gave-up") == [(2.0, 0.0)]
    assert marks(ax, "crash") == [(2.0, 0.0), (1.0, 1.0), (2.0, 1.0)]
    assert texts(ax, "error") == ["RestartIntensityExceeded", "FakeCrash", "FakeCrash"]
    assert "supervisor gave up" in legend(ax)


async def test_timeline_marks_a_stop_timeout(autojump_clock: trio.testing.MockClock) -> None:
    spec = SupervisorSpec("app", [ChildSpec("slow", slow_stop(3.0), shutdown_timeout=1.0)])
    async with supervisor_tree(spec) as tree:
        await tree.terminate_child("slow")  # asked at 0, times out at 1, stops at 3
        await trio.sleep(1.0)
    ax = only_axes(restart_timeline(tree.history))
    assert bars(ax, "run") == [(0.0, 3.0, 0.0)]
    assert marks(ax, "stop-timeout") == [(1.0, 0.0)]
    assert marks(ax, "terminated") == [(3.0, 0.0)]
    assert bars(ax, "waiting") == []  # terminated on purpose: not waiting for anything
    assert "stop timeout" in legend(ax)


async def test_timeline_marks_a_failed_start(autojump_clock: trio.testing.MockClock) -> None:
    starts = 0

    async def connect(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal starts
        starts += 1
        if starts == 2:
            raise OSError("port taken")
        task_status.started()
        await trio.sleep(1.0)
        raise ValueError("lost connection")

    spec = SupervisorSpec(
        "app", [ChildSpec("conn", connect)], backoff=Backoff(initial=0.5, jitter=0.0)
    )
    history = await history_of(spec, 4.0)
    ax = only_axes(restart_timeline(history))
    # The failed start at 1.5 is a bar of width zero with its crash mark.
    assert bars(ax, "run") == [(0.0, 1.0, 0.0), (1.5, 0.0, 0.0), (2.5, 1.0, 0.0)]
    assert marks(ax, "crash") == [(1.0, 0.0), (1.5, 0.0), (3.5, 0.0)]
    assert texts(ax, "error") == ["ValueError", "OSError", "ValueError"]
    # Each crash waits for its backoff (0.5 s, 1 s, 2 s); the last wait is cut by the
    # shutdown at 4.0.
    assert bars(ax, "waiting") == [(1.0, 0.5, 0.0), (1.5, 1.0, 0.0), (3.5, 0.5, 0.0)]
    assert ax.get_title() == "restart timeline: 1 child, 3 crashes, 1 restart"


def test_timeline_counts_from_the_oldest_event_by_default() -> None:
    # Trio's real clock starts at an arbitrary offset.
    history = [Event(K.STARTED, "w", 1000.0), Event(K.EXITED, "w", 1002.0, detail="returned")]
    ax = only_axes(restart_timeline(history))
    assert bars(ax, "run") == [(0.0, 2.0, 0.0)]
    assert ax.get_xlabel() == "seconds since 1000 (trio clock)"
    ax = only_axes(restart_timeline(history, origin=999.0, until=1003.0))
    assert bars(ax, "run") == [(1.0, 2.0, 0.0)]
    assert marks(ax, "exit") == [(3.0, 0.0)]
    assert ax.get_xlim() == pytest.approx((0.0, 4.08))


def test_timeline_draws_on_the_axes_it_is_given(tmp_path: Path) -> None:
    history = [Event(K.STARTED, "w", 0.0), Event(K.CRASHED, "w", 1.0, error=KeyError("k"))]
    figure = Figure()
    left, right = figure.subplots(1, 2)
    assert restart_timeline(history, ax=right, title="mine") is figure
    assert len(left.patches) == 0
    assert bars(right, "run") == [(0.0, 1.0, 0.0)]
    assert right.get_title() == "mine"
    # On a subfigure, the figure returned is the one that can be saved.
    top = figure.add_subfigure(figure.add_gridspec(2, 1)[0])
    ax = top.add_subplot()
    assert restart_timeline(history, ax=ax) is figure
    saved(figure, tmp_path / "mine.png")


def test_timeline_of_an_empty_history_says_so(tmp_path: Path) -> None:
    figure = restart_timeline([])
    ax = only_axes(figure)
    assert texts(ax) == ["no child events in the history"]
    assert len(ax.patches) == 0
    assert len(ax.lines) == 0
    assert ax.get_legend() is None
    assert ax.get_title() == "restart timeline: no children"
    assert ax.get_xlim() == (0.0, 1.0)
    saved(figure, tmp_path / "empty.png")
    # Events, but none of a child: the same.
    only_root = [Event(K.SHUTDOWN_STARTED, "", 3.0), Event(K.SHUTDOWN_FINISHED, "", 3.5)]
    ax = only_axes(restart_timeline(only_root, title=""))
    assert texts(ax) == ["no child events in the history"]
    assert ax.get_title() == ""


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"until": math.nan},
            ValueError,
            r"^restart_timeline: until must be finite or None \(got nan\)$",
        ),
        (
            {"origin": "0"},
            TypeError,
            r"^restart_timeline: origin must be a finite number or None \(got '0'\)$",
        ),
        (
            {"until": True},
            TypeError,
            r"^restart_timeline: until must be a finite number or None \(got True\)$",
        ),
        (
            {"ax": "left"},
            TypeError,
            r"^restart_timeline: ax must be a matplotlib Axes or None \(got str\);"
            r" pass one from fig\.add_subplot\(\), or leave it out for a new figure$",
        ),
        (
            {"history": [None]},
            TypeError,
            r"^restart_timeline: history\[0\] must be an Event \(got NoneType: None\);"
            r" pass tree\.history$",
        ),
    ],
    ids=["nan-until", "str-origin", "bool-until", "bad-ax", "bad-history"],
)
def test_timeline_rejects_bad_arguments(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    history = kwargs.pop("history", [Event(K.STARTED, "w", 0.0)])
    with pytest.raises(error, match=message):
        restart_timeline(history, **kwargs)  # type: ignore[arg-type]  # wrong on purpose


# ----------------------------------------------------------------- shutdown_gantt


class Boom(Exception):
    pass


def takes(seconds: float) -> Callable[[], Awaitable[None]]:
    async def hook() -> None:
        await trio.sleep(seconds)

    return hook


async def boom() -> None:
    await trio.sleep(0.25)
    raise Boom("flush failed")


async def bad_shutdown() -> ShutdownReport:
    """A shutdown with a timed-out hook, a failing one, the deadline and a skipped band."""
    hooks = [
        ShutdownHook("stop-accepting", takes(1.0), priority=Band.STOP_ACCEPTING),
        ShutdownHook("drain-queue", takes(9.0), priority=Band.DRAIN, timeout=2.0),
        ShutdownHook("flush", boom, priority=Band.FLUSH),
        ShutdownHook("close-db", takes(60.0), priority=Band.CLOSE),
        ShutdownHook("cleanup", takes(0.1), priority=Band.CLEANUP),
    ]
    spec = SupervisorSpec("app", [ChildSpec("worker", slow_stop(1.5))])
    async with supervisor_tree(spec, hooks=hooks, shutdown_deadline=6.0) as tree:
        pass
    assert tree.shutdown_report is not None
    return tree.shutdown_report


async def test_hook_bars_place_each_hook_in_time(autojump_clock: trio.testing.MockClock) -> None:
    report = await bad_shutdown()
    bars_ = hook_bars(report)
    # The built-in "supervisor" hook is registered before the hooks passed to the tree.
    placed = [
        (b.name, b.priority, b.band, b.band_name, b.status, b.start, b.duration) for b in bars_
    ]
    assert placed == [
        ("stop-accepting", 0, 0, "STOP_ACCEPTING", "ok", 0.0, 1.0),
        ("supervisor", 10, 1, "DRAIN", "ok", 1.0, 1.5),
        ("drain-queue", 10, 1, "DRAIN", "timed_out", 1.0, 2.0),
        ("flush", 20, 2, "FLUSH", "error", 3.0, 0.25),
        ("close-db", 30, 3, "CLOSE", "cancelled", 3.25, 2.75),
        ("cleanup", 40, 4, "CLEANUP", "skipped", None, 0.0),
    ]
    assert isinstance(bars_[3].error, Boom)
    assert all(isinstance(bar, HookBar) for bar in bars_)


async def test_gantt_of_a_shutdown_cut_by_its_deadline(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    report = await bad_shutdown()
    figure = shutdown_gantt(report, deadline=6.0)
    ax = only_axes(figure)
    assert labels(ax) == [
        "STOP_ACCEPTING · stop-accepting",
        "DRAIN · supervisor",
        "DRAIN · drain-queue",
        "FLUSH · flush",
        "CLOSE · close-db",
        "CLEANUP · cleanup",
    ]
    assert bars(ax, "hook") == [
        (0.0, 1.0, 0.0),
        (1.0, 1.5, 1.0),
        (1.0, 2.0, 2.0),
        (3.0, 0.25, 3.0),
        (3.25, 2.75, 4.0),
    ]
    colors = [patch.get_facecolor() for patch in ax.patches if patch.get_gid() == "hook"]
    assert colors == [
        to_rgba(name) for name in ["tab:green", "tab:green", "tab:orange", "tab:red", "tab:purple"]
    ]
    # The time each band took, shaded.
    spans = [patch for patch in ax.patches if patch.get_gid() == "band"]
    assert all(isinstance(span, Rectangle) for span in spans)
    assert [(span.get_x(), span.get_width()) for span in spans if isinstance(span, Rectangle)] == [
        (0.0, 1.0),
        (1.0, 2.0),
        (3.0, 0.25),
        (3.25, 2.75),
    ]
    assert texts(ax, "skipped") == [" skipped"]
    assert texts(ax, "error") == ["Boom: flush failed"]
    (deadline,) = [line for line in ax.lines if line.get_gid() == "deadline"]
    assert xdata(deadline) == [6.0, 6.0]
    assert legend(ax) == [
        "time a band took",
        "ok",
        "timed out",
        "error",
        "cancelled (deadline or forced)",
        "skipped",
        "deadline (6s)",
    ]
    assert ax.get_title() == "shutdown (body ended): 6.000s, deadline exceeded"
    assert ax.get_xlabel() == "seconds since the shutdown started"
    assert ax.get_xlim() == pytest.approx((0.0, 6.9))
    saved(figure, tmp_path / "gantt.png")


async def test_gantt_infers_the_deadline_from_the_report(
    autojump_clock: trio.testing.MockClock,
) -> None:
    report = await bad_shutdown()
    ax = only_axes(shutdown_gantt(report, title="late"))
    (deadline,) = [line for line in ax.lines if line.get_gid() == "deadline"]
    assert xdata(deadline) == [6.0, 6.0]
    assert legend(ax)[-1] == "deadline (inferred)"
    assert ax.get_title() == "late"


Status = Literal["ok", "error", "timed_out", "cancelled", "skipped"]


def result(
    name: str, priority: int, status: Status, start: float | None, took: float
) -> HookResult:
    return HookResult(name, priority, status, took, None, start)


def test_gantt_of_a_forced_shutdown_with_a_band_of_its_own() -> None:
    # Built by hand, at an arbitrary clock offset, as a real clock gives.
    report = ShutdownReport(
        reason="signal SIGTERM",
        started=500.0,
        duration=2.0,
        forced=True,
        hooks=[
            result("supervisor", 10, "ok", 500.0, 0.0),
            result("export", 55, "cancelled", 500.0, 2.0),
        ],
    )
    assert [(bar.band, bar.band_name, bar.start) for bar in hook_bars(report)] == [
        (1, "DRAIN", 0.0),
        (5, "band 5", 0.0),
    ]
    ax = only_axes(shutdown_gantt(report))
    assert labels(ax) == ["DRAIN · supervisor", "band 5 · export"]
    # A hook that took no time is still a visible line of its colour.
    supervisor = next(patch for patch in ax.patches if patch.get_gid() == "hook")
    assert isinstance(supervisor, Rectangle)
    assert (supervisor.get_width(), supervisor.get_linewidth()) == (0.0, 2.0)
    assert supervisor.get_edgecolor() == to_rgba("tab:green")
    assert [line.get_gid() for line in ax.lines] == ["forced", "separator"]
    assert legend(ax)[-1] == "forced"
    assert ax.get_title() == "shutdown (signal SIGTERM): 2.000s, forced"


def test_gantt_shortens_long_error_messages_and_titles_an_ok_shutdown() -> None:
    long = HookResult("flush", 20, "error", 0.5, Boom("x" * 100), 0.0)
    report = ShutdownReport("requested", 0.0, 0.5, False, [long])
    ax = only_axes(shutdown_gantt(report))
    (message,) = texts(ax, "error")
    assert message == "Boom: " + "x" * 41 + "…"
    assert len(message) == 48
    assert ax.get_title() == "shutdown (requested): 0.500s, not ok"
    ok = ShutdownReport("requested", 0.0, 0.5, False, [result("a", 0, "ok", 0.0, 0.5)])
    assert only_axes(shutdown_gantt(ok)).get_title() == "shutdown (requested): 0.500s, ok"


def test_gantt_of_a_report_with_no_hooks(tmp_path: Path) -> None:
    figure = shutdown_gantt(ShutdownReport("requested", 0.0, 0.0, False, []))
    ax = only_axes(figure)
    assert texts(ax) == ["no hooks in the report"]
    assert len(ax.patches) == 0
    assert ax.get_xlim() == (0.0, 1.0)
    saved(figure, tmp_path / "no-hooks.png")


def test_gantt_draws_on_the_axes_it_is_given() -> None:
    report = ShutdownReport("requested", 0.0, 1.0, False, [result("a", 0, "ok", 0.0, 1.0)])
    figure = Figure()
    ax = figure.add_subplot()
    assert shutdown_gantt(report, ax=ax) is figure
    assert bars(ax, "hook") == [(0.0, 1.0, 0.0)]


@pytest.mark.parametrize(
    ("report", "kwargs", "error", "message"),
    [
        (
            None,
            {},
            TypeError,
            r"^shutdown_gantt: report must be a ShutdownReport, such as tree\.shutdown_report"
            r" \(got NoneType \(the shutdown has not run yet\)\)$",
        ),
        (
            "report",
            {},
            TypeError,
            r"^shutdown_gantt: report must be a ShutdownReport, such as tree\.shutdown_report"
            r" \(got str\)$",
        ),
        (
            ShutdownReport("requested", 0.0, 0.0, False, []),
            {"deadline": -1.0},
            ValueError,
            r"^shutdown_gantt: deadline must be >= 0 and finite or None \(got -1\.0\)$",
        ),
        (
            ShutdownReport("requested", 0.0, 0.0, False, []),
            {"deadline": math.inf},
            ValueError,
            r"^shutdown_gantt: deadline must be >= 0 and finite or None \(got inf\)$",
        ),
        (
            ShutdownReport("requested", 0.0, 0.0, False, []),
            {"ax": Figure()},
            TypeError,
            r"^shutdown_gantt: ax must be a matplotlib Axes or None \(got Figure\);",
        ),
    ],
    ids=["none", "string", "negative-deadline", "infinite-deadline", "figure-as-ax"],
)
def test_gantt_rejects_bad_arguments(
    report: object, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        shutdown_gantt(report, **kwargs)  # type: ignore[arg-type]  # wrong on purpose


def test_hook_bars_rejects_what_is_not_a_report() -> None:
    with pytest.raises(
        TypeError,
        match=r"^hook_bars: report must be a ShutdownReport, such as tree\.shutdown_report"
        r" \(got dict\)$",
    ):
        hook_bars({})  # type: ignore[arg-type]  # wrong on purpose


# ----------------------------------------------------------------- the module itself


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )


def test_without_matplotlib_the_import_says_how_to_install_it() -> None:
    assert import_message_without("trio_supervise.plot", "matplotlib") == (
        "trio_supervise.plot needs matplotlib, which is not installed;"
        " install the extra: pip install 'trio-supervise[plot]'\n"
    )


def test_drawing_never_touches_pyplot() -> None:
    # pyplot holds global state and picks a GUI backend: a server must not get it.
    result = run_python(
        "import io, sys\n"
        "from trio_supervise import Event, EventKind\n"
        "from trio_supervise.plot import restart_timeline\n"
        "history = [Event(EventKind.STARTED, 'w', 0.0), Event(EventKind.EXITED, 'w', 1.0)]\n"
        "restart_timeline(history).savefig(io.BytesIO(), format='png')\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    assert (result.stdout, result.stderr) == ("False\n", "")


def test_plot_exports() -> None:
    import trio_supervise.plot as plot

    assert sorted(plot.__all__) == [
        "HookBar",
        "Run",
        "hook_bars",
        "restart_timeline",
        "runs_from_history",
        "shutdown_gantt",
    ]
    for name in plot.__all__:
        assert getattr(plot, name).__module__ == "trio_supervise.plot"
