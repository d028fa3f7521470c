"""Prometheus metrics of a supervision tree, fed by its events (extra ``metrics``).

``TreeMetrics`` keeps its metrics in a private ``prometheus_client.CollectorRegistry`` (never
the process-wide ``REGISTRY``) and updates them from the tree's events through
``tree.add_event_listener``: no task of its own, no polling, O(1) work per event (dict
lookups and a few locked increments, about 1.5 µs). Two rarer events cost in proportion to
the children involved: ``REMOVED`` of a supervisor drops its subtree's series, and a nested
supervisor's (re)start compares its children with those it had.

Metrics (``trio_supervise`` is the default namespace):

============================================================  =======  ==========================
name                                                          type     updated on
============================================================  =======  ==========================
``trio_supervise_child_up{path}``                             gauge    1 from ``STARTED`` /
                                                                       ``RESTARTED`` until the
                                                                       run ends (``EXITED``,
                                                                       ``CRASHED``,
                                                                       ``TERMINATED``); a
                                                                       singleton from
                                                                       ``LOCK_ACQUIRED`` to
                                                                       ``LOCK_LOST`` or its end
``trio_supervise_child_restarts_total{path}``                 counter  the restart decision
``trio_supervise_child_crashes_total{path}``                  counter  ``CRASHED``
``trio_supervise_child_stop_timeouts_total{path}``            counter  ``STOP_TIMEOUT``
``trio_supervise_supervisor_intensity_exceeded_total{path}``  counter  ``INTENSITY_EXCEEDED``
``trio_supervise_events_total{kind}``                         counter  every event
``trio_supervise_shutdown_in_progress``                       gauge    ``SHUTDOWN_STARTED`` /
                                                                       ``SHUTDOWN_FINISHED``
``trio_supervise_shutdown_duration_seconds``                  gauge    ``SHUTDOWN_FINISHED``
``trio_supervise_shutdown_hook_duration_seconds{hook}``       gauge    ``SHUTDOWN_FINISHED``
``trio_supervise_shutdown_hook_errors_total{hook}``           counter  ``SHUTDOWN_FINISHED``
``trio_supervise_tree_health_status{status}``                 gauge    read at scrape time
``trio_supervise_tree_ready``, ``trio_supervise_tree_live``   gauge    read at scrape time
============================================================  =======  ==========================

Restarts are counted when they are decided, as OTP and the restart intensity count them:
the counter follows the ``restarts`` count the tree keeps for the child (``ChildInfo.restarts``,
``Event.restarts``). The child that exited is counted at its ``RESTART_SCHEDULED`` event, so a
child waiting out its backoff already shows the restart (with ``child_up`` 0); the siblings a
``ONE_FOR_ALL`` / ``REST_FOR_ONE`` restart takes along have no event of their own at that
moment and are counted at their ``RESTARTED`` event. ``restart_child`` counts too (it raises
the tree's count). Counters never go down: when a nested supervisor restarts, its children
are new and the tree counts their restarts from 0 again, while the counter goes on from its
value.

Series follow the tree's children: a child's series appear when it is first seen (at 0, so
``rate()`` works from the start) and are dropped when its spec leaves the tree (``REMOVED``:
a temporary child that exited, ``delete_child``), with those of everything below it. The
dynamic children of a nested supervisor that restarts are gone from the tree without an event
of their own; their series are dropped when the supervisor has started again. Tree-wide
totals survive in ``events_total{kind}``.

A hook's error counts when its status is ``"error"`` (it raised) or ``"timed_out"`` (it
overran its own ``timeout``): both make ``trio_supervise.run`` exit with 1. ``"cancelled"``
and ``"skipped"`` hooks are the shutdown deadline's or a forced shutdown's doing, not the
hook's, and are not counted. The hook series come from ``tree.shutdown_report`` and describe
the last shutdown; hooks sharing a name share a series (the longest duration is kept).

The tree's health (``tree.health()``) walks every child, so it is read when the registry is
collected, not per event: ``tree_health_status`` is 1 for the current status (``healthy``,
``degraded``, ``unhealthy``) and 0 for the others. These series exist only while attached.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Final, TypeVar, final

import attrs

from .._context import ChildState
from .._errors import SupervisionError
from .._events import Event, EventKind
from .._extras import missing_extra
from .._spec import HealthStatus
from .._tree import ChildInfo, SupervisorTree

try:
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        Counter,
        Gauge,
        generate_latest,
    )
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector, DuplicateTimeseries
except ImportError as exc:
    raise missing_extra(
        "trio_supervise.integrations.metrics", "prometheus-client", "metrics"
    ) from exc

__all__ = ["TreeMetrics"]

logger = logging.getLogger("trio_supervise.metrics")

_C = TypeVar("_C", bound=Collector)

_NAMESPACE_RE: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

# A run of the child is alive in these states (STOPPING: asked to stop, not gone yet).
_UP_STATES: Final = frozenset({ChildState.RUNNING, ChildState.STOPPING})


@final
@attrs.define(eq=False)
class _PathSeries:
    """The labelled series of one child path, looked up once instead of per event."""

    up: Gauge
    restarts: Counter
    crashes: Counter
    stop_timeouts: Counter
    # The child's restart count as of its last event: the counter moves by the difference.
    last_restarts: int = 0


@final
@attrs.define(eq=False)
class _Attachment:
    """One ``attach()``: the tree and the function that removes the listener."""

    tree: SupervisorTree
    remove_listener: Callable[[], None]


@final
class _HealthCollector:
    """Reads ``tree.health()`` when the registry is collected (a walk of the whole tree)."""

    def __init__(self, owner: TreeMetrics, namespace: str) -> None:
        self._owner = owner
        self._status = f"{namespace}_tree_health_status"
        self._ready = f"{namespace}_tree_ready"
        self._live = f"{namespace}_tree_live"

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                self._status,
                "1 for the tree's current health status (tree.health().status), 0 for the others",
                labels=["status"],
            ),
            GaugeMetricFamily(self._ready, "1 while the tree should get traffic, else 0"),
            GaugeMetricFamily(self._live, "1 while the tree's root supervisor runs, else 0"),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        attachment = self._owner._attachment
        if attachment is None:
            return []
        report = attachment.tree.health()
        status, ready, live = self._families()
        for value in HealthStatus:
            status.add_metric([value.value], 1.0 if report.status is value else 0.0)
        ready.add_metric([], 1.0 if report.ready else 0.0)
        live.add_metric([], 1.0 if report.live else 0.0)
        return [status, ready, live]


def _is_supervisor(tree: SupervisorTree, path: str) -> bool:
    try:
        return tree.info(path).kind == "supervisor"
    except LookupError:  # gone again already
        return False


def _is_waiting(tree: SupervisorTree, path: str) -> bool:
    try:
        return tree.info(path).state is ChildState.STARTING
    except LookupError:
        return False


class _WithoutCreated:
    """A view of a registry without the ``_created`` samples, for ``generate_latest``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric


@final
class TreeMetrics:
    """Prometheus metrics of one supervision tree at a time, in a private registry.

    See the module's docstring for the metrics and when they change.

    Args:
      registry: where to register the metrics; by default a new ``CollectorRegistry`` of
        this object's own (never ``prometheus_client.REGISTRY``, so that two trees, or a
        test run, do not collide).
      namespace: the prefix of every metric name.

    Raises:
      TypeError: ``registry`` is not a ``CollectorRegistry``.
      ValueError: ``namespace`` is not a valid metric name prefix, or ``registry`` already
        holds metrics of this namespace.

    Example::

        from starlette.responses import Response
        from trio_supervise.integrations.metrics import TreeMetrics

        metrics = TreeMetrics()


        async def metrics_endpoint(request):  # GET /metrics, served inside the tree
            body, content_type = metrics.exposition()
            return Response(body, media_type=content_type)


        async with supervisor_tree(spec) as tree:
            metrics.attach(tree)  # in the body: every child has started
            await trio.sleep_forever()
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, namespace: str = "trio_supervise"
    ) -> None:
        if registry is None:
            registry = CollectorRegistry()
        elif not isinstance(registry, CollectorRegistry):
            raise TypeError(
                "TreeMetrics: registry must be a prometheus_client.CollectorRegistry or None"
                f" (got {registry!r})"
            )
        if not isinstance(namespace, str) or not _NAMESPACE_RE.fullmatch(namespace):
            raise ValueError(
                f"TreeMetrics: namespace must match [a-zA-Z_][a-zA-Z0-9_]* (got {namespace!r});"
                " use letters, digits and underscores, e.g. 'my_service'"
            )
        self._registry = registry
        self._namespace = namespace
        # Registered one at a time so that a clash leaves nothing half registered.
        self._collectors: list[Collector] = []
        try:
            self._child_up = self._add(
                Gauge(
                    "child_up",
                    "1 while a run of the child is running (started and not exited yet), else 0",
                    ["path"],
                    namespace=namespace,
                    registry=None,
                )
            )
            self._child_restarts = self._add(
                Counter(
                    "child_restarts",
                    "Restarts of the child, counted when decided (as its restart count)",
                    ["path"],
                    namespace=namespace,
                    registry=None,
                )
            )
            self._child_crashes = self._add(
                Counter(
                    "child_crashes",
                    "Abnormal exits of the child (it raised, failed to start or failed its"
                    " health checks)",
                    ["path"],
                    namespace=namespace,
                    registry=None,
                )
            )
            self._child_stop_timeouts = self._add(
                Counter(
                    "child_stop_timeouts",
                    "Times the child was still running shutdown_timeout after it was asked to stop",
                    ["path"],
                    namespace=namespace,
                    registry=None,
                )
            )
            self._intensity_exceeded = self._add(
                Counter(
                    "supervisor_intensity_exceeded",
                    "Times the supervisor gave up after too many restarts (path '' is the root)",
                    ["path"],
                    namespace=namespace,
                    registry=None,
                )
            )
            self._events = self._add(
                Counter(
                    "events",
                    "Events of the tree, by kind",
                    ["kind"],
                    namespace=namespace,
                    registry=None,
                )
            )
            self._shutdown_in_progress = self._add(
                Gauge(
                    "shutdown_in_progress",
                    "1 while the tree's shutdown runs, else 0",
                    namespace=namespace,
                    registry=None,
                )
            )
            self._shutdown_duration = self._add(
                Gauge(
                    "shutdown_duration_seconds",
                    "How long the last shutdown took",
                    namespace=namespace,
                    registry=None,
                )
            )
            self._hook_duration = self._add(
                Gauge(
                    "shutdown_hook_duration_seconds",
                    "How long each hook of the last shutdown took (0 when skipped)",
                    ["hook"],
                    namespace=namespace,
                    registry=None,
                )
            )
            self._hook_errors = self._add(
                Counter(
                    "shutdown_hook_errors",
                    "Shutdown hooks that raised or overran their own timeout",
                    ["hook"],
                    namespace=namespace,
                    registry=None,
                )
            )
            self._add(_HealthCollector(self, namespace))
        except DuplicateTimeseries as exc:
            for collector in self._collectors:
                registry.unregister(collector)
            raise ValueError(
                f"TreeMetrics: the registry already holds metrics named {sorted(exc.duplicates)};"
                " give each TreeMetrics its own registry (the default) or its own namespace"
            ) from None
        self._event_series = {kind: self._events.labels(kind.value) for kind in EventKind}
        self._handlers: dict[EventKind, Callable[[Event], None]] = {
            EventKind.STARTED: self._on_started,
            EventKind.RESTARTED: self._on_started,
            EventKind.EXITED: self._on_down,
            EventKind.TERMINATED: self._on_down,
            EventKind.RESTART_SCHEDULED: self._on_down,
            EventKind.LOCK_ACQUIRED: self._on_lock_acquired,
            EventKind.LOCK_LOST: self._on_down,
            EventKind.CRASHED: self._on_crashed,
            EventKind.STOP_TIMEOUT: self._on_stop_timeout,
            EventKind.REMOVED: self._on_removed,
            EventKind.INTENSITY_EXCEEDED: self._on_intensity_exceeded,
            EventKind.SHUTDOWN_STARTED: self._on_shutdown_started,
            EventKind.SHUTDOWN_FINISHED: self._on_shutdown_finished,
        }
        # The per-path series of every child path seen and not removed.
        self._series: dict[str, _PathSeries] = {}
        # Parent path -> the child paths below it that have series (to drop subtrees).
        self._children_of: dict[str, set[str]] = {}
        # The current attachment; None while not attached.
        self._attachment: _Attachment | None = None

    def _add(self, collector: _C) -> _C:
        self._registry.register(collector)
        self._collectors.append(collector)
        return collector

    @property
    def registry(self) -> CollectorRegistry:
        """The registry holding the metrics (serve it, or pass it to prometheus_client tools)."""
        return self._registry

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and the ``Content-Type`` to serve them with.

        Call it from the tree's Trio thread (an HTTP endpoint served inside the tree): while
        attached it reads ``tree.health()``, which walks the live tree. It costs about 50 to
        100 µs per child, so a scrape of a tree of 10,000 children takes about half a
        second. The counters' ``_created`` series that prometheus-client adds (a creation
        timestamp per series, which doubles the page for nothing a dashboard of a tree
        uses) are left out; ``registry`` still has them.
        """
        return generate_latest(_WithoutCreated(self._registry)), CONTENT_TYPE_LATEST

    # --------------------------------------------------------------------------- attaching

    def attach(self, tree: SupervisorTree) -> Callable[[], None]:
        """Feed the metrics from ``tree``'s events from now on; return the detach function.

        The children the tree holds now are taken in at once: ``child_up`` from their
        state, the restart counters from their restart counts. Series of paths the tree no
        longer holds (from an earlier attachment) are dropped.

        Detaching (calling the returned function; it can be called again harmlessly) stops
        the updates and the health series; the other values stay as they were, and the
        object can be attached again, to this tree or another one. Attached again, the
        restart counters catch up with the tree's counts; crashes, stop timeouts and events
        that happened while detached are not seen.

        Raises:
          TypeError: ``tree`` is not a running tree's handle.
          RuntimeError: already attached (to this tree or another); detach first, or make
            one ``TreeMetrics`` per tree.
        """
        if not isinstance(tree, SupervisorTree):
            raise TypeError(
                "TreeMetrics.attach takes the tree from 'async with supervisor_tree(spec) as"
                f" tree' (got {tree!r})"
            )
        if self._attachment is not None:
            if self._attachment.tree is tree:
                raise RuntimeError(
                    "TreeMetrics is already attached to this tree; attach it once (events"
                    " would be counted twice)"
                )
            raise RuntimeError(
                "TreeMetrics is already attached to another tree; call the function attach()"
                " returned to detach it first, or make one TreeMetrics per tree"
            )
        self._seed(tree)
        attachment = _Attachment(tree, tree.add_event_listener(self._on_event))
        self._attachment = attachment

        def detach() -> None:
            if self._attachment is attachment:
                attachment.remove_listener()
                self._attachment = None

        return detach

    def _seed(self, tree: SupervisorTree) -> None:
        infos: list[ChildInfo] = []
        self._walk(tree, "", infos)
        present = {info.path for info in infos}
        for path in [path for path in self._series if path not in present]:
            self._drop(path)
        self._intensity_exceeded.labels("")
        for info in infos:
            series = self._path_series(info.path)
            self._count_restarts(series, info.restarts)
            series.up.set(1.0 if info.state in _UP_STATES else 0.0)
            if info.kind == "supervisor":
                self._intensity_exceeded.labels(info.path)

    @staticmethod
    def _walk(tree: SupervisorTree, path: str, into: list[ChildInfo]) -> None:
        try:
            children = tree.children(path)
        except (SupervisionError, LookupError):
            return  # a nested supervisor that has not started yet has no children
        for info in children:
            into.append(info)
            if info.kind == "supervisor":
                TreeMetrics._walk(tree, info.path, into)

    # ------------------------------------------------------------------------------ events

    def _on_event(self, event: Event) -> None:
        # Runs inside the supervisor's bookkeeping: never raise into it.
        try:
            self._event_series[event.kind].inc()
            handler = self._handlers.get(event.kind)
            if handler is not None:
                handler(event)
        except Exception:
            logger.exception(
                "TreeMetrics failed to record %s %s; the metrics may be off from now on",
                event.kind.name,
                event.path or "(root)",
            )

    def _path_series(self, path: str) -> _PathSeries:
        series = self._series.get(path)
        if series is None:
            series = _PathSeries(
                self._child_up.labels(path),
                self._child_restarts.labels(path),
                self._child_crashes.labels(path),
                self._child_stop_timeouts.labels(path),
            )
            self._series[path] = series
            self._children_of.setdefault(path.rpartition("/")[0], set()).add(path)
        return series

    @staticmethod
    def _count_restarts(series: _PathSeries, restarts: int) -> None:
        if restarts > series.last_restarts:
            series.restarts.inc(restarts - series.last_restarts)
        # Lower: a new child at this path (a nested supervisor restarted); count on from it.
        series.last_restarts = restarts

    def _on_started(self, event: Event) -> None:
        series = self._path_series(event.path)
        self._count_restarts(series, event.restarts)
        attachment = self._attachment
        # A singleton has started once it waits for its lock: up once it holds it.
        waiting = attachment is not None and _is_waiting(attachment.tree, event.path)
        series.up.set(0.0 if waiting else 1.0)
        if attachment is not None and _is_supervisor(attachment.tree, event.path):
            # A supervisor's intensity series exists at 0 from its start, as at attach().
            self._intensity_exceeded.labels(event.path)
        if self._children_of.get(event.path):
            # A supervisor (re)started: its children from before that it no longer holds
            # (dynamic ones) left without an event. Its new children have each just
            # emitted STARTED, so this walk costs no more than the start did.
            self._prune(event.path)

    def _on_lock_acquired(self, event: Event) -> None:
        self._path_series(event.path).up.set(1.0)

    def _on_down(self, event: Event) -> None:
        series = self._path_series(event.path)
        self._count_restarts(series, event.restarts)
        series.up.set(0.0)

    def _on_crashed(self, event: Event) -> None:
        series = self._path_series(event.path)
        self._count_restarts(series, event.restarts)
        series.up.set(0.0)
        series.crashes.inc()

    def _on_stop_timeout(self, event: Event) -> None:
        series = self._path_series(event.path)
        self._count_restarts(series, event.restarts)
        series.stop_timeouts.inc()

    def _on_removed(self, event: Event) -> None:
        self._drop(event.path)

    def _on_intensity_exceeded(self, event: Event) -> None:
        self._intensity_exceeded.labels(event.path).inc()

    def _on_shutdown_started(self, event: Event) -> None:
        self._shutdown_in_progress.set(1.0)

    def _on_shutdown_finished(self, event: Event) -> None:
        self._shutdown_in_progress.set(0.0)
        attachment = self._attachment
        # The tree sets its report before it emits SHUTDOWN_FINISHED.
        report = attachment.tree.shutdown_report if attachment is not None else None
        if report is None:
            return
        self._shutdown_duration.set(report.duration)
        durations: dict[str, float] = {}
        for hook in report.hooks:
            durations[hook.name] = max(hook.duration, durations.get(hook.name, 0.0))
            errors = self._hook_errors.labels(hook.name)  # made at 0 for every hook
            if hook.status in ("error", "timed_out"):
                errors.inc()
        self._hook_duration.clear()  # the last shutdown's hooks only
        for name, duration in durations.items():
            self._hook_duration.labels(name).set(duration)

    # ------------------------------------------------------------------------ dropping

    def _prune(self, supervisor_path: str) -> None:
        infos: list[ChildInfo] = []
        attachment = self._attachment
        if attachment is not None:
            # Not a running supervisor: none of the known children are held.
            with contextlib.suppress(SupervisionError, LookupError):
                infos = attachment.tree.children(supervisor_path)
        held = {info.path for info in infos}
        for path in list(self._children_of.get(supervisor_path, ())):
            if path not in held:
                self._drop(path)

    def _drop(self, path: str) -> None:
        """Drop the series of ``path`` and of every path below it."""
        for below in list(self._children_of.pop(path, ())):
            self._drop(below)
        series = self._series.pop(path, None)
        if series is not None:
            self._children_of.get(path.rpartition("/")[0], set()).discard(path)
            for metric in (self._child_up, self._child_restarts, self._child_crashes):
                metric.remove(path)
            self._child_stop_timeouts.remove(path)
        self._intensity_exceeded.remove(path)
