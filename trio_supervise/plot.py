"""Pictures of a tree: a restart timeline from ``tree.history``, a Gantt chart of a shutdown.

This module is optional: it needs matplotlib (``pip install 'trio-supervise[plot]'``) and
``import trio_supervise`` never imports it.

It uses matplotlib's object-oriented API only (``Figure`` and ``Axes``, never ``pyplot``):
nothing here picks a backend or touches pyplot's global state, so it is safe in a server or
a worker thread. To look at a picture, save it (``fig.savefig("restarts.png")``), display it
in a notebook, or pass an ``ax`` from a figure you made with pyplot yourself.

The drawings are built on two pure functions, ``runs_from_history`` and ``hook_bars``,
which turn the events and the report into plain values that can be checked exactly.

Example::

    from trio_supervise.plot import restart_timeline, shutdown_gantt

    async with supervisor_tree(spec) as tree:
        ...
    restart_timeline(tree.history).savefig("restarts.png")
    shutdown_gantt(tree.shutdown_report, deadline=30.0).savefig("shutdown.png")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, final

import attrs

from . import _checks
from ._events import Event, EventKind
from ._extras import missing_extra
from ._shutdown import Band, HookStatus, ShutdownReport

try:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
except ImportError as exc:
    raise missing_extra("trio_supervise.plot", "matplotlib", "plot") from exc

__all__ = [
    "HookBar",
    "Run",
    "hook_bars",
    "restart_timeline",
    "runs_from_history",
    "shutdown_gantt",
]

# Events that start a run of a child.
_START_KINDS: Final = frozenset({EventKind.STARTED, EventKind.RESTARTED})
# Events that end a run of a child.
_END_KINDS: Final = frozenset(
    {EventKind.CRASHED, EventKind.START_FAILED, EventKind.EXITED, EventKind.TERMINATED}
)
# Ends that carry the exception.
_ERROR_KINDS: Final = frozenset({EventKind.CRASHED, EventKind.START_FAILED})
# Other events whose ``path`` is a child's (and that give it a row of its own).
_CHILD_MARK_KINDS: Final = frozenset(
    {EventKind.RESTART_SCHEDULED, EventKind.STOP_TIMEOUT, EventKind.REMOVED}
)

# Colours from matplotlib's default palette, so the pictures look familiar.
_RUN_COLOR: Final = "tab:blue"
_RESTARTED_COLOR: Final = "tab:green"
_STATUS_COLORS: Final[dict[HookStatus, str]] = {
    "ok": "tab:green",
    "error": "tab:red",
    "timed_out": "tab:orange",
    "cancelled": "tab:purple",
    "skipped": "lightgrey",
}
# Row height as a fraction of the distance between rows.
_BAR_HEIGHT: Final = 0.6


@final
@attrs.frozen
class Run:
    """One run of a child: from its start to the event that ended it.

    Attributes:
      path: the child's path.
      start: ``trio.current_time()`` when the run started.
      end: when it ended; None while it was still running at the end of the history.
      started_by: ``STARTED`` or ``RESTARTED``; None when the start is not in the history:
        a start that raised before ``task_status.started()`` (a run of length zero, ended
        by ``START_FAILED``), or a run that started before the oldest event the bounded
        history kept (it is then taken to start at that oldest event).
      ended_by: ``CRASHED``, ``START_FAILED``, ``EXITED`` or ``TERMINATED``; None when no
        end event was seen (still running; or, which a tree never emits, started again
        without an end).
      error: the exception of a ``CRASHED`` or ``START_FAILED`` end, else None.
      restarts: the child's restart count during this run.
      detail: the ``detail`` of the event that ended the run ("" while running).
    """

    path: str
    start: float
    end: float | None
    started_by: EventKind | None
    ended_by: EventKind | None
    error: BaseException | None = None
    restarts: int = 0
    detail: str = ""


def _check_history(history: object, where: str) -> list[Event]:
    if isinstance(history, str | bytes) or not isinstance(history, Sequence):
        raise TypeError(
            f"{where}: history must be a sequence of Event, such as tree.history"
            f" (got {type(history).__name__})"
        )
    events = list(history)
    for index, event in enumerate(events):
        if not isinstance(event, Event):
            raise TypeError(
                f"{where}: history[{index}] must be an Event (got {type(event).__name__}:"
                f" {event!r}); pass tree.history"
            )
    return events


def _is_child_event(event: Event) -> bool:
    # Hook and reload events carry a hook's name as their path, and the root's own events
    # carry "": neither is a child, so neither gets a row.
    return event.path != "" and (
        event.kind in _START_KINDS or event.kind in _END_KINDS or event.kind in _CHILD_MARK_KINDS
    )


def _tree_order(first_seen: dict[str, int]) -> list[str]:
    """Order paths as the tree: each below its supervisor, siblings in first-seen order.

    A nested supervisor starts after its children (its STARTED waits for theirs), so plain
    first-seen order would put ``db/conn`` above ``db``.
    """

    def key(path: str) -> tuple[int, ...]:
        parts = path.split("/")
        prefixes = ("/".join(parts[: depth + 1]) for depth in range(len(parts)))
        return tuple(first_seen[prefix] for prefix in prefixes if prefix in first_seen)

    return sorted(first_seen, key=key)


def runs_from_history(history: Sequence[Event]) -> dict[str, list[Run]]:
    """Split a tree's events into the runs of each child.

    A run starts at ``STARTED`` or ``RESTARTED`` and ends at the child's next ``CRASHED``,
    ``EXITED`` or ``TERMINATED``. A run with no end event yet has ``end=None``. A
    ``START_FAILED`` (a start that raised before ``task_status.started()``) is a run of
    length zero; any other end event with no start before it is a run older than the
    bounded history (taken to start at its oldest event); their ``started_by`` is None.
    Events of the root supervisor (path ``""``), of shutdown and reload hooks, and health
    changes make no runs.

    Args:
      history: events, oldest first, as ``tree.history`` gives them.

    Returns:
      One entry per child that has a run or a restart, stop-timeout or removal event, in
      tree order (a child below its supervisor, siblings in the order they first appear),
      each with its runs in time order. An empty history gives an empty dict.

    Raises:
      TypeError: if ``history`` is not a sequence of ``Event``.
    """
    events = _check_history(history, "runs_from_history")
    oldest = events[0].time if events else 0.0
    first_seen: dict[str, int] = {}
    runs: dict[str, list[Run]] = {}
    open_runs: dict[str, Run] = {}
    for index, event in enumerate(events):
        if not _is_child_event(event):
            continue
        path = event.path
        first_seen.setdefault(path, index)
        done = runs.setdefault(path, [])
        if event.kind in _START_KINDS:
            current = open_runs.pop(path, None)
            if current is not None:  # a start with no end seen: close it where we know
                done.append(attrs.evolve(current, end=event.time))
            open_runs[path] = Run(path, event.time, None, event.kind, None, restarts=event.restarts)
        elif event.kind in _END_KINDS:
            error = event.error if event.kind in _ERROR_KINDS else None
            current = open_runs.pop(path, None)
            if current is None:
                failed_start = event.kind is EventKind.START_FAILED
                current = Run(
                    path,
                    event.time if failed_start or done else oldest,
                    None,
                    None,
                    None,
                    restarts=event.restarts,
                )
            done.append(
                attrs.evolve(
                    current, end=event.time, ended_by=event.kind, error=error, detail=event.detail
                )
            )
    for path, current in open_runs.items():
        runs[path].append(current)
    return {path: runs[path] for path in _tree_order(first_seen)}


def _band_name(band: int) -> str:
    try:
        return Band(band * 10).name
    except ValueError:  # priorities from 50 up are bands of the user's own
        return f"band {band}"


@final
@attrs.frozen
class HookBar:
    """One hook of a shutdown, placed in time.

    Attributes:
      name, priority, status, duration, error: as in the ``HookResult``.
      band: the band index, ``priority // 10``.
      band_name: the ``Band`` name (``"DRAIN"``), or ``"band 5"`` past ``CLEANUP``.
      start: seconds after the shutdown started; None for a skipped hook.
    """

    name: str
    priority: int
    band: int
    band_name: str
    status: HookStatus
    start: float | None
    duration: float
    error: BaseException | None = None


def _check_report(report: object, where: str) -> ShutdownReport:
    if not isinstance(report, ShutdownReport):
        hint = " (the shutdown has not run yet)" if report is None else ""
        raise TypeError(
            f"{where}: report must be a ShutdownReport, such as tree.shutdown_report"
            f" (got {type(report).__name__}{hint})"
        )
    return report


def hook_bars(report: ShutdownReport) -> list[HookBar]:
    """Place the hooks of a shutdown report on its time line.

    Returns:
      One ``HookBar`` per hook, lowest priority first (so band by band), hooks of equal
      priority in the order they were registered.

    Raises:
      TypeError: if ``report`` is not a ``ShutdownReport``.
    """
    report = _check_report(report, "hook_bars")
    ordered = sorted(enumerate(report.hooks), key=lambda item: (item[1].priority, item[0]))
    return [
        HookBar(
            hook.name,
            hook.priority,
            hook.priority // 10,
            _band_name(hook.priority // 10),
            hook.status,
            None if hook.started is None else hook.started - report.started,
            hook.duration,
            hook.error,
        )
        for _, hook in ordered
    ]


# ------------------------------------------------------------------------------- drawing


def _check_time(
    where: str, name: str, value: object, *, at_least: float | None = None
) -> float | None:
    checked = _checks.number(
        where, name, value, at_least=at_least, finite=True, none=True, type_error=TypeError
    )
    return None if checked is None else float(checked)


def _root_figure(ax: Axes) -> Figure:
    figure = ax.figure
    while isinstance(figure, SubFigure):
        figure = figure.figure
    return figure


def _axes(ax: object, rows: int, where: str) -> tuple[Figure, Axes]:
    if ax is None:
        figure = Figure(figsize=(9.0, 1.4 + 0.4 * max(rows, 1)), layout="constrained")
        return figure, figure.add_subplot()
    if not isinstance(ax, Axes):
        raise TypeError(
            f"{where}: ax must be a matplotlib Axes or None (got {type(ax).__name__});"
            " pass one from fig.add_subplot(), or leave it out for a new figure"
        )
    return _root_figure(ax), ax


def _xlim(ax: Axes, left: float, right: float) -> None:
    # Equal limits make matplotlib warn and draw nothing useful.
    ax.set_xlim(left, right if right > left else left + 1.0)


def _rows(ax: Axes, labels: list[str]) -> None:
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # the first row on top
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)


def _legend(ax: Axes, handles: dict[str, Patch | Line2D]) -> None:
    ax.legend(
        list(handles.values()),
        list(handles),
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        frameon=False,
    )


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="grey")
    ax.set_yticks([])


@final
@attrs.frozen
class _Mark:
    """How one kind of mark of the restart timeline looks."""

    label: str
    marker: str
    color: str
    size: float
    edge: float = 1.0


# The ``gid`` of each mark's Line2D, in legend order.
_MARKS: Final = {
    "crash": _Mark("crash", "x", "tab:red", 9.0, 2.2),
    "exit": _Mark("clean exit / stopped by supervisor", "|", "black", 14.0, 2.0),
    "terminated": _Mark("terminated", "s", "dimgrey", 6.0),
    "stop-timeout": _Mark("stop timeout", "v", "tab:orange", 8.0),
    "gave-up": _Mark("supervisor gave up", "*", "tab:red", 13.0),
}
_END_MARKS: Final = {
    EventKind.CRASHED: "crash",
    EventKind.START_FAILED: "crash",  # abnormal as a crash, and counted as one by intensity
    EventKind.EXITED: "exit",
    EventKind.TERMINATED: "terminated",
}


def restart_timeline(
    history: Sequence[Event],
    *,
    ax: Axes | None = None,
    until: float | None = None,
    origin: float | None = None,
    title: str | None = None,
    annotate_errors: bool = True,
) -> Figure:
    """Draw a row per child, a bar per run and a mark per crash.

    Reading it: first runs are blue, restarted runs green; a hatched segment is a child
    waiting to be restarted after a crash or a group stop (backoff, or its siblings being
    stopped for a one-for-all or rest-for-one restart); a blank gap is a child stopped on
    purpose. A red x is a crash or a failed start, labelled with the exception's type; a
    black bar end a clean exit (it returned, or its supervisor stopped it); a grey square a
    ``terminate_child`` or the shutdown; an orange triangle a ``STOP_TIMEOUT``. A nested
    supervisor that gave up (``INTENSITY_EXCEEDED``) gets a red star on its row, the root a
    red dashed line. Rows are in tree order (see ``runs_from_history``). Health changes
    are not drawn.

    The artists carry a ``gid`` for tools and tests: ``"run"`` and ``"waiting"`` bars in
    ``ax.patches``, one Line2D per mark kind in ``ax.lines`` (``"crash"``, ``"exit"``,
    ``"terminated"``, ``"stop-timeout"``, ``"gave-up"``) and ``"error"`` texts.

    Args:
      history: the events, oldest first (``tree.history``).
      ax: draw on these axes; by default a new ``Figure`` with one ``Axes`` is made.
      until: where runs with no end yet stop (trio time); default the last event's time.
      origin: the trio time shown as 0 on the x axis; default the oldest event's time
        (under ``MockClock`` that is usually 0; Trio's real clock has an arbitrary offset).
      title: the axes' title; None for a summary of the counts, "" for none.
      annotate_errors: write the exception's type next to each crash mark.

    Returns:
      The figure drawn on (the root figure of ``ax`` when given). A history with no child
      events (a tree that has not started a child yet) gives axes that say so: it is not
      an error.

    Raises:
      TypeError: if ``history`` is not a sequence of ``Event``, ``ax`` is not an Axes, or
        ``until`` or ``origin`` is not a number.
      ValueError: if ``until`` or ``origin`` is not finite, or ``until`` is before the
        last event.
    """
    where = "restart_timeline"
    events = _check_history(history, where)
    until = _check_time(where, "until", until)
    origin = _check_time(where, "origin", origin)
    runs = runs_from_history(events)
    figure, ax = _axes(ax, len(runs), where)
    last = max((event.time for event in events), default=0.0)
    if until is not None and until < last:
        raise ValueError(
            f"{where}: until must not be before the last event of the history"
            f" (got until={until!r}, last event at {last!r}); leave it out to end there"
        )
    right = last if until is None else until
    if origin is None:
        origin = events[0].time if events else 0.0
    ax.set_xlabel("seconds" if origin == 0 else f"seconds since {origin:g} (trio clock)")
    if not runs:
        _empty(ax, "no child events in the history")
        _xlim(ax, 0.0, right - origin)
        if title != "":
            ax.set_title(title or "restart timeline: no children")
        return figure

    handles: dict[str, Patch | Line2D] = {}
    marks: dict[str, tuple[list[float], list[int]]] = {}

    def mark(gid: str, time: float, row: int) -> None:
        xs, ys = marks.setdefault(gid, ([], []))
        xs.append(time - origin)
        ys.append(row)

    def bar(gid: str, row: int, left: float, right: float, restarted: bool = False) -> None:
        waiting = gid == "waiting"
        if waiting:
            label, color = "waiting to restart", "white"
        else:
            label = "restarted run" if restarted else "run"
            color = _RESTARTED_COLOR if restarted else _RUN_COLOR
        (rectangle,) = ax.barh(
            row,
            right - left,
            left=left - origin,
            height=_BAR_HEIGHT * 0.5 if waiting else _BAR_HEIGHT,
            color=color,
            edgecolor="grey" if waiting else "black",
            hatch="////" if waiting else None,
            linewidth=0.6,
        )
        rectangle.set_gid(gid)
        handles.setdefault(label, rectangle)

    restarts = 0
    for row, (path, path_runs) in enumerate(runs.items()):
        previous: Run | None = None
        for run in path_runs:
            end = right if run.end is None else run.end
            restarted = run.started_by is EventKind.RESTARTED
            restarts += restarted
            if (
                run.started_by is not EventKind.STARTED  # restarted, or a failed restart
                and previous is not None
                and previous.end is not None
                and previous.ended_by is not EventKind.TERMINATED
                and run.start > previous.end
            ):
                bar("waiting", row, previous.end, run.start)
            bar("run", row, run.start, end, restarted)
            if run.ended_by is not None:
                mark(_END_MARKS[run.ended_by], end, row)
            if annotate_errors and run.error is not None:
                text = ax.annotate(
                    type(run.error).__name__,
                    (end - origin, row),
                    xytext=(5, 6),
                    textcoords="offset points",
                    fontsize=7,
                    color="tab:red",
                )
                text.set_gid("error")
            previous = run
        if (
            previous is not None
            and previous.end is not None
            and previous.ended_by is not EventKind.TERMINATED
            and right > previous.end
            and any(
                event.kind is EventKind.RESTART_SCHEDULED
                and event.path == path
                and event.time >= previous.end
                for event in events
            )
        ):
            bar("waiting", row, previous.end, right)  # still waiting where the picture ends

    row_of = {path: row for row, path in enumerate(runs)}
    for event in events:
        if event.kind is EventKind.STOP_TIMEOUT and event.path in row_of:
            mark("stop-timeout", event.time, row_of[event.path])
        elif event.kind is EventKind.INTENSITY_EXCEEDED:
            if event.path in row_of:
                mark("gave-up", event.time, row_of[event.path])
            else:
                line = ax.axvline(
                    event.time - origin, color="tab:red", linestyle="--", linewidth=1.2
                )
                line.set_gid("gave-up")
                handles.setdefault(f"{event.path or 'root'} gave up", line)

    for gid, look in _MARKS.items():
        if gid in marks:
            xs, ys = marks[gid]
            (line,) = ax.plot(
                xs,
                ys,
                linestyle="none",
                marker=look.marker,
                color=look.color,
                markersize=look.size,
                markeredgewidth=look.edge,
                zorder=3,
            )
            line.set_gid(gid)
            handles[look.label] = line

    _rows(ax, list(runs))
    starts = [run.start for path_runs in runs.values() for run in path_runs]
    left = min([0.0, *(start - origin for start in starts)])
    # A little room on the right: marks at the last event would be cut in half.
    _xlim(ax, left, right - origin + 0.02 * (right - origin - left))
    _legend(ax, handles)
    if title != "":
        crashes = len(marks.get("crash", ([], []))[0])
        summary = ", ".join(
            [
                _count(len(runs), "child", "children"),
                _count(crashes, "crash", "crashes"),
                _count(restarts, "restart", "restarts"),
            ]
        )
        ax.set_title(title or f"restart timeline: {summary}")
    return figure


_STATUS_LABELS: Final[dict[HookStatus, str]] = {
    "ok": "ok",
    "error": "error",
    "timed_out": "timed out",
    "cancelled": "cancelled (deadline or forced)",
    "skipped": "skipped",
}


def shutdown_gantt(
    report: ShutdownReport,
    *,
    ax: Axes | None = None,
    deadline: float | None = None,
    title: str | None = None,
) -> Figure:
    """Draw a shutdown as a Gantt chart: a row per hook, band by band.

    Each hook is a bar from when it started for as long as it took, coloured by its status
    (green ok, red error with the exception written after it, orange timed out, purple
    cancelled); a skipped hook has no bar, only the word "skipped" where the shutdown
    ended. Rows are labelled ``BAND · hook`` and ordered by priority; the time each band
    took is shaded, alternately. The deadline is a red dashed line, a forced end a purple
    one. The x axis is in seconds since the shutdown started.

    The artists carry a ``gid`` for tools and tests: ``"hook"`` and ``"band"`` patches,
    ``"deadline"`` and ``"forced"`` lines, ``"error"`` and ``"skipped"`` texts.

    Args:
      report: the report (``tree.shutdown_report``).
      ax: draw on these axes; by default a new ``Figure`` with one ``Axes`` is made.
      deadline: the ``shutdown_deadline`` in seconds, to draw it. When left out and the
        report says the deadline was exceeded, it is drawn where the shutdown ended
        (which is where the deadline cut it) and labelled as inferred.
      title: the axes' title; None for the reason, the duration and the outcome, "" for
        none.

    Returns:
      The figure drawn on (the root figure of ``ax`` when given).

    Raises:
      TypeError: if ``report`` is not a ``ShutdownReport`` (``tree.shutdown_report`` is
        None until the shutdown has run), ``ax`` is not an Axes or ``deadline`` is not a
        number.
      ValueError: if ``deadline`` is not finite or is negative.
    """
    where = "shutdown_gantt"
    report = _check_report(report, where)
    deadline = _check_time(where, "deadline", deadline, at_least=0)
    bars = hook_bars(report)
    figure, ax = _axes(ax, len(bars), where)
    ax.set_xlabel("seconds since the shutdown started")
    handles: dict[str, Patch | Line2D] = {}
    right = max(report.duration, deadline or 0.0)

    band_rows: dict[int, list[HookBar]] = {}
    for hook in bars:
        band_rows.setdefault(hook.band, []).append(hook)
    for shade, band in enumerate(band_rows):
        ran = [hook for hook in band_rows[band] if hook.start is not None]
        if ran:
            start = min(hook.start for hook in ran if hook.start is not None)
            end = max(hook.start + hook.duration for hook in ran if hook.start is not None)
            span = ax.axvspan(start, end, color="0.9" if shade % 2 else "0.82", zorder=0)
            span.set_gid("band")
            handles.setdefault("time a band took", span)

    for row, hook in enumerate(bars):
        if hook.status == "skipped" or hook.start is None:
            text = ax.text(
                report.duration,
                row,
                " skipped",
                va="center",
                fontsize=8,
                style="italic",
                color="grey",
            )
            text.set_gid("skipped")
            continue
        color = _STATUS_COLORS[hook.status]
        (rectangle,) = ax.barh(
            row,
            hook.duration,
            left=hook.start,
            height=_BAR_HEIGHT,
            color=color,
            # A hook that took no time still shows, as a line of its colour.
            edgecolor="black" if hook.duration > 0 else color,
            linewidth=0.6 if hook.duration > 0 else 2.0,
            zorder=2,
        )
        rectangle.set_gid("hook")
        handles.setdefault(_STATUS_LABELS[hook.status], rectangle)
        right = max(right, hook.start + hook.duration)
        if hook.error is not None:
            message = f"{type(hook.error).__name__}: {hook.error}"
            if len(message) > 48:
                message = message[:47] + "…"
            text = ax.annotate(
                message,
                (hook.start + hook.duration, row),
                xytext=(5, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
                color="tab:red",
            )
            text.set_gid("error")
    if "skipped" in {hook.status for hook in bars}:
        handles["skipped"] = Patch(facecolor="white", edgecolor="grey", label="skipped")

    lines: list[tuple[str, float, str, str]] = []
    if deadline is not None:
        lines.append(("deadline", deadline, "tab:red", f"deadline ({deadline:g}s)"))
    elif report.deadline_exceeded:
        lines.append(("deadline", report.duration, "tab:red", "deadline (inferred)"))
    if report.forced:
        lines.append(("forced", report.duration, "tab:purple", "forced"))
    for gid, x, color, label in lines:
        line = ax.axvline(x, color=color, linestyle="--", linewidth=1.4, zorder=3)
        line.set_gid(gid)
        handles[label] = line

    if bars:
        _rows(ax, [f"{hook.band_name} · {hook.name}" for hook in bars])
        for row in range(1, len(bars)):
            if bars[row].band != bars[row - 1].band:
                separator = ax.axhline(row - 0.5, color="grey", linewidth=0.5)
                separator.set_gid("separator")
        _legend(ax, handles)
    else:
        _empty(ax, "no hooks in the report")
    # Room on the right for the labels written after the bars.
    _xlim(ax, 0.0, right * 1.15)
    if title != "":
        if report.forced:
            outcome = "forced"
        elif report.deadline_exceeded:
            outcome = "deadline exceeded"
        else:
            outcome = "ok" if report.ok else "not ok"
        ax.set_title(title or f"shutdown ({report.reason}): {report.duration:.3f}s, {outcome}")
    return figure
