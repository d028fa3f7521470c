"""The observer's live streams, as server-sent events: every event, or the page's deltas.

Each connection is fed by a listener on the tree (``add_event_listener``) into bounded
buffers, so that a slow or stalled client costs a bounded amount of memory and never
slows the tree: the event stream ends for a client that fell ``EVENT_BUFFER`` events
behind (it reconnects and reads ``/api/events``); the page's stream sends a fresh snapshot
instead. The page's stream coalesces: what changed within ``BATCH_SECONDS`` goes out as
one message with each changed child once, whatever the number of its events.

A stream never ends by itself, so each ends when the child that serves it (the observer's
``HTTPServer``) is asked to stop: its server waits for the requests in flight, and an open
page would otherwise hold the server, and the shutdown, until the deadline.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import AsyncGenerator, Iterator
from typing import Any, Final

import trio

from ..._context import current_child
from ..._events import HOOK_KINDS, Event, EventKind
from ..._tree import SupervisorTree
from ._snapshot import children_of, event_json, node, shutdown_json, tree_json

#: Events a client of ``/api/events/stream`` may fall behind before it is dropped.
EVENT_BUFFER: Final = 10_000
#: Seconds the page's stream gathers changes before it sends them.
BATCH_SECONDS: Final = 0.05
#: Seconds without anything to send after which a comment keeps the connection alive
#: (and finds a client that is gone).
KEEPALIVE_SECONDS: Final = 15.0
#: The recent events the page's snapshot carries.
SNAPSHOT_EVENTS: Final = 500
#: Seconds between two looks at the process children's output, which has no events: a
#: process whose output grew is sent as a change.
OUTPUT_EVERY: Final = 1.0


def sse(data: Any, event: str | None = None) -> str:
    """One server-sent event: ``event:`` (if named) and one ``data:`` line of JSON."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return (f"event: {event}\n" if event else "") + f"data: {text}\n\n"


def _stop_requested() -> trio.Event | None:
    """The ``stop_requested`` of the child serving this request; None outside a tree."""
    try:
        return current_child().stop_requested
    except RuntimeError:  # served outside a tree: a stream ends with its client only
        return None


class _Feed:
    """What one connection has not sent yet, filled by the tree's listener."""

    def __init__(self, limit: int, stop: trio.Event | None = None) -> None:
        self.events: deque[Event] = deque()
        self.limit = limit
        self.overflowed = False
        self.wake = trio.Event()
        self.stop = stop

    def __call__(self, event: Event) -> None:
        if len(self.events) >= self.limit:
            self.overflowed = True
            self.events.clear()
        else:
            self.events.append(event)
        self.wake.set()

    @property
    def stopped(self) -> bool:
        """True once the serving child was asked to stop: the stream is to end."""
        return self.stop is not None and self.stop.is_set()

    async def wait(self, seconds: float) -> bool:
        """Wait until there is something to send; False after ``seconds`` with nothing, or
        once ``stopped``."""
        stop = self.stop
        if stop is None:
            with trio.move_on_after(seconds):
                await self.wake.wait()
        else:
            async with trio.open_nursery() as nursery:

                async def on_stop() -> None:
                    await stop.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(on_stop)
                with trio.move_on_after(seconds):
                    await self.wake.wait()
                nursery.cancel_scope.cancel()
        if not self.wake.is_set() or self.stopped:
            return False
        self.wake = trio.Event()
        return True

    def take(self) -> list[Event]:
        events = list(self.events)
        self.events.clear()
        return events


async def event_stream(tree: SupervisorTree) -> AsyncGenerator[str, None]:
    """Every event from now on, one JSON object per ``data:`` line (``/api/events/stream``)."""
    feed = _Feed(EVENT_BUFFER, _stop_requested())
    remove = tree.add_event_listener(feed)
    try:
        yield "retry: 1000\n\n"
        while not feed.stopped:
            if not await feed.wait(KEEPALIVE_SECONDS):
                if not feed.stopped:
                    yield ": keepalive\n\n"
                continue
            if feed.overflowed:
                yield sse({"dropped": "this client fell behind; read /api/events"}, "overflow")
                return
            for event in feed.take():
                yield sse(event_json(event))
    finally:
        remove()


async def page_stream(tree: SupervisorTree) -> AsyncGenerator[str, None]:
    """The page's stream: a ``snapshot``, then ``changes`` as they come (see the module).

    ``snapshot``: ``{now, tree, events, shutdown}``. ``changes``: ``{now, events, nodes,
    removed, order}``: the new events, the changed children (without their children),
    the paths gone, and for each supervisor that gained children the new order of their
    names. ``shutdown``: the report, once a shutdown has finished (then a new snapshot).
    """
    feed = _Feed(EVENT_BUFFER, _stop_requested())
    remove = tree.add_event_listener(feed)
    try:
        yield "retry: 1000\n\n"
        yield_snapshot = True
        paths: set[str] = set()
        # The output tail last sent of each process child, by path.
        outputs: dict[str, tuple[str, ...]] = {}
        sent = trio.current_time()
        while not feed.stopped:
            if yield_snapshot:
                snapshot = tree_json(tree)
                nodes = list(_flat(snapshot))
                paths = {n["path"] for n in nodes}
                outputs = _outputs_of(nodes)
                recent = [event_json(event) for event in tree.history[-SNAPSHOT_EVENTS:]]
                yield sse(
                    {
                        "now": trio.current_time(),
                        "tree": snapshot,
                        "events": recent,
                        "shutdown": shutdown_json(tree.shutdown_report),
                    },
                    "snapshot",
                )
                yield_snapshot = False
            if not await feed.wait(OUTPUT_EVERY if outputs else KEEPALIVE_SECONDS):
                if feed.stopped:
                    continue
                grown = _grown_output(tree, outputs)
                if grown:
                    yield sse(_message(nodes=grown), "changes")
                    sent = trio.current_time()
                elif trio.current_time() - sent >= KEEPALIVE_SECONDS:
                    yield ": keepalive\n\n"
                    sent = trio.current_time()
                continue
            await trio.sleep(BATCH_SECONDS)
            if feed.overflowed:
                feed.overflowed, yield_snapshot = False, True
                feed.take()
                continue
            events = feed.take()
            changes = _changes(tree, events, paths)
            outputs.update(_outputs_of(changes["nodes"]))
            yield sse(changes, "changes")
            sent = trio.current_time()
            if any(event.kind is EventKind.SHUTDOWN_FINISHED for event in events):
                yield sse(shutdown_json(tree.shutdown_report), "shutdown")
                # The shutdown stops children without an event each (a pending restart
                # called off): a fresh snapshot shows the tree as it was left.
                yield_snapshot = True
    finally:
        remove()


def _outputs_of(nodes: list[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
    """The output tail of each process child among ``nodes``."""
    return {
        n["path"]: tuple(n["output_tail"])
        for n in nodes
        if n["pid"] is not None or n["output_tail"]
    }


def _grown_output(
    tree: SupervisorTree, outputs: dict[str, tuple[str, ...]]
) -> list[dict[str, Any]]:
    """The process children whose output tail changed since it was sent."""
    grown = []
    for path, last in list(outputs.items()):
        try:
            info = tree.info(path)
        except LookupError:
            del outputs[path]  # gone: its REMOVED event says so
            continue
        if info.output_tail != last:
            outputs[path] = info.output_tail
            grown.append(node(tree, info))
    return grown


def _message(
    *,
    events: list[Event] | None = None,
    nodes: list[dict[str, Any]] | None = None,
    removed: list[str] | None = None,
    order: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """A ``changes`` message."""
    return {
        "now": trio.current_time(),
        "events": [event_json(event) for event in events or ()],
        "nodes": nodes or [],
        "removed": removed or [],
        "order": order or {},
    }


def _flat(tree: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a nested tree, parents first."""
    yield tree
    for child in tree["children"]:
        yield from _flat(child)


def _changes(tree: SupervisorTree, events: list[Event], paths: set[str]) -> dict[str, Any]:
    changed: dict[str, None] = {}
    for event in events:
        if event.kind not in HOOK_KINDS:
            changed[event.path] = None
    nodes: list[dict[str, Any]] = []
    removed: list[str] = []
    grown: dict[str, None] = {}
    for path in changed:
        try:
            info = tree.info(path)
        except LookupError:
            if path in paths:
                paths.discard(path)
                removed.extend(_below(paths, path))
                removed.append(path)
            continue
        nodes.append(node(tree, info))
        if path not in paths:
            paths.add(path)
            grown[path.rpartition("/")[0]] = None
    order: dict[str, list[str]] = {}
    for parent in grown:
        try:
            order[parent] = [child.name for child in children_of(tree, tree.info(parent))]
        except LookupError:
            continue
    return _message(events=events, nodes=nodes, removed=removed, order=order)


def _below(paths: set[str], path: str) -> list[str]:
    """The known paths below ``path``, removed from ``paths``."""
    prefix = f"{path}/" if path else ""
    below = [p for p in paths if p.startswith(prefix) and p != path]
    for p in below:
        paths.discard(p)
    return below
