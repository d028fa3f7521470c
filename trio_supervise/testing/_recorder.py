"""Recording a tree's events and waiting for a tree to settle, for tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import final

import trio
import trio.lowlevel
import trio.testing

from .._context import ChildState
from .._events import Event, EventKind, EventStream
from .._tree import SupervisorTree

#: An expected event: a kind, or a kind and a path.
Expected = EventKind | tuple[EventKind, str]


def _matches(event: Event, expected: Expected) -> bool:
    if isinstance(expected, EventKind):
        return event.kind is expected
    kind, path = expected
    return event.kind is kind and event.path == path


def _show(events: Iterable[Event]) -> str:
    return "\n".join(f"  {event}" for event in events) or "  (no events)"


@final
class EventRecorder:
    """Records a tree's events from the moment it is made, with no task of its own.

    Example::

        recorder = EventRecorder(tree)
        await trio.sleep(5)
        recorder.assert_sequence(
            (EventKind.CRASHED, "worker"), (EventKind.RESTARTED, "worker")
        )
    """

    def __init__(self, tree: SupervisorTree) -> None:
        self._stream: EventStream = tree.events()
        self._events: list[Event] = []

    def _drain(self) -> None:
        receive = self._stream._receive
        while True:
            try:
                self._events.append(receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return

    @property
    def events(self) -> list[Event]:
        """Every event recorded so far, oldest first."""
        self._drain()
        return list(self._events)

    def of(self, kind: EventKind | None = None, path: str | None = None) -> list[Event]:
        """The recorded events of one kind and/or path."""
        return [
            event
            for event in self.events
            if (kind is None or event.kind is kind) and (path is None or event.path == path)
        ]

    def kinds(self, path: str | None = None) -> list[EventKind]:
        """The kinds of the recorded events (of one path), in order."""
        return [event.kind for event in self.of(path=path)]

    def assert_sequence(self, *expected: Expected) -> None:
        """Assert that the events contain ``expected`` in this order (others may be between)."""
        events = self.events
        position = 0
        for item in expected:
            while position < len(events) and not _matches(events[position], item):
                position += 1
            if position == len(events):
                raise AssertionError(
                    f"expected {item!r} (after the earlier expected events) but it did not"
                    f" come; the events were:\n{_show(events)}"
                )
            position += 1

    def assert_exact(self, *expected: Expected, path: str | None = None) -> None:
        """Assert that the events (of ``path``, if given) are exactly ``expected``."""
        events = self.of(path=path)
        if len(events) != len(expected) or not all(map(_matches, events, expected)):
            raise AssertionError(
                f"expected exactly {list(expected)!r}; the events were:\n{_show(events)}"
            )

    async def wait_for(self, kind: EventKind, path: str | None = None, *, count: int = 1) -> Event:
        """Wait until ``count`` events of ``kind`` (and ``path``) were recorded; return the last."""
        while True:
            matching = self.of(kind, path)
            if len(matching) >= count:
                return matching[count - 1]
            try:
                self._events.append(await self._stream._receive.receive())
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise AssertionError(
                    f"the tree ended before {count} {kind.name} event(s)"
                    f"{f' of {path!r}' if path is not None else ''}; the events were:\n"
                    f"{_show(self._events)}"
                ) from None

    def close(self) -> None:
        """Stop recording."""
        self._drain()
        self._stream.close()


_TRANSIENT = (ChildState.STARTING, ChildState.STOPPING)


def _busy(tree: SupervisorTree, path: str = "") -> list[str]:
    busy = []
    for info in tree.children(path):
        if info.state in _TRANSIENT:
            busy.append(info.path)
        if info.kind == "supervisor" and info.state is not ChildState.STOPPED:
            busy += _busy(tree, info.path)
    return busy


async def wait_idle(tree: SupervisorTree) -> None:
    """Wait until nothing in the tree can make progress without time passing.

    Every task is blocked and no child is starting or stopping. Children waiting for their
    backoff (``RESTARTING``) count as idle: only time moves them on. Under an autojump
    ``MockClock`` this returns before the clock jumps when it can.
    """
    while True:
        await trio.testing.wait_all_tasks_blocked()
        if not _busy(tree):
            return
        await tree.wait_changed()


async def wait_stable(tree: SupervisorTree) -> None:
    """Wait until every child is ``RUNNING`` or ``STOPPED``: pending restarts are done.

    Virtual time passes until then.
    """

    def unsettled(path: str = "") -> bool:
        for info in tree.children(path):
            if info.state not in (ChildState.RUNNING, ChildState.STOPPED):
                return True
            if (
                info.kind == "supervisor"
                and info.state is ChildState.RUNNING
                and unsettled(info.path)
            ):
                return True
        return False

    while unsettled():
        await tree.wait_changed()
    await trio.testing.wait_all_tasks_blocked()


async def wait_state(tree: SupervisorTree, path: str, state: ChildState) -> None:
    """Wait until the child at ``path`` is in ``state`` (virtual time passes meanwhile)."""
    while tree.info(path).state is not state:
        await tree.wait_changed()
