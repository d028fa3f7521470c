"""Events: their fields, the bounded history, the streams, and the logging of each event."""

from __future__ import annotations

import logging
import random
import re
import subprocess
import sys
import textwrap

import pytest
import trio
import trio.testing

from trio_supervise import (
    Backoff,
    ChildSpec,
    Event,
    EventKind,
    EventStream,
    RestartIntensityExceeded,
    SupervisorSpec,
    supervisor_tree,
)
from trio_supervise._events import EventBus
from trio_supervise.testing import crash_after, sleeper


class Boom(Exception):
    pass


def _extra(record: logging.LogRecord, name: str) -> object:
    # ``extra`` fields become attributes of the record, unknown to its type.
    return vars(record).get(name)


def _event_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The records of events (not the shutdown report) logged by trio_supervise."""
    names = {kind.name for kind in EventKind}
    return [
        record
        for record in caplog.records
        if record.name == "trio_supervise" and _extra(record, "kind") in names
    ]


# --------------------------------------------------------------------------- fields


async def test_crashed_event_fields_and_the_error_object(
    autojump_clock: trio.testing.MockClock,
) -> None:
    error = Boom("disk on fire")
    crashed_at: list[float] = []

    async def worker() -> None:
        await trio.sleep(2)
        crashed_at.append(trio.current_time())
        raise error

    spec = SupervisorSpec("root", [ChildSpec("w", worker)], backoff=Backoff(initial=0.5, jitter=0))
    async with supervisor_tree(spec) as tree:
        await trio.sleep(2.1)
        tree.shutdown()

    crashed = [event for event in tree.history if event.kind is EventKind.CRASHED]
    assert len(crashed) == 1
    event = crashed[0]
    assert event.path == "w"
    # The time is the trio clock at the moment the child raised, exactly.
    assert event.time == crashed_at[0]
    assert event.time == pytest.approx(2.0)
    assert event.restarts == 0
    assert event.error is error
    assert isinstance(event, Event)


async def test_started_restart_scheduled_restarted_fields(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec(
        "root",
        [ChildSpec("w", crash_after(2.0, starts=1))],
        backoff=Backoff(initial=0.5, jitter=0),
    )
    async with supervisor_tree(spec) as tree:
        await trio.sleep(3)
        events = [event for event in tree.history if event.path == "w"]

    assert [(e.kind, e.restarts) for e in events] == [
        (EventKind.STARTED, 0),
        (EventKind.CRASHED, 0),
        (EventKind.RESTART_SCHEDULED, 1),
        (EventKind.RESTARTED, 1),
    ]
    assert [e.time for e in events] == pytest.approx([0.0, 2.0, 2.0, 2.5])
    crashed, scheduled = events[1], events[2]
    # The restart decision carries the error that caused it.
    assert scheduled.error is crashed.error
    assert events[0].error is None
    assert events[3].error is None


def _delay_in(detail: str) -> float:
    match = re.search(r"(\d+(?:\.\d+)?)\s*s\b", detail)
    assert match is not None, f"no delay in detail {detail!r}"
    return float(match.group(1))


async def test_restart_scheduled_detail_gives_the_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec(
        "root",
        [ChildSpec("w", crash_after(1.0, starts=3))],
        backoff=Backoff(initial=0.25, factor=2.0, jitter=0),
        max_restarts=10,
    )
    async with supervisor_tree(spec) as tree:
        # crashes at 1; restart at 1.25; crashes at 2.25; restart at 2.75; crashes at 3.75;
        # restart at 4.75; then it runs for good.
        await trio.sleep(10)

    scheduled = [e for e in tree.history if e.kind is EventKind.RESTART_SCHEDULED]
    assert [_delay_in(e.detail) for e in scheduled] == [0.25, 0.5, 1.0]
    assert [e.time for e in scheduled] == [
        pytest.approx(1.0),
        pytest.approx(2.25),
        pytest.approx(3.75),
    ]
    restarted = [e.time for e in tree.history if e.kind is EventKind.RESTARTED]
    assert restarted == [pytest.approx(1.25), pytest.approx(2.75), pytest.approx(4.75)]


async def test_restart_scheduled_detail_matches_the_jittered_wait(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec(
        "root",
        [ChildSpec("w", crash_after(1.0, starts=1))],
        backoff=Backoff(initial=2.0, jitter=1.0),
    )
    async with supervisor_tree(spec, rng=random.Random(42)) as tree:
        await trio.sleep(10)

    (scheduled,) = [e for e in tree.history if e.kind is EventKind.RESTART_SCHEDULED]
    (restarted,) = [e for e in tree.history if e.kind is EventKind.RESTARTED]
    delay = _delay_in(scheduled.detail)
    assert 2.0 <= delay <= 4.0
    # The detail rounds to milliseconds; the real wait is that delay.
    assert restarted.time - scheduled.time == pytest.approx(delay, abs=1e-3)


async def test_intensity_exceeded_event_has_the_supervisor_path_and_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec(
        "root",
        [SupervisorSpec("sub", [ChildSpec("w", crash_after(1.0))], max_restarts=0)],
        max_restarts=0,
    )
    with pytest.raises(RestartIntensityExceeded) as excinfo:
        async with supervisor_tree(spec) as tree:
            await trio.sleep_forever()
    assert excinfo.type is RestartIntensityExceeded

    exceeded = [e for e in tree.history if e.kind is EventKind.INTENSITY_EXCEEDED]
    assert [e.path for e in exceeded] == ["sub", ""]
    assert [e.time for e in exceeded] == [pytest.approx(1.0), pytest.approx(1.0)]
    assert all(isinstance(e.error, RestartIntensityExceeded) for e in exceeded)
    assert exceeded[1].error is excinfo.value


# -------------------------------------------------------------------------- history


async def test_history_is_bounded_and_oldest_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec("root", [ChildSpec(f"w{i}", sleeper()) for i in range(5)], backoff=None)
    async with supervisor_tree(spec, history_size=3) as tree:
        assert [(e.kind, e.path) for e in tree.history] == [
            (EventKind.STARTED, "w2"),
            (EventKind.STARTED, "w3"),
            (EventKind.STARTED, "w4"),
        ]
        for i in range(5):
            await trio.sleep(1)
            await tree.terminate_child(f"w{i}")
        history = tree.history
        assert len(history) == 3
        assert [e.path for e in history] == ["w2", "w3", "w4"]
        assert all(e.kind is EventKind.TERMINATED for e in history)
        assert [e.time for e in history] == [
            pytest.approx(3.0),
            pytest.approx(4.0),
            pytest.approx(5.0),
        ]
        # A snapshot: it does not change under the caller's feet.
        await tree.restart_child("w0")
        assert [e.path for e in history] == ["w2", "w3", "w4"]
        assert tree.history[-1].path == "w0"


async def test_history_defaults_to_many_events(autojump_clock: trio.testing.MockClock) -> None:
    spec = SupervisorSpec("root", [ChildSpec(f"w{i}", sleeper()) for i in range(50)])
    async with supervisor_tree(spec) as tree:
        assert [e.path for e in tree.history] == [f"w{i}" for i in range(50)]


# -------------------------------------------------------------------------- streams


async def test_stream_gives_only_events_from_now_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec(
        "root", [ChildSpec("a", sleeper()), ChildSpec("w", crash_after(2.0))], backoff=None
    )
    async with supervisor_tree(spec) as tree:
        assert len(tree.history) == 2  # the two STARTED events are history already
        async with tree.events() as stream:
            event = await stream.__anext__()
            assert trio.current_time() == pytest.approx(2.0)
            assert (event.kind, event.path) == (EventKind.CRASHED, "w")
            assert (await stream.__anext__()).kind is EventKind.RESTART_SCHEDULED
            assert (await stream.__anext__()).kind is EventKind.RESTARTED
            assert event is tree.history[2]


async def test_several_streams_each_get_every_event(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec(
        "root",
        [ChildSpec("a", sleeper()), ChildSpec("w", crash_after(1.0, starts=2))],
        backoff=None,
    )
    received: dict[str, list[Event]] = {"one": [], "two": [], "three": []}

    async def consume(name: str, stream: EventStream) -> None:
        async for event in stream:
            received[name].append(event)

    async with trio.open_nursery() as nursery:
        async with supervisor_tree(spec) as tree:
            before = len(tree.history)
            for name in received:
                nursery.start_soon(consume, name, tree.events())
            await trio.sleep(5)
        expected = tree.history[before:]

    assert [e.kind for e in expected][:3] == [
        EventKind.CRASHED,
        EventKind.RESTART_SCHEDULED,
        EventKind.RESTARTED,
    ]
    assert expected[-1].kind is EventKind.SHUTDOWN_FINISHED
    for events in received.values():
        assert events == expected
        assert all(a is b for a, b in zip(events, expected, strict=True))


async def test_stream_ends_when_the_tree_has_finished(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec("root", [ChildSpec("a", sleeper())])
    ended_at: list[float] = []
    received: list[EventKind] = []

    async def consume(stream: EventStream) -> None:
        async for event in stream:
            received.append(event.kind)
        ended_at.append(trio.current_time())

    # The nursery only exits once the stream has ended by itself.
    async with trio.open_nursery() as nursery, supervisor_tree(spec) as tree:
        nursery.start_soon(consume, tree.events())
        await trio.sleep(3)

    assert ended_at == [pytest.approx(3.0)]
    assert received == [
        EventKind.SHUTDOWN_STARTED,
        EventKind.TERMINATED,
        EventKind.HOOK_FINISHED,
        EventKind.SHUTDOWN_FINISHED,
    ]
    # A stream asked for after the end ends at once.
    late = [event async for event in tree.events()]
    assert late == []


async def test_async_with_closes_the_stream(autojump_clock: trio.testing.MockClock) -> None:
    spec = SupervisorSpec("root", [ChildSpec("w", crash_after(1.0, starts=2))], backoff=None)
    async with supervisor_tree(spec) as tree:
        stream = tree.events()
        async with stream as entered:
            assert entered is stream
        await trio.sleep(5)  # crashes and restarts meanwhile
        assert any(e.kind is EventKind.CRASHED for e in tree.history)
        # Closed: nothing was buffered for it, and iterating ends at once.
        assert [event async for event in stream] == []


# -------------------------------------------------------------------------- logging


async def test_every_event_is_logged_with_path_and_kind(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_supervise")
    spec = SupervisorSpec(
        "root",
        [ChildSpec("a", sleeper()), SupervisorSpec("db", [ChildSpec("pool", crash_after(1.0))])],
        backoff=None,
    )
    async with supervisor_tree(spec) as tree:
        await trio.sleep(1.5)

    records = _event_records(caplog)
    # A hook's event names the hook in ``hook``; ``path`` is then the root's "".
    assert [(_extra(r, "kind"), _extra(r, "hook") or _extra(r, "path")) for r in records] == [
        (e.kind.name, e.path) for e in tree.history
    ]
    assert ("CRASHED", "db/pool") in [(_extra(r, "kind"), _extra(r, "path")) for r in records]
    assert all(r.name == "trio_supervise" for r in records)


async def test_crashed_is_logged_at_warning_with_exc_info(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_supervise")
    error = Boom("bad")
    spec = SupervisorSpec("root", [ChildSpec("w", crash_after(1.0, error, starts=1))], backoff=None)
    async with supervisor_tree(spec):
        await trio.sleep(2)

    (crashed,) = [r for r in _event_records(caplog) if _extra(r, "kind") == "CRASHED"]
    assert crashed.levelno == logging.WARNING
    assert _extra(crashed, "path") == "w"
    assert crashed.exc_info is not None
    assert crashed.exc_info[1] is error
    others = [r for r in _event_records(caplog) if _extra(r, "kind") in ("STARTED", "RESTARTED")]
    assert others
    assert all(r.levelno == logging.INFO and not r.exc_info for r in others)


async def test_intensity_exceeded_is_logged_at_error(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_supervise")
    spec = SupervisorSpec("root", [ChildSpec("w", crash_after(1.0))], max_restarts=0)
    with pytest.raises(RestartIntensityExceeded):
        async with supervisor_tree(spec):
            await trio.sleep_forever()

    (record,) = [r for r in _event_records(caplog) if _extra(r, "kind") == "INTENSITY_EXCEEDED"]
    assert record.levelno == logging.ERROR
    assert _extra(record, "path") == ""


def test_library_adds_only_a_null_handler() -> None:
    # At most a NullHandler: no output of its own, no level, records go to the app's handlers.
    logger = logging.getLogger("trio_supervise")
    assert all(type(handler) is logging.NullHandler for handler in logger.handlers)
    assert logger.level == logging.NOTSET
    assert logger.propagate
    assert not logger.disabled


def test_importing_and_running_does_not_configure_logging() -> None:
    # In a fresh interpreter: importing the package and crashing a child touches neither
    # the root logger nor stderr (no last-resort output), as a library should.
    code = textwrap.dedent(
        """
        import logging
        import trio, trio.testing
        import trio_supervise
        from trio_supervise import ChildSpec, SupervisorSpec, supervisor_tree
        from trio_supervise.testing import crash_after

        root = logging.getLogger()
        assert root.handlers == [], root.handlers
        assert root.level == logging.WARNING, root.level

        async def main():
            spec = SupervisorSpec("root", [ChildSpec("w", crash_after(1.0))], max_restarts=0)
            try:
                async with supervisor_tree(spec):
                    await trio.sleep_forever()
            except trio_supervise.RestartIntensityExceeded:
                pass

        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        assert root.handlers == [], root.handlers
        print("done")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    assert result.stderr == ""


def test_a_hook_event_logs_the_hook_apart_from_the_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Issue 10, item 12: a hook's name was logged in the ``path`` field, which everywhere
    # else names a child of the tree.
    caplog.set_level(logging.INFO, logger="trio_supervise")
    bus = EventBus(10)
    bus.emit(EventKind.HOOK_FINISHED, "database: close", detail="ok in 0.001s", time=1.0)
    bus.emit(EventKind.STARTED, "db/conn", time=1.0)
    [hook, child] = caplog.records
    assert (hook.path, hook.hook, hook.getMessage()) == (  # type: ignore[attr-defined]
        "",
        "database: close",
        "HOOK_FINISHED database: close: ok in 0.001s",
    )
    assert child.path == "db/conn"  # type: ignore[attr-defined]
    assert not hasattr(child, "hook")
