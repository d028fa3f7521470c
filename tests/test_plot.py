"""The optional plot module: the runs behind the pictures exactly, then the artists drawn.

Trees run in virtual time, so every run's start and end is an exact number. The pictures
are checked through their artists (each carries a ``gid``), not their pixels; each is also
saved as a PNG once to make sure it renders.
"""

from __future__ import annotations

import io
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
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure, SubFigure
from matplotlib.legend import Legend
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.text import Text
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
# Half a bar's height: crash labels are written above the bar.
BAR_TOP = 0.3

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


def drawn(ax: Axes) -> Axes:
    """``ax`` once its figure is drawn: the labels next to marks and bars are placed then."""
    figure = ax.figure
    while isinstance(figure, SubFigure):
        figure = figure.figure
    assert isinstance(figure, Figure)
    figure.draw_without_rendering()
    return ax


def texts(ax: Axes, gid: str | None = None) -> list[str]:
    written = [
        *drawn(ax).texts,
        *(child for artist in ax.artists for child in artist.get_children()),
    ]
    return [
        text.get_text()
        for text in written
        if isinstance(text, Text) and (gid is None or text.get_gid() == gid)
    ]


def the_legend(ax: Axes) -> Legend:
    """The one legend of the figure of ``ax`` (on the figure, or on one of its axes)."""
    figure = ax.figure
    assert isinstance(figure, Figure)
    legends = [*figure.legends, *(axes.get_legend() for axes in figure.axes)]
    (one,) = [drawn for drawn in legends if drawn is not None]
    return one


def legend(ax: Axes) -> list[str]:
    return [text.get_text() for text in the_legend(ax).get_texts()]


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
        "restarted run",
        "waiting to restart",
        "crash",
        "clean exit / stopped by supervisor",
        "terminated",
        "shutdown (body ended)",
    ]
    assert ax.get_title() == "restart timeline: 3 children, 1 crash, 3 restarts"
    assert ax.get_xlabel() == "seconds since the first event"
    left, right = ax.get_xlim()
    assert left == 0.0
    assert 5.0 < right < 5.5  # room for the marks at the last event
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
    left, right = ax.get_xlim()
    assert left == 0.0
    assert 3.0 < right < 3.3
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


def test_x_axis_label_on_the_real_and_the_mock_clock() -> None:
    # Trio's real clock starts at an arbitrary offset: a reader cannot use "seconds since
    # 109863", so the axis counts from the first event on either clock.
    async def main() -> list[Event]:
        spec = SupervisorSpec("app", [ChildSpec("w", sleeper())])
        async with supervisor_tree(spec) as tree:
            pass  # no sleep: the shutdown stops the child at once
        return tree.history

    real = trio.run(main)
    assert real[0].time > 1.0  # the real clock's offset
    ax = only_axes(restart_timeline(real))
    assert ax.get_xlabel() == "seconds since the first event"
    ((left, _, _),) = bars(ax, "run")
    assert left == 0.0
    mock = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert mock[0].time == 0.0
    assert only_axes(restart_timeline(mock)).get_xlabel() == "seconds since the first event"
    # An origin of the caller's: the axis says which trio time it is.
    history = [Event(K.STARTED, "w", 1000.0), Event(K.EXITED, "w", 1002.0, detail="returned")]
    ax = only_axes(restart_timeline(history, origin=999.0, until=1003.0))
    assert ax.get_xlabel() == "seconds since trio time 999"
    assert bars(ax, "run") == [(1.0, 2.0, 0.0)]
    assert marks(ax, "exit") == [(3.0, 0.0)]
    left, right = ax.get_xlim()
    assert left == 0.0
    assert 4.0 < right < 4.4


def looping(seconds: float) -> Callable[[], Awaitable[None]]:
    """A child that crashes with the same error ``seconds`` into every run."""

    async def target() -> None:
        await trio.sleep(seconds)
        raise RuntimeError("upstream refused the connection")

    return target


def crash_loop() -> SupervisorSpec:
    """``loop`` crashes 0.3 s into every run and is restarted 0.2 s later: every 0.5 s."""
    return SupervisorSpec(
        "app",
        [ChildSpec("loop", looping(0.3)), ChildSpec("once", crash_after(3.0, starts=1))],
        max_restarts=100,
        max_seconds=5.0,
        backoff=Backoff(initial=0.2, maximum=0.2, jitter=0.0),
    )


def rendered(figure: Figure) -> RendererAgg:
    """Draw ``figure`` with Agg, as savefig would; its renderer measures what was drawn."""
    canvas = FigureCanvasAgg(figure)
    # matplotlib's stubs leave the Agg canvas untyped.
    canvas.draw()  # type: ignore[no-untyped-call]
    renderer: RendererAgg = canvas.get_renderer()  # type: ignore[no-untyped-call]
    return renderer


def row_texts(ax: Axes, gid: str) -> list[Text]:
    """The texts placed next to marks and bars at the last draw."""
    return [
        child
        for artist in ax.artists
        for child in artist.get_children()
        if isinstance(child, Text) and child.get_gid() == gid
    ]


def assert_apart_and_inside(ax: Axes, gid: str, renderer: RendererAgg) -> None:
    """No two texts ``gid`` overlap, and each is within the axes, left to right."""
    boxes = [text.get_window_extent(renderer) for text in row_texts(ax, gid)]
    assert boxes != []
    for index, box in enumerate(boxes):
        assert ax.bbox.x0 <= box.x0
        assert box.x1 <= ax.bbox.x1
        for other in boxes[index + 1 :]:
            assert not box.overlaps(other)


async def test_a_crash_loop_is_labelled_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    history = await history_of(crash_loop(), 6.0)
    figure = restart_timeline(history)
    ax = only_axes(figure)
    assert marks(ax, "crash")[:3] == [(0.3, 0.0), (0.8, 0.0), (1.3, 0.0)]
    assert len(marks(ax, "crash")) == 13
    # Twelve labels 0.5 s apart would overprint ("RuntimeErrorRuntimeError..."): one says
    # it for all, at the first crash; the lone crash of the other row keeps its own.
    assert texts(ax, "error") == ["RuntimeError ×12", "FakeCrash"]
    (loop, once) = row_texts(ax, "error")
    assert loop.get_position() == pytest.approx((0.3 + 3.0 * per_point(ax), -BAR_TOP))
    assert once.get_position()[1] == pytest.approx(1.0 - BAR_TOP)
    assert ax.get_title() == "restart timeline: 2 children, 13 crashes, 13 restarts"
    assert_apart_and_inside(ax, "error", rendered(figure))
    # The first row has room above it for its label.
    assert ax.get_ylim() == (1.5, -0.75)
    saved(figure, tmp_path / "crash-loop.png")


def per_point(ax: Axes) -> float:
    """How much of the x axis of ``ax`` one point covers, as drawn."""
    left, right = ax.get_xlim()
    figure = ax.figure
    assert isinstance(figure, Figure)
    return float((right - left) / (ax.bbox.width / figure.dpi * 72.0))


def test_labels_of_two_kinds_in_one_group_name_both() -> None:
    history = [Event(K.STARTED, "w", 0.0)]
    for index, time in enumerate([1.0, 1.05, 1.1, 1.15]):
        error = OSError("port") if index == 2 else ValueError("bad")
        history.append(Event(K.CRASHED, "w", time, error=error))
        history.append(Event(K.RESTARTED, "w", time + 0.01, restarts=index + 1))
    history.append(Event(K.TERMINATED, "w", 10.0, detail="shutdown"))
    assert texts(only_axes(restart_timeline(history)), "error") == ["ValueError ×3, OSError"]


def test_a_label_at_the_right_edge_is_written_before_its_mark() -> None:
    history = [
        Event(K.STARTED, "w", 0.0),
        Event(K.CRASHED, "w", 10.0, error=ConnectionResetError("peer")),
    ]
    figure = restart_timeline(history)
    ax = only_axes(figure)
    renderer = rendered(figure)
    (label,) = row_texts(ax, "error")
    assert label.get_text() == "ConnectionResetError"
    assert label.get_horizontalalignment() == "right"
    assert label.get_position()[0] < 10.0
    assert_apart_and_inside(ax, "error", renderer)


async def test_labels_fit_the_layout_of_the_whole_figure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A panel drawn later (long row labels, a long legend) narrows the first one: its
    # labels are placed when the figure is drawn, for the axes as they end up.
    history = await history_of(crash_loop(), 6.0)
    report = await bad_shutdown()
    figure = Figure(figsize=(8, 6), layout="constrained")
    top, bottom = figure.subplots(2, 1)
    restart_timeline(history, ax=top)
    shutdown_gantt(report, ax=bottom, deadline=6.0)
    renderer = rendered(figure)
    assert_apart_and_inside(top, "error", renderer)
    assert_apart_and_inside(bottom, "error", renderer)
    assert_apart_and_inside(bottom, "skipped", renderer)
    # Saved at another dpi, they are placed anew.
    figure.savefig(io.BytesIO(), format="png", dpi=40)
    assert_apart_and_inside(top, "error", rendered(figure))


async def test_the_shutdown_is_marked_on_the_timeline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hooks = [ShutdownHook("drain-delay", takes(2.0), priority=Band.STOP_ACCEPTING)]
    spec = SupervisorSpec("app", [ChildSpec("worker", slow_stop(0.5))])
    async with supervisor_tree(spec, hooks=hooks) as tree:
        await trio.sleep(1.0)
    ax = only_axes(restart_timeline(tree.history))
    # From the end of the body (1.0) through the drain delay (2 s) and the worker's
    # 0.5 s stop: the worker ran on, in the shutdown, until the DRAIN band stopped it.
    (span,) = [patch for patch in ax.patches if patch.get_gid() == "shutdown"]
    assert isinstance(span, Rectangle)
    assert (span.get_x(), span.get_width()) == (1.0, 2.5)
    assert span.get_linestyle() == ":"  # dotted where it started and where it ended
    assert bars(ax, "run") == [(0.0, 3.5, 0.0)]
    assert legend(ax)[-1] == "shutdown (body ended)"


def test_a_long_shutdown_reason_is_wrapped_in_the_legend() -> None:
    reason = "root supervisor failed: supervisor '' (the root) gave up: more than 1 restarts"
    history = [
        Event(K.STARTED, "w", 0.0),
        Event(K.SHUTDOWN_STARTED, "", 1.0, detail=reason),
        Event(K.TERMINATED, "w", 1.0, detail="shutdown"),
        Event(K.SHUTDOWN_FINISHED, "", 1.0),
    ]
    entry = legend(only_axes(restart_timeline(history)))[-1]
    assert entry == "shutdown (root supervisor failed:\nsupervisor '' (the root) gave up: …"


async def test_panels_get_one_legend_and_one_x_label(
    autojump_clock: trio.testing.MockClock,
) -> None:
    figure = Figure(figsize=(9, 8), layout="constrained")
    axes = figure.subplots(3, 1, sharex=True)
    for ax, strategy in zip(axes, Strategy, strict=True):
        restart_timeline(await history_of(pipeline(strategy), 5.0), ax=ax, title=strategy.name)
    assert len(figure.legends) == 1
    assert [ax.get_legend() for ax in axes] == [None, None, None]
    # The union of what the panels show: ONE_FOR_ONE has no clean exit, the others do.
    assert legend(axes[0]) == [
        "run",
        "restarted run",
        "waiting to restart",
        "crash",
        "clean exit / stopped by supervisor",
        "terminated",
        "shutdown (body ended)",
    ]
    assert [ax.get_xlabel() for ax in axes] == ["", "", "seconds since the first event"]
    # Side by side, each panel keeps its own label; without the constrained layout the
    # one legend goes beside the last panel drawn.
    plain = Figure(figsize=(9, 3))
    left, right = plain.subplots(1, 2, sharex=True)
    history = await history_of(pipeline(Strategy.ONE_FOR_ONE), 5.0)
    restart_timeline(history, ax=left)
    restart_timeline(history, ax=right)
    assert plain.legends == []
    assert (left.get_legend(), right.get_legend() is not None) == (None, True)
    assert [ax.get_xlabel() for ax in (left, right)] == ["seconds since the first event"] * 2


async def test_panels_on_a_shared_x_axis_show_every_panels_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    figure = Figure(layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True)
    restart_timeline(await history_of(pipeline(Strategy.ONE_FOR_ONE), 5.0), ax=top)
    restart_timeline(await history_of(pipeline(Strategy.ONE_FOR_ONE), 2.0), ax=bottom)
    left, right = top.get_xlim()
    assert left == 0.0
    assert 5.0 < right < 5.5  # not cut at the shorter panel's 2 s


def mark_extents(ax: Axes, figure: Figure) -> list[tuple[str, float, float]]:
    """(gid, leftmost, rightmost pixel) of the marks of each kind, markers included."""
    out = []
    for line in ax.lines:
        if line.get_marker() in (None, "None", ""):
            continue
        xs = np.asarray(line.get_xdata(), dtype=float)
        ys = np.asarray(line.get_ydata(), dtype=float)
        pixels = ax.transData.transform(np.column_stack([xs, ys]))[:, 0]
        half = (line.get_markersize() + line.get_markeredgewidth()) / 2 * figure.dpi / 72
        out.append((str(line.get_gid()), float(pixels.min() - half), float(pixels.max() + half)))
    return out


async def test_the_last_marks_are_inside_the_axes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Narrow panels: 2% of the axis is less than half a terminated square. With the
    # constrained layout, and without a layout engine at all.
    layouts: list[Literal["constrained"] | None] = ["constrained", None]
    for layout in layouts:
        figure = Figure(figsize=(6, 2.5), layout=layout)
        panels = figure.subplots(1, 3)
        for ax, strategy in zip(panels, Strategy, strict=True):
            restart_timeline(await history_of(pipeline(strategy), 5.0), ax=ax, title="")
        rendered(figure)
        for ax in panels:
            extents = mark_extents(ax, figure)
            assert "terminated" in [gid for gid, _, _ in extents]
            for _, _, rightmost in extents:
                assert rightmost <= ax.bbox.x1, layout


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
    assert texts(ax, "skipped") == ["skipped"]
    assert texts(ax, "error") == ["Boom: flush failed"]
    (deadline,) = [line for line in ax.lines if line.get_gid() == "deadline"]
    assert xdata(deadline) == [6.0, 6.0]
    assert legend(ax) == [
        "STOP_ACCEPTING band: 1s",
        "DRAIN band: 2s",
        "FLUSH band: 0.25s",
        "CLOSE band: 2.75s",
        "ok",
        "timed out",
        "error",
        "cancelled (deadline or forced)",
        "deadline (6s)",
    ]
    assert ax.get_title() == "shutdown (body ended): 6.000s, deadline exceeded"
    assert ax.get_xlabel() == "seconds since the shutdown started"
    left, right = ax.get_xlim()
    # Room before 0 for a hook that takes no time; after the deadline for "skipped".
    assert -0.2 < left < 0.0
    assert 6.0 < right < 7.0
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


GATEWAY = (
    "the metrics gateway at https://metrics.internal.example:9091/api/v1/push refused the"
    " last batch of 4,096 samples: HTTP 503 Service Unavailable (retry after 30 s); the"
    " samples of the last 15 s are lost"
)


def test_gantt_writes_a_long_error_in_full_below_the_axes() -> None:
    hooks = [
        result("drain-delay", 0, "ok", 0.0, 2.0),
        HookResult("flush-metrics", 20, "error", 0.3, Boom(GATEWAY), 2.0),
        HookResult("flush-cache", 20, "error", 0.1, KeyError("k"), 2.0),
    ]
    figure = shutdown_gantt(ShutdownReport("requested", 0.0, 2.3, False, hooks))
    ax = only_axes(figure)
    # After the bar, the type and the note's number; a short error as it is.
    assert texts(ax, "error") == ["Boom [1]", "KeyError: 'k'"]
    (note,) = [text for text in ax.texts if text.get_gid() == "notes"]
    lines = note.get_text().split("\n")
    assert len(lines) > 1  # wrapped
    assert " ".join(note.get_text().split()) == f"[1] flush-metrics: Boom: {GATEWAY}"
    assert ax.get_title() == "shutdown (requested): 2.300s, not ok"
    # The note fits the width of the axes, below the x axis label.
    renderer = rendered(figure)
    box = note.get_window_extent(renderer)
    assert ax.bbox.x0 <= box.x0
    assert box.x1 <= ax.bbox.x1
    assert box.y1 <= ax.xaxis.label.get_window_extent(renderer).y0
    assert box.y0 >= 0  # the figure grew to hold it
    assert_apart_and_inside(ax, "error", renderer)


def test_gantt_cuts_a_huge_error_after_six_lines() -> None:
    huge = HookResult("flush", 20, "error", 0.5, Boom("lost " * 1000), 0.0)
    ax = only_axes(shutdown_gantt(ShutdownReport("requested", 0.0, 0.5, False, [huge])))
    (note,) = [text.get_text() for text in ax.texts if text.get_gid() == "notes"]
    assert note.startswith("[1] flush: Boom: lost lost")
    assert note.count("\n") == 5
    assert note.endswith(" … (the whole text: report.format())")


def test_gantt_titles_an_ok_shutdown() -> None:
    ok = ShutdownReport("requested", 0.0, 0.5, False, [result("a", 0, "ok", 0.0, 0.5)])
    assert only_axes(shutdown_gantt(ok)).get_title() == "shutdown (requested): 0.500s, ok"


async def test_gantt_shades_each_band_behind_its_own_rows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    ax = only_axes(shutdown_gantt(await bad_shutdown()))
    bands = [patch for patch in ax.patches if patch.get_gid() == "band"]
    assert all(isinstance(band, Rectangle) for band in bands)
    # (label, first row's top, rows): DRAIN has two hooks; CLEANUP, skipped, has none.
    assert [
        (band.get_label(), band.get_y(), band.get_height())
        for band in bands
        if isinstance(band, Rectangle)
    ] == [
        ("STOP_ACCEPTING band: 1s", -0.5, 1),
        ("DRAIN band: 2s", 0.5, 2),
        ("FLUSH band: 0.25s", 2.5, 1),
        ("CLOSE band: 2.75s", 3.5, 1),
    ]
    colors = [band.get_facecolor() for band in bands]
    assert len(set(colors)) == len(colors)
    assert legend(ax)[:4] == [str(band.get_label()) for band in bands]


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
