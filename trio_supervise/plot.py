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

import math
import textwrap
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Final, final

import attrs

from . import _checks
from ._events import Event, EventKind
from ._extras import missing_extra
from ._shutdown import Band, HookStatus, ShutdownReport

try:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.backend_bases import RendererBase
    from matplotlib.figure import Figure, SubFigure
    from matplotlib.font_manager import FontProperties
    from matplotlib.layout_engine import ConstrainedLayoutEngine
    from matplotlib.patches import Rectangle
    from matplotlib.text import Text
    from matplotlib.textpath import text_to_path
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


def _root_figure(artist: Artist) -> Figure:
    figure = artist.figure
    while isinstance(figure, SubFigure):
        figure = figure.figure
    assert isinstance(figure, Figure)  # an Axes made by a figure always has one
    return figure


def _axes(ax: object, size: tuple[float, float], where: str) -> tuple[Figure, Axes]:
    if ax is None:
        figure = Figure(figsize=size, layout="constrained")
        return figure, figure.add_subplot()
    if not isinstance(ax, Axes):
        raise TypeError(
            f"{where}: ax must be a matplotlib Axes or None (got {type(ax).__name__});"
            " pass one from fig.add_subplot(), or leave it out for a new figure"
        )
    return _root_figure(ax), ax


# The size of the text written next to the bars, in points.
_FONT_SIZE: Final = 7.0
# The gap between a bar or mark and the text written next to it, in points.
_TEXT_GAP: Final = 3.0
# Of the width measured, how much labels may count on: the x tick labels, set after the
# measure, can still take a little (the last one may stick out past the axes).
_SAFE_WIDTH: Final = 0.95


def _laid_out_width(figure: Figure, ax: Axes) -> float:
    """How wide ``ax`` is, in points, once the figure's layout made room for the rest.

    What is written next to bars and marks must fit in the axes, and the legend and the
    row labels decide how wide the axes end up: so the layout runs first (it measures the
    text; it takes tens of milliseconds), the labels are placed after.
    """
    engine = figure.get_layout_engine()
    if engine is not None:
        engine.execute(figure)
    parent = ax.figure
    assert parent is not None  # an Axes made by a figure always has one
    pixels = ax.get_position().width * parent.bbox.width
    return max(pixels / figure.dpi * 72.0 * _SAFE_WIDTH, 1.0)


def _text_width(text: str) -> float:
    """The width of ``text`` written at ``_FONT_SIZE``, in points (no renderer needed)."""
    width, _, _ = text_to_path.get_text_width_height_descent(
        text, FontProperties(size=_FONT_SIZE), ismath=False
    )
    return float(width)


def _xlim(ax: Axes, left: float, right: float) -> None:
    """Set the x limits, as wide as what panels sharing this x axis already show."""
    if any(
        other is not ax and other.has_data() for other in ax.get_shared_x_axes().get_siblings(ax)
    ):
        shown_left, shown_right = ax.get_xlim()
        left, right = min(left, shown_left), max(right, shown_right)
    # Equal limits make matplotlib warn and draw nothing useful.
    if right <= left:
        right = left + 1.0
    ax.set_xlim(left, right)


def _padded(left: float, right: float, width: float, points: float) -> float:
    """The right limit that leaves ``points`` of room after ``right`` (on axes ``width``
    points wide), and 2% at least."""
    fraction = min(max(points / width, 0.02), 0.5)
    return right + (right - left) * fraction / (1.0 - fraction)


def _xlabel(ax: Axes, text: str) -> None:
    """Label the x axis, once for panels stacked on one shared x axis: on the lowest."""
    ax.set_xlabel(text)
    same = [
        other for other in ax.get_shared_x_axes().get_siblings(ax) if other.get_xlabel() == text
    ]
    for upper in same:
        top = upper.get_position()
        if any(
            lower is not upper
            and lower.get_position().y1 <= top.y0
            and lower.get_position().x0 < top.x1
            and top.x0 < lower.get_position().x1
            for lower in same
        ):
            upper.set_xlabel("")


def _rows(ax: Axes, labels: list[str]) -> None:
    ax.set_yticks(range(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # the first row on top
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)


# The artists that stand for a legend entry carry one of these gids; the legend lists
# them in this order (and, for one gid, in the order they were drawn).
_LEGEND_ORDER: Final = (
    "run",
    "waiting",
    "crash",
    "exit",
    "terminated",
    "stop-timeout",
    "gave-up",
    "shutdown",
    "band",
    "hook",
    "deadline",
    "forced",
)
# The gid of the legend: only a legend of ours is replaced.
_LEGEND_GID: Final = "trio_supervise.plot"


def _legend(figure: Figure, ax: Axes) -> None:
    """Draw one legend for the whole figure, of what every plot drawn on it shows.

    Panels of a figure show the same kinds of bars and marks: one legend for all of them
    says it once. It goes outside on the right when the figure has the constrained layout
    (which makes room for it; the figures made here have it), else beside ``ax``.
    """
    entries: dict[str, tuple[int, Artist]] = {}
    for axes in figure.axes:
        for artist in axes.get_children():
            label, gid = str(artist.get_label()), artist.get_gid()
            if gid in _LEGEND_ORDER and not label.startswith("_"):
                entries.setdefault(label, (_LEGEND_ORDER.index(gid), artist))
    for legend in [*figure.legends, *(axes.get_legend() for axes in figure.axes)]:
        if legend is not None and legend.get_gid() == _LEGEND_GID:
            legend.remove()
    if not entries:
        return
    ordered = sorted(entries.items(), key=lambda entry: entry[1][0])  # stable: drawn order
    handles = [artist for _, (_, artist) in ordered]
    labels = [label for label, _ in ordered]
    if isinstance(figure.get_layout_engine(), ConstrainedLayoutEngine):
        legend = figure.legend(
            handles, labels, loc="outside right upper", fontsize=8, frameon=False
        )
    else:
        legend = ax.legend(
            handles,
            labels,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=8,
            frameon=False,
        )
    legend.set_gid(_LEGEND_GID)


# A legend entry is wrapped to lines this long, and cut after two: a long reason
# ("root supervisor failed: ...") would otherwise take the width of the plot.
_LEGEND_LINE: Final = 36


def _legend_text(text: str) -> str:
    return "\n".join(textwrap.wrap(text, _LEGEND_LINE, max_lines=2, placeholder=" …"))


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
# Rows of headroom above the first row when it has crash labels.
_LABEL_ROOM: Final = 0.25
# The shading of the time the tree was shutting down.
_SHUTDOWN_COLOR: Final = "0.88"


def _group_label(texts: list[str]) -> str:
    """``["RuntimeError"] * 12`` -> ``"RuntimeError ×12"``; texts in first-seen order."""
    counts = Counter(texts)
    return ", ".join(text if n == 1 else f"{text} ×{n}" for text, n in counts.items())


@final
@attrs.define
class _LabelGroup:
    """Texts of one row written once, at the x of the first of them."""

    x: float
    texts: list[str]
    label: str = ""
    # Where the label starts and ends on the x axis: it is written after ``x``, or
    # before it when it would run past the right edge.
    start: float = 0.0
    end: float = 0.0

    def place(self, right: float, width_of: Callable[[str], float]) -> None:
        self.label = _group_label(self.texts)
        width = width_of(self.label)
        if self.x + width <= right:
            self.start, self.end = self.x, self.x + width
        else:
            self.start, self.end = self.x - width, self.x


def _label_groups(
    entries: Sequence[tuple[float, str]], right: float, width_of: Callable[[str], float]
) -> list[_LabelGroup]:
    """Group the texts of one row that would overprint.

    Args:
      entries: ``(x, text)`` of each, by x.
      right: the right limit of the x axis.
      width_of: how much of the x axis a text covers, with the gap before it.

    Returns:
      One group per label: a text whose x is closer to the one before than it is wide,
      or that would run into the label before it (both with a clear space between
      them), joins that label.
    """
    groups: list[_LabelGroup] = []
    last = -math.inf
    space = width_of("") * 2
    for x, text in entries:
        # Labels closer than a clear space would read as one run-on text.
        if groups and (x - last < width_of(text) + space or x < groups[-1].end + space):
            groups[-1].texts.append(text)
        else:
            groups.append(_LabelGroup(x, [text]))
        last = x
        groups[-1].place(right, width_of)
        # A label that grew, or went before its x, may now run into the one before.
        while len(groups) > 1 and groups[-1].start < groups[-2].end + space:
            merged = groups.pop()
            groups[-1].texts.extend(merged.texts)
            groups[-1].place(right, width_of)
    return groups


# Under a label: readable where it crosses a line, the grid or a shading.
_UNDER_TEXT: Final[dict[str, Any]] = {
    "facecolor": "white",
    "edgecolor": "none",
    "alpha": 0.75,
    "pad": 0.5,
}


@final
class _RowLabels(Artist):
    """Texts written next to the marks or bars of each row, placed when the figure is drawn.

    Where they fit depends on how wide the axes end up, which is known only once the
    figure's layout has run (a panel drawn later, with its legend and its row labels, can
    narrow this one): so they are worked out at each draw, from the axes as laid out.
    Texts of a row that would overprint are written once for the group, at the first:
    ``RuntimeError ×12``; a text that would run past the right edge is written before
    its x instead of after it. The texts drawn are the children, each with ``text_gid``.
    """

    def __init__(
        self,
        entries: Sequence[tuple[int, float, str]],
        *,
        y_offset: float,
        text_gid: str,
        **style: Any,
    ) -> None:
        super().__init__()
        # (x, text) of each entry, by row.
        self._rows: dict[int, list[tuple[float, str]]] = {}
        for row, x, text in entries:
            self._rows.setdefault(row, []).append((x, text))
        self._y_offset = y_offset
        self._text_gid = text_gid
        self._style = style
        # The texts of the last draw.
        self._texts: list[Text] = []
        self.set_zorder(4)

    def get_children(self) -> list[Artist]:
        return [*self._texts]

    def draw(self, renderer: RendererBase) -> None:
        ax = self.axes
        if ax is None or not self.get_visible():
            return
        left, right = ax.get_xlim()
        # savefig(dpi=...) draws with the figure's dpi set to that.
        pixels_per_point = _root_figure(self).dpi / 72.0
        per_point = (right - left) / max(ax.bbox.width / pixels_per_point, 1.0)
        gap = _TEXT_GAP * per_point

        def text(x: float, y: float, label: str, ha: str = "left") -> Text:
            made = Text(x, y, label, ha=ha, fontsize=_FONT_SIZE, bbox=_UNDER_TEXT, **self._style)
            made.set_transform(ax.transData)
            made.set_figure(self.figure)
            made.set_gid(self._text_gid)
            return made

        def width_of(label: str) -> float:
            # Measured as drawn (font, style, this dpi's hinting), with the white box.
            pixels = text(0.0, 0.0, label).get_window_extent(renderer).width
            return float(pixels / pixels_per_point + 2 * _UNDER_TEXT["pad"]) * per_point + gap

        self._texts = []
        for row, entries in self._rows.items():
            for group in _label_groups(sorted(entries), right, width_of):
                after = group.start == group.x
                x = group.x + gap if after else group.x - gap
                drawn = text(x, row + self._y_offset, group.label, "left" if after else "right")
                drawn.draw(renderer)
                self._texts.append(drawn)
        self.stale = False


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
    red dashed line. The shutdown is shaded grey, between dotted lines where it started and
    where it ended, and named with its reason in the legend. Rows are in tree order (see
    ``runs_from_history``). Health changes are not drawn.

    Crashes too close together to be labelled one by one (a child in a crash loop) get one
    label for the group, at its first crash: ``RuntimeError ×12``. A label that would run
    past the right edge is written before its mark.

    Several panels: the figure gets one legend for all of them, and panels stacked on a
    shared x axis (``figure.subplots(3, 1, sharex=True)``) one x label, on the lowest, and
    x limits that show every panel's events.

    The artists carry a ``gid`` for tools and tests: ``"run"`` and ``"waiting"`` bars and
    the ``"shutdown"`` span in ``ax.patches``, one Line2D per mark kind in ``ax.lines``
    (``"crash"``, ``"exit"``, ``"terminated"``, ``"stop-timeout"``, ``"gave-up"``), and
    the ``"errors"`` artist in ``ax.artists``, whose children, once the figure is drawn,
    are the ``"error"`` texts (they are placed at each draw, for the axes as laid out).

    Args:
      history: the events, oldest first (``tree.history``).
      ax: draw on these axes; by default a new ``Figure`` with one ``Axes`` is made.
      until: where runs with no end yet stop (trio time); default the last event's time.
      origin: the trio time shown as 0 on the x axis; default the oldest event's time
        (the x axis then says "seconds since the first event": Trio's real clock has an
        arbitrary offset, and ``MockClock`` starts at 0).
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
    figure, ax = _axes(ax, (9.0, 1.4 + 0.45 * max(len(runs), 1)), where)
    last = max((event.time for event in events), default=0.0)
    if until is not None and until < last:
        raise ValueError(
            f"{where}: until must not be before the last event of the history"
            f" (got until={until!r}, last event at {last!r}); leave it out to end there"
        )
    right = last if until is None else until
    if origin is None:
        origin = events[0].time if events else 0.0
        _xlabel(ax, "seconds since the first event")
    else:
        _xlabel(ax, f"seconds since trio time {origin:g}")
    if not runs:
        _empty(ax, "no child events in the history")
        _xlim(ax, 0.0, right - origin)
        if title != "":
            ax.set_title(title or "restart timeline: no children")
        return figure

    labelled: set[str] = set()
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
        if label not in labelled:
            labelled.add(label)
            rectangle.set_label(label)

    restarts = 0
    crashes: list[tuple[int, float, str]] = []
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
            if run.error is not None:
                crashes.append((row, end - origin, type(run.error).__name__))
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
                line.set_label(f"{event.path or 'root'} gave up")
        elif event.kind is EventKind.SHUTDOWN_STARTED and event.path == "":
            finished = next(
                (
                    later.time
                    for later in events
                    if later.kind is EventKind.SHUTDOWN_FINISHED and later.time >= event.time
                ),
                right,
            )
            # Shaded while it ran, a dotted line where it started and where it ended.
            span = ax.axvspan(
                event.time - origin,
                finished - origin,
                facecolor=_SHUTDOWN_COLOR,
                edgecolor="0.3",
                linestyle=":",
                linewidth=1.4,
                zorder=0,
            )
            span.set_gid("shutdown")
            span.set_label(
                _legend_text(f"shutdown ({event.detail})" if event.detail else "shutdown")
            )

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
                # A mark at the edge of a panel narrower than estimated is drawn whole.
                clip_on=False,
                label=look.label,
            )
            line.set_gid(gid)

    _rows(ax, list(runs))
    if annotate_errors and any(row == 0 for row, _, _ in crashes):
        # Room above the first row for its labels, which go above its bars.
        ax.set_ylim(len(runs) - 0.5, -0.5 - _LABEL_ROOM)
    _legend(figure, ax)
    if title != "":
        crash_count = len(marks.get("crash", ([], []))[0])
        summary = ", ".join(
            [
                _count(len(runs), "child", "children"),
                _count(crash_count, "crash", "crashes"),
                _count(restarts, "restart", "restarts"),
            ]
        )
        ax.set_title(title or f"restart timeline: {summary}")

    starts = [run.start for path_runs in runs.values() for run in path_runs]
    left = min([0.0, *(start - origin for start in starts)])
    _xlim(ax, left, _padded(left, right - origin, 1.0, 0.0))  # the 2%, for the layout
    width = _laid_out_width(figure, ax)
    # Room on the right for the biggest mark, which would be cut in half at the last event.
    room = max(look.size / 2 + look.edge for look in _MARKS.values())
    _xlim(ax, left, _padded(left, right - origin, width, room))
    if annotate_errors and crashes:
        # Above the bar, in the gap between two rows, where it covers no bar.
        labels = _RowLabels(
            crashes, y_offset=-_BAR_HEIGHT / 2, text_gid="error", va="bottom", color="tab:red"
        )
        labels.set_gid("errors")
        ax.add_artist(labels)

    return figure


_STATUS_LABELS: Final[dict[HookStatus, str]] = {
    "ok": "ok",
    "error": "error",
    "timed_out": "timed out",
    "cancelled": "cancelled (deadline or forced)",
    "skipped": "skipped",
}
# The shading behind the rows of each band, in turn: light tints of hues that no status
# has, so that a band never looks like a hook's outcome.
_BAND_COLORS: Final = ("#c6dbef", "#dadaeb", "#e5e5c0", "#d9c8be", "#c7e9e9", "#e0e0e0")
# An error whose "Type: message" is longer is written as "Type [n]" after its bar, and in
# full in note n below the axes.
_INLINE_ERROR: Final = 40
# A note is wrapped to the width of the axes and cut after this many lines (the whole
# text is in ``report.format()`` and ``HookBar.error``).
_NOTE_LINES: Final = 6


def _seconds(value: float) -> str:
    return f"{value:.3g}s"


def _error_notes(bars: list[HookBar], width: float) -> tuple[dict[int, str], list[str]]:
    """The text written after each failed hook's bar, by row, and the notes below the axes
    (wrapped to ``width`` points)."""
    inline: dict[int, str] = {}
    notes: list[str] = []
    for row, hook in enumerate(bars):
        if hook.error is None:
            continue
        name = type(hook.error).__name__
        message = " ".join(str(hook.error).split())
        whole = f"{name}: {message}" if message else name
        if len(whole) <= _INLINE_ERROR:
            inline[row] = whole
            continue
        number = len(notes) + 1
        inline[row] = f"{name} [{number}]"
        note = f"[{number}] {hook.name}: {whole}"
        # As many characters a line as fit in the width on average, fewer while a line
        # is still too wide (a note wider than the axes would narrow them).
        characters = max(int(width / _text_width(note) * len(note)), 20)
        while True:
            lines = textwrap.wrap(
                note,
                width=characters,
                subsequent_indent="     ",
                max_lines=_NOTE_LINES,
                placeholder=" … (the whole text: report.format())",
                break_on_hyphens=False,
            )
            if characters <= 20 or max(_text_width(line) for line in lines) <= width:
                break
            characters = max(int(characters * 0.95), 20)
        notes.append("\n".join(lines))
    return inline, notes


def shutdown_gantt(
    report: ShutdownReport,
    *,
    ax: Axes | None = None,
    deadline: float | None = None,
    title: str | None = None,
) -> Figure:
    """Draw a shutdown as a Gantt chart: a row per hook, band by band.

    Each hook is a bar from when it started for as long as it took, coloured by its status
    (green ok, red error, orange timed out, purple cancelled); a skipped hook has no bar,
    only the word "skipped" (where it started when it had nothing to do, else where the
    shutdown ended; before that point when there is no room after it). Rows are labelled
    ``BAND · hook`` and ordered by priority. Behind the rows of each band, the time the
    band took is shaded in a tint of its own, named in the legend with that time
    (``DRAIN band: 2.5s``). The deadline is a red dashed line, a forced end a purple one.
    The x axis is in seconds since the shutdown started.

    A failed hook's error is written after its bar as ``Type: message`` when that is
    short; a longer one as ``Type [1]``, with note 1 below the axes giving the hook and the
    whole message, wrapped (cut after six lines; ``report.format()`` has it all). In a
    figure of several panels, the figure gets one legend for all of them, as with
    ``restart_timeline``.

    The artists carry a ``gid`` for tools and tests: ``"hook"`` and ``"band"`` patches,
    ``"deadline"``, ``"forced"`` and ``"separator"`` lines, the ``"notes"`` text, and the
    ``"errors"`` and ``"skipped"`` artists in ``ax.artists``, whose children, once the
    figure is drawn, are the ``"error"`` and ``"skipped"`` texts.

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
    own_figure = ax is None
    height = 1.4 + 0.4 * max(len(bars), 1)
    # Wider than a timeline: the row labels name the band too, and the legend each band.
    figure, ax = _axes(ax, (10.0, height), where)
    _xlabel(ax, "seconds since the shutdown started")

    band_rows: dict[int, list[int]] = {}
    for row, hook in enumerate(bars):
        band_rows.setdefault(hook.band, []).append(row)
    for shade, rows in enumerate(band_rows.values()):
        ran = [bars[row] for row in rows if bars[row].start is not None]
        starts = [hook.start for hook in ran if hook.start is not None]
        if not starts:
            continue  # skipped, every hook of it: it took no time
        start = min(starts)
        end = max(start + hook.duration for start, hook in zip(starts, ran, strict=True))
        block = Rectangle(
            (start, rows[0] - 0.5),
            end - start,
            len(rows),
            facecolor=_BAND_COLORS[shade % len(_BAND_COLORS)],
            edgecolor="none",
            zorder=0,
            label=f"{bars[rows[0]].band_name} band: {_seconds(end - start)}",
        )
        block.set_gid("band")
        ax.add_patch(block)

    labelled: set[str] = set()
    for row, hook in enumerate(bars):
        if hook.status == "skipped" or hook.start is None:
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
        if hook.status not in labelled:
            labelled.add(hook.status)
            rectangle.set_label(_STATUS_LABELS[hook.status])

    lines: list[tuple[str, float, str, str]] = []
    if deadline is not None:
        lines.append(("deadline", deadline, "tab:red", f"deadline ({deadline:g}s)"))
    elif report.deadline_exceeded:
        lines.append(("deadline", report.duration, "tab:red", "deadline (inferred)"))
    if report.forced:
        lines.append(("forced", report.duration, "tab:purple", "forced"))
    for gid, x, color, label in lines:
        line = ax.axvline(x, color=color, linestyle="--", linewidth=1.4, zorder=3, label=label)
        line.set_gid(gid)

    if bars:
        _rows(ax, [f"{hook.band_name} · {hook.name}" for hook in bars])
        for row in range(1, len(bars)):
            if bars[row].band != bars[row - 1].band:
                separator = ax.axhline(row - 0.5, color="grey", linewidth=0.5)
                separator.set_gid("separator")
        _legend(figure, ax)
    else:
        _empty(ax, "no hooks in the report")
    if title != "":
        if report.forced:
            outcome = "forced"
        elif report.deadline_exceeded:
            outcome = "deadline exceeded"
        else:
            outcome = "ok" if report.ok else "not ok"
        ax.set_title(title or f"shutdown ({report.reason}): {report.duration:.3f}s, {outcome}")

    right = max(
        [report.duration, deadline or 0.0]
        + [hook.start + hook.duration for hook in bars if hook.start is not None]
    )
    _xlim(ax, 0.0, right * 1.02 if right > 0 else 1.0)  # for the layout
    width = _laid_out_width(figure, ax)
    inline, notes = _error_notes(bars, width)
    # Where each text goes: after the bar, or where a skipped hook would have started.
    texts: list[tuple[int, float, str]] = []
    for row, hook in enumerate(bars):
        if hook.start is None:
            texts.append((row, report.duration, "skipped"))
        elif hook.status == "skipped":
            texts.append((row, hook.start, "skipped"))
        elif row in inline:
            texts.append((row, hook.start + hook.duration, inline[row]))
    # Room before 0 for a hook that took no time (a line that the axis would hide), and
    # after the last bar for the text written after it.
    pad = right * (_TEXT_GAP + 2.0) / width if right > 0 else 0.05 if bars else 0.0
    limit = right * 1.02 if right > 0 else 1.0
    for _, x, words in texts:
        share = min((2 * _TEXT_GAP + _text_width(words)) / width, 0.6)
        limit = max(limit, (x + pad * share) / (1.0 - share))
    _xlim(ax, -pad, limit)
    for gid, text_gid, style in [
        ("errors", "error", {"color": "tab:red"}),
        ("skipped", "skipped", {"color": "grey", "style": "italic"}),
    ]:
        entries = [
            (row, x, words) for row, x, words in texts if (row in inline) == (gid == "errors")
        ]
        if entries:
            labels = _RowLabels(entries, y_offset=0.0, text_gid=text_gid, va="center", **style)
            labels.set_gid(gid)
            ax.add_artist(labels)
    if notes:
        # Below the x axis label, wherever the layout puts it.
        note = ax.annotate(
            "\n".join(notes),
            (0.0, 0.0),
            xycoords=("axes fraction", ax.xaxis.label),
            xytext=(0, -4),
            textcoords="offset points",
            ha="left",
            va="top",
            fontsize=_FONT_SIZE,
            color="0.15",
        )
        note.set_gid("notes")
        if own_figure:
            note_lines = sum(lines.count("\n") + 1 for lines in notes)
            figure.set_figheight(height + 0.15 * note_lines)
    return figure
