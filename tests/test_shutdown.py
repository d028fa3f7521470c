"""The graceful shutdown: hooks in priority bands, in a shielded scope with a deadline.

Signals and ``trio_supervise.run()`` are tested with their own issue.
"""

from __future__ import annotations

import logging
import math

import pytest
import trio
import trio.testing
from timed_hooks import Spans, timed

from trio_supervise import (
    AutoShutdown,
    Band,
    ChildSpec,
    ChildState,
    DrainDelay,
    EventKind,
    HookResult,
    Restart,
    RestartIntensityExceeded,
    ShutdownHook,
    ShutdownReport,
    SpecError,
    SupervisorSpec,
    current_tree,
    supervisor_tree,
)
from trio_supervise.testing import (
    EventRecorder,
    ServiceFactory,
    crash_after,
    refuse_stop,
    return_after,
    sleeper,
)


class HookError(Exception):
    pass


async def nothing() -> None:
    pass


def not_async() -> None:
    pass


def simple() -> SupervisorSpec:
    return SupervisorSpec("root", [ChildSpec("a", sleeper()), ChildSpec("b", sleeper())])


def results(report: ShutdownReport | None) -> dict[str, tuple[str, float]]:
    """Each hook's status and duration (rounded to 1 ns: virtual time is exact)."""
    assert report is not None
    return {hook.name: (hook.status, round(hook.duration, 9)) for hook in report.hooks}


# ---------------------------------------------------------------------- hook values


def test_band_values() -> None:
    assert [(band.name, int(band)) for band in Band] == [
        ("STOP_ACCEPTING", 0),
        ("DRAIN", 10),
        ("FLUSH", 20),
        ("CLOSE", 30),
        ("CLEANUP", 40),
    ]


@pytest.mark.parametrize(
    ("priority", "band"), [(0, 0), (9, 0), (Band.DRAIN, 1), (25, 2), (Band.CLEANUP, 4), (99, 9)]
)
def test_a_hook_band_is_its_priority_over_ten(priority: int, band: int) -> None:
    hook = ShutdownHook("h", nothing, priority=priority)
    assert hook.band == band == priority // 10


def test_hook_fields() -> None:
    hook = ShutdownHook("flush", nothing, priority=Band.FLUSH, timeout=2.5)
    assert (hook.name, hook.fn, hook.priority, hook.timeout) == ("flush", nothing, 20, 2.5)
    assert ShutdownHook("h", nothing, priority=0).timeout is None


def test_hook_priority_is_required() -> None:
    with pytest.raises(TypeError, match="priority"):
        ShutdownHook("h", nothing)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, r"^ShutdownHook: name must be a non-empty string \(got ''\)$"),
        ({"priority": -1}, r"^ShutdownHook 'h': priority must be >= 0 \(got -1\)$"),
        ({"priority": 1.5}, r"^ShutdownHook 'h': priority must be an int >= 0 \(got 1\.5\)$"),
        ({"priority": True}, r"^ShutdownHook 'h': priority must be an int >= 0 \(got True\)$"),
        ({"timeout": -1}, r"^ShutdownHook 'h': timeout must be >= 0 or None \(got -1\)$"),
        ({"timeout": math.nan}, r"^ShutdownHook 'h': timeout must be >= 0 or None \(got nan\)$"),
        (
            {"fn": not_async},
            r"^ShutdownHook 'h': fn must be an async function .*\(got function 'not_async'\)",
        ),
    ],
)
def test_hook_validation(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"name": "h", "fn": nothing, "priority": 0, **kwargs}
    with pytest.raises(SpecError, match=message) as excinfo:
        ShutdownHook(**arguments)  # type: ignore[arg-type]
    assert isinstance(excinfo.value, ValueError)


def test_hook_fn_must_not_be_a_coroutine_object() -> None:
    coroutine = nothing()
    with pytest.raises(SpecError, match=r"^ShutdownHook 'h': fn must be an async function, not a"):
        ShutdownHook("h", coroutine, priority=0)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ bands


async def test_bands_run_lowest_first_and_hooks_of_a_band_together(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spans: Spans = {}
    hooks = [
        ShutdownHook("close", timed(spans, "close", 1.0), priority=Band.CLOSE),
        ShutdownHook("stop-a", timed(spans, "stop-a", 1.0), priority=0),
        ShutdownHook("stop-b", timed(spans, "stop-b", 2.0), priority=5),
        ShutdownHook("flush", timed(spans, "flush", 3.0), priority=Band.FLUSH + 9),
        ShutdownHook("drain", timed(spans, "drain", 0.5), priority=Band.DRAIN + 1),
    ]
    async with supervisor_tree(simple(), hooks=hooks) as tree:
        await trio.sleep(1)
    assert spans == {
        # band 0: together from 1.0; band 1 (with "supervisor") once both ended at 3.0
        "stop-a": (1.0, 2.0),
        "stop-b": (1.0, 3.0),
        "drain": (3.0, 3.5),
        "flush": (3.5, 6.5),
        "close": (6.5, 7.5),
    }
    assert trio.current_time() == pytest.approx(7.5)
    report = tree.shutdown_report
    assert report is not None
    assert report.started == pytest.approx(1.0)
    assert report.duration == pytest.approx(6.5)
    assert report.ok
    # In the order they were registered, the built-in one first.
    assert [hook.name for hook in report.hooks] == [
        "supervisor",
        "close",
        "stop-a",
        "stop-b",
        "flush",
        "drain",
    ]
    assert results(report) == {
        "supervisor": ("ok", 0.0),
        "close": ("ok", 1.0),
        "stop-a": ("ok", 1.0),
        "stop-b": ("ok", 2.0),
        "flush": ("ok", 3.0),
        "drain": ("ok", 0.5),
    }


async def test_the_supervisor_hook_is_in_the_report(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with supervisor_tree(simple()) as tree:
        pass
    assert tree.shutdown_report is not None
    (hook,) = tree.shutdown_report.hooks
    assert hook == HookResult("supervisor", 10, "ok", 0.0, None, started=0.0)
    assert hook.priority == Band.DRAIN


async def test_the_supervisor_hook_stops_children_in_reverse_start_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec(
        "root",
        [
            ChildSpec("a", sleeper()),
            SupervisorSpec("sub", [ChildSpec("x", sleeper()), ChildSpec("y", sleeper())]),
            ChildSpec("c", sleeper()),
        ],
    )
    spans: Spans = {}
    hooks = [
        ShutdownHook("before", timed(spans, "before", 1.0), priority=Band.STOP_ACCEPTING),
        ShutdownHook("after", timed(spans, "after", 1.0), priority=Band.FLUSH),
    ]
    async with supervisor_tree(spec, hooks=hooks) as tree:
        recorder = EventRecorder(tree)
    stops = [(e.kind, e.path) for e in recorder.events if e.kind is not EventKind.HOOK_FINISHED]
    assert stops == [
        (EventKind.SHUTDOWN_STARTED, ""),
        (EventKind.TERMINATED, "c"),
        (EventKind.TERMINATED, "sub/y"),
        (EventKind.TERMINATED, "sub/x"),
        (EventKind.TERMINATED, "sub"),
        (EventKind.TERMINATED, "a"),
        (EventKind.SHUTDOWN_FINISHED, ""),
    ]
    # The children were stopped in band DRAIN: after "before", before "after".
    terminated = recorder.of(EventKind.TERMINATED)
    assert all(e.time == pytest.approx(1.0) for e in terminated)
    assert spans == {"before": (0.0, 1.0), "after": (1.0, 2.0)}
    hook_order = [e.path for e in recorder.of(EventKind.HOOK_FINISHED)]
    assert hook_order == ["before", "supervisor", "after"]


async def test_the_supervisor_hook_moves_on_past_a_stop_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec(
        "root",
        [
            ChildSpec("a", sleeper()),
            ChildSpec("b", refuse_stop(10.0), shutdown_timeout=2.0),
            ChildSpec("c", sleeper()),
        ],
    )
    async with supervisor_tree(spec) as tree:
        recorder = EventRecorder(tree)
    # "b" overran its 2 s: "a" is stopped then, and "b" is waited for at the end.
    assert [(e.kind, e.path, e.time) for e in recorder.events][1:5] == [
        (EventKind.TERMINATED, "c", 0.0),
        (EventKind.STOP_TIMEOUT, "b", 2.0),
        (EventKind.TERMINATED, "a", 2.0),
        (EventKind.TERMINATED, "b", 10.0),
    ]
    # The cut stop is in the report: the hook is timed out, and the report not ok.
    report = tree.shutdown_report
    assert report is not None
    assert results(report)["supervisor"] == ("timed_out", 10.0)
    assert not report.ok
    (hook,) = [hook for hook in report.hooks if hook.name == "supervisor"]
    assert str(hook.error) == "cut at a timeout: b (shutdown_timeout 2s)"


async def test_a_child_that_raises_as_the_shutdown_stops_it_makes_the_report_an_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def raises_on_stop() -> None:
        try:
            await trio.sleep_forever()
        finally:
            raise RuntimeError("lost the buffer")

    spec = SupervisorSpec(
        "root",
        [ChildSpec("a", sleeper()), SupervisorSpec("inner", [ChildSpec("b", raises_on_stop)])],
    )
    async with supervisor_tree(spec) as tree:
        pass
    report = tree.shutdown_report
    assert report is not None
    assert results(report)["supervisor"] == ("error", 0.0)
    (hook,) = [hook for hook in report.hooks if hook.name == "supervisor"]
    assert str(hook.error) == "raised while stopping: inner/b: RuntimeError('lost the buffer')"
    assert not report.ok


async def test_a_hook_that_raises_too_slow_error_is_timed_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def waits_for_a_flush() -> None:
        with trio.fail_after(1.5):
            await trio.sleep_forever()

    spec = SupervisorSpec("root", [ChildSpec("a", sleeper())])
    hook = ShutdownHook("flush", waits_for_a_flush, priority=Band.FLUSH)
    async with supervisor_tree(spec, hooks=[hook]) as tree:
        pass
    report = tree.shutdown_report
    assert report is not None
    assert results(report)["flush"] == ("timed_out", 1.5)
    assert isinstance(report.hooks[-1].error, trio.TooSlowError)


async def test_a_hook_that_raises_is_recorded_and_the_shutdown_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    error = HookError("flush failed")
    spans: Spans = {}

    async def failing() -> None:
        await trio.sleep(1)
        raise error

    hooks = [
        ShutdownHook("failing", failing, priority=0),
        ShutdownHook("sibling", timed(spans, "sibling", 2.0), priority=1),
        ShutdownHook("later", timed(spans, "later", 1.0), priority=Band.CLOSE),
    ]
    async with supervisor_tree(simple(), hooks=hooks) as tree:
        pass
    report = tree.shutdown_report
    assert report is not None
    (failed,) = [hook for hook in report.hooks if hook.name == "failing"]
    assert failed == HookResult("failing", 0, "error", 1.0, error, started=0.0)
    assert failed.error is error
    assert results(report)["sibling"] == ("ok", 2.0)
    assert results(report)["supervisor"] == ("ok", 0.0)
    assert spans["later"] == (2.0, 3.0)
    assert not report.ok
    (finished,) = [e for e in tree.history if e.path == "failing"]
    assert finished.kind is EventKind.HOOK_FINISHED
    assert finished.error is error


async def test_a_hook_past_its_timeout_is_timed_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    cancelled: list[float] = []

    async def slow() -> None:
        try:
            await trio.sleep(10)
        except trio.Cancelled:
            cancelled.append(trio.current_time())
            raise

    spans: Spans = {}
    hooks = [
        ShutdownHook("slow", slow, priority=Band.FLUSH, timeout=1.5),
        ShutdownHook("next", timed(spans, "next", 1.0), priority=Band.CLOSE),
    ]
    async with supervisor_tree(simple(), hooks=hooks) as tree:
        pass
    report = tree.shutdown_report
    assert report is not None
    assert results(report)["slow"] == ("timed_out", 1.5)
    assert [hook.error for hook in report.hooks if hook.name == "slow"] == [None]
    assert cancelled == [pytest.approx(1.5)]
    assert spans["next"] == (1.5, 2.5)
    assert not report.ok
    assert not report.deadline_exceeded


async def test_the_deadline_cancels_running_hooks_and_skips_later_bands(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spans: Spans = {}
    hooks = [
        ShutdownHook("quick", timed(spans, "quick", 1.0), priority=0),
        ShutdownHook("stuck", timed(spans, "stuck", 100.0), priority=5),
        ShutdownHook("flush", timed(spans, "flush", 1.0), priority=Band.FLUSH),
        ShutdownHook("close", timed(spans, "close", 1.0), priority=Band.CLOSE),
    ]
    async with supervisor_tree(simple(), hooks=hooks, shutdown_deadline=3.0) as tree:
        await trio.sleep(2)
    # The deadline counts from the start of the shutdown (2.0).
    assert trio.current_time() == pytest.approx(5.0)
    report = tree.shutdown_report
    assert report is not None
    assert report.deadline_exceeded
    assert not report.forced
    assert not report.ok
    assert report.duration == pytest.approx(3.0)
    assert results(report) == {
        "supervisor": ("skipped", 0.0),
        "quick": ("ok", 1.0),
        "stuck": ("cancelled", 3.0),
        "flush": ("skipped", 0.0),
        "close": ("skipped", 0.0),
    }
    assert spans == {"quick": (2.0, 3.0)}
    assert "deadline exceeded" in report.format()


async def test_the_deadline_cancels_the_supervisor_hook_and_then_the_children(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A service that does not return after stop(), with no stop limit of its own.
    factory = ServiceFactory(exits_after_stop=None)
    spec = SupervisorSpec("root", [ChildSpec.service("svc", factory, shutdown_timeout=None)])
    async with supervisor_tree(spec, shutdown_deadline=3.0) as tree:
        pass
    report = tree.shutdown_report
    assert report is not None
    assert report.deadline_exceeded
    assert results(report) == {"supervisor": ("cancelled", 3.0)}
    # At the deadline the children still running are cancelled too.
    assert factory.made[0].calls == ["run", "started", "stop", "cancelled"]
    assert trio.current_time() == pytest.approx(3.0)


async def stubborn() -> None:
    """A hook whose clean-up is shielded: it runs 5 s whatever cancels it."""
    with trio.CancelScope(shield=True):
        await trio.sleep(5)


async def test_a_hook_that_overruns_its_timeout_is_timed_out_even_if_it_finishes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hooks = [ShutdownHook("stubborn", stubborn, priority=0, timeout=1.0)]
    async with supervisor_tree(simple(), hooks=hooks) as tree:
        pass
    # It was cancelled at its timeout and ran on to 5 s: it is past its own timeout.
    assert results(tree.shutdown_report)["stubborn"] == ("timed_out", 5.0)
    assert tree.shutdown_report is not None
    assert not tree.shutdown_report.ok


async def test_bands_after_the_deadline_are_skipped_even_if_a_hook_overruns_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spans: Spans = {}
    hooks = [
        ShutdownHook("stubborn", stubborn, priority=0),
        ShutdownHook("later", timed(spans, "later", 1.0), priority=Band.CLOSE),
    ]
    async with supervisor_tree(simple(), hooks=hooks, shutdown_deadline=2.0) as tree:
        pass
    report = tree.shutdown_report
    assert report is not None
    assert report.deadline_exceeded
    assert spans == {}
    # Running at the deadline: cancelled; the bands after it: skipped, not started.
    assert results(report) == {
        "supervisor": ("skipped", 0.0),
        "stubborn": ("cancelled", 5.0),
        "later": ("skipped", 0.0),
    }


# ---------------------------------------------------------------- starting it


async def test_shutdown_from_the_body_cancels_the_body(
    autojump_clock: trio.testing.MockClock,
) -> None:
    reached_the_end = False
    async with supervisor_tree(simple()) as tree:
        await trio.sleep(2)
        assert not tree.shutting_down
        assert tree.shutdown_report is None
        tree.shutdown("maintenance")
        assert tree.shutting_down
        assert tree.shutdown_report is None
        await trio.sleep(10)
        reached_the_end = True
    assert not reached_the_end
    assert trio.current_time() == pytest.approx(2.0)
    assert tree.shutdown_report is not None
    assert tree.shutdown_report.reason == "maintenance"
    assert tree.shutdown_report.started == pytest.approx(2.0)
    assert tree.shutdown_report.ok
    assert tree.shutting_down


async def test_shutdown_from_a_child_task(autojump_clock: trio.testing.MockClock) -> None:
    reached_the_end = False
    async with supervisor_tree(simple()) as tree:

        async def stopper() -> None:
            await trio.sleep(3)
            tree.shutdown("the child asked")
            await trio.sleep_forever()

        await tree.start_child(ChildSpec("stopper", stopper))
        await trio.sleep_forever()
        reached_the_end = True
    assert not reached_the_end
    assert trio.current_time() == pytest.approx(3.0)
    assert tree.shutdown_report is not None
    assert tree.shutdown_report.reason == "the child asked"
    terminated = [e.path for e in tree.history if e.kind is EventKind.TERMINATED]
    assert terminated == ["stopper", "b", "a"]


async def test_shutting_down_and_the_report_inside_a_hook(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[tuple[bool, ShutdownReport | None]] = []
    async with supervisor_tree(simple()) as tree:

        async def look() -> None:
            seen.append((tree.shutting_down, tree.shutdown_report))

        tree.add_shutdown_hook("look", look, priority=Band.CLEANUP)
        assert (tree.shutting_down, tree.shutdown_report) == (False, None)
    assert seen == [(True, None)]
    assert tree.shutdown_report is not None


async def test_add_shutdown_hook(autojump_clock: trio.testing.MockClock) -> None:
    spans: Spans = {}
    async with supervisor_tree(simple()) as tree:
        with pytest.raises(TypeError, match="priority"):
            tree.add_shutdown_hook("h", nothing)  # type: ignore[call-arg]
        with pytest.raises(SpecError, match=r"^ShutdownHook 'h': priority must be >= 0"):
            tree.add_shutdown_hook("h", nothing, priority=-5)
        hook = tree.add_shutdown_hook(
            "flush", timed(spans, "flush", 1.0), priority=Band.FLUSH, timeout=5.0
        )
        assert isinstance(hook, ShutdownHook)
        assert (hook.name, hook.priority, hook.timeout, hook.band) == ("flush", 20, 5.0, 2)
    assert spans == {"flush": (0.0, 1.0)}
    assert [hook.name for hook in tree.shutdown_report.hooks] == [  # type: ignore[union-attr]
        "supervisor",
        "flush",
    ]


# ------------------------------------------------------------------- how it ends


async def test_a_body_exception_propagates_unchanged_after_the_hooks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    error = ValueError("bad input")
    spans: Spans = {}
    hooks = [ShutdownHook("flush", timed(spans, "flush", 2.0), priority=Band.FLUSH)]

    async def body() -> None:
        await trio.sleep(1)
        raise error

    with pytest.raises(ValueError, match=r"^bad input$") as excinfo:
        async with supervisor_tree(simple(), hooks=hooks) as tree:
            await body()
    assert excinfo.type is ValueError
    assert excinfo.value is error
    assert spans == {"flush": (1.0, 3.0)}
    assert trio.current_time() == pytest.approx(3.0)
    assert tree.shutdown_report is not None
    assert results(tree.shutdown_report)["supervisor"] == ("ok", 0.0)


async def test_the_shutdown_is_shielded_from_an_outer_cancel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spans: Spans = {}
    factory = ServiceFactory(stop_takes=1.0)
    spec = SupervisorSpec("root", [ChildSpec("a", sleeper()), ChildSpec.service("svc", factory)])
    hooks = [ShutdownHook("flush", timed(spans, "flush", 5.0), priority=Band.FLUSH)]
    with trio.move_on_after(1) as outer:
        async with supervisor_tree(spec, hooks=hooks) as tree:
            await trio.sleep_forever()
    assert outer.cancelled_caught
    # Past the outer deadline: the service was asked to stop (1 s), then "flush" ran (5 s).
    assert trio.current_time() == pytest.approx(7.0)
    assert spans == {"flush": (2.0, 7.0)}
    assert factory.made[0].calls == ["run", "started", "stop", "stopped"]
    assert tree.shutdown_report is not None
    assert tree.shutdown_report.ok
    terminated = [e.path for e in tree.history if e.kind is EventKind.TERMINATED]
    assert terminated == ["svc", "a"]


async def test_the_deadline_still_bounds_a_shutdown_under_an_outer_cancel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spans: Spans = {}
    hooks = [ShutdownHook("flush", timed(spans, "flush", 5.0), priority=Band.FLUSH)]
    with trio.move_on_after(1) as outer:
        async with supervisor_tree(simple(), hooks=hooks, shutdown_deadline=3.0) as tree:
            await trio.sleep_forever()
    assert outer.cancelled_caught
    assert trio.current_time() == pytest.approx(4.0)
    assert spans == {}
    assert tree.shutdown_report is not None
    assert tree.shutdown_report.deadline_exceeded
    assert results(tree.shutdown_report)["flush"] == ("cancelled", 3.0)


async def test_a_root_intensity_failure_runs_the_hooks_then_raises(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spans: Spans = {}
    hooks = [ShutdownHook("flush", timed(spans, "flush", 2.0), priority=Band.FLUSH)]
    spec = SupervisorSpec("root", [ChildSpec("w", crash_after(1.0))], max_restarts=0)
    with pytest.raises(RestartIntensityExceeded) as excinfo:
        async with supervisor_tree(spec, hooks=hooks) as tree:
            await trio.sleep_forever()
    assert excinfo.type is RestartIntensityExceeded
    assert (excinfo.value.path, excinfo.value.max_restarts) == ("", 0)
    assert spans == {"flush": (1.0, 3.0)}
    assert trio.current_time() == pytest.approx(3.0)
    report = tree.shutdown_report
    assert report is not None
    assert report.started == pytest.approx(1.0)
    assert report.reason.startswith("root supervisor failed")


async def test_a_root_that_stops_by_itself_ends_the_tree_normally(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spans: Spans = {}
    hooks = [ShutdownHook("flush", timed(spans, "flush", 1.0), priority=Band.FLUSH)]
    spec = SupervisorSpec(
        "root",
        [
            ChildSpec("a", sleeper()),
            ChildSpec("job", return_after(2.0), restart=Restart.TRANSIENT, significant=True),
        ],
        auto_shutdown=AutoShutdown.ANY_SIGNIFICANT,
    )
    reached_the_end = False
    async with supervisor_tree(spec, hooks=hooks) as tree:
        await trio.sleep_forever()
        reached_the_end = True
    assert not reached_the_end
    assert trio.current_time() == pytest.approx(3.0)
    assert spans == {"flush": (2.0, 3.0)}
    assert tree.shutdown_report is not None
    assert tree.shutdown_report.ok


# ------------------------------------------------------------------ events, report


async def test_shutdown_events(autojump_clock: trio.testing.MockClock) -> None:
    error = HookError("nope")

    async def failing() -> None:
        raise error

    spans: Spans = {}
    hooks = [
        ShutdownHook("flush", timed(spans, "flush", 2.0), priority=Band.FLUSH),
        ShutdownHook("failing", failing, priority=Band.CLOSE),
    ]
    async with supervisor_tree(simple(), hooks=hooks) as tree:
        await trio.sleep(1)
        tree.shutdown("deploy")
    events = [e for e in tree.history if e.kind is not EventKind.STARTED]
    assert [(e.kind, e.path) for e in events] == [
        (EventKind.SHUTDOWN_STARTED, ""),
        (EventKind.TERMINATED, "b"),
        (EventKind.TERMINATED, "a"),
        (EventKind.HOOK_FINISHED, "supervisor"),
        (EventKind.HOOK_FINISHED, "flush"),
        (EventKind.HOOK_FINISHED, "failing"),
        (EventKind.SHUTDOWN_FINISHED, ""),
    ]
    assert [e.time for e in events] == pytest.approx([1.0, 1.0, 1.0, 1.0, 3.0, 3.0, 3.0])
    assert events[0].detail == "deploy"
    assert [e.detail.split()[0] for e in events[3:6]] == ["ok", "ok", "error"]
    assert events[5].error is error


async def test_the_report_summary_is_logged(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_supervise")
    async with supervisor_tree(simple()) as tree:
        pass
    assert tree.shutdown_report is not None
    summaries = [r for r in caplog.records if r.getMessage() == tree.shutdown_report.format()]
    assert len(summaries) == 1
    assert summaries[0].name == "trio_supervise"
    assert summaries[0].levelno == logging.INFO


async def test_a_bad_report_summary_is_logged_as_a_warning(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_supervise")

    async def failing() -> None:
        raise HookError("nope")

    hooks = [ShutdownHook("failing", failing, priority=Band.CLOSE)]
    async with supervisor_tree(simple(), hooks=hooks) as tree:
        pass
    assert tree.shutdown_report is not None
    text = tree.shutdown_report.format()
    (summary,) = [r for r in caplog.records if r.getMessage() == text]
    assert summary.levelno == logging.WARNING
    assert "HookError: nope" in text


def _report(*hooks: HookResult, forced: bool = False, late: bool = False) -> ShutdownReport:
    return ShutdownReport(
        reason="requested",
        started=10.0,
        duration=1.5,
        forced=forced,
        hooks=list(hooks),
        deadline_exceeded=late,
    )


OK = HookResult("supervisor", 10, "ok", 0.25)


def test_report_ok() -> None:
    assert _report().ok
    assert _report(OK, HookResult("flush", 20, "ok", 1.0)).ok
    assert not _report(OK, forced=True).ok
    assert not _report(OK, late=True).ok
    for status in ("error", "timed_out", "cancelled"):
        assert not _report(OK, HookResult("flush", 20, status, 1.0)).ok
    # A hook that skipped itself had nothing to do; the deadline's or a force's skips come
    # with deadline_exceeded or forced.
    assert _report(OK, HookResult("drain", 0, "skipped", 0.0)).ok
    assert not _report(OK, HookResult("close", 30, "skipped", 0.0), late=True).ok


def test_report_format() -> None:
    report = _report(
        HookResult("flush", 20, "error", 1.0, HookError("disk full")),
        OK,
        HookResult("close", 30, "skipped", 0.0),
        HookResult("stop", 0, "timed_out", 2.0),
    )
    lines = report.format().splitlines()
    assert lines[0] == "shutdown (requested) took 1.500s"
    # One line per hook, by priority, with its status, duration and error.
    rows = [line.split() for line in lines[2:]]
    assert [row[:4] for row in rows] == [
        ["0", "stop", "timed_out", "2.000"],
        ["10", "supervisor", "ok", "0.250"],
        ["20", "flush", "error", "1.000"],
        ["30", "close", "skipped", "0.000"],
    ]
    assert lines[4].endswith("HookError: disk full")
    flags = _report(OK, forced=True, late=True).format().splitlines()[0]
    assert flags == "shutdown (requested) took 1.500s, forced, deadline exceeded"


async def test_report_is_none_before_the_shutdown_and_a_report_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with supervisor_tree(simple()) as tree:
        assert tree.shutdown_report is None
        await trio.sleep(4)
    assert isinstance(tree.shutdown_report, ShutdownReport)
    assert tree.shutdown_report.reason
    assert tree.shutdown_report.started == pytest.approx(4.0)
    assert tree.shutdown_report.duration == pytest.approx(0.0)
    assert not tree.shutdown_report.forced


# ------------------------------------------------------------------ HookResult.started


async def test_hook_results_say_when_each_hook_started(
    autojump_clock: trio.testing.MockClock,
) -> None:
    error = HookError("close failed")

    async def failing() -> None:
        await trio.sleep(1)
        raise error

    spans: Spans = {}
    hooks = [
        ShutdownHook("stop", timed(spans, "stop", 1.0), priority=Band.STOP_ACCEPTING),
        ShutdownHook("stop-quick", timed(spans, "stop-quick", 0.25), priority=5),
        ShutdownHook("flush", timed(spans, "flush", 9.0), priority=Band.FLUSH, timeout=0.5),
        ShutdownHook("close", failing, priority=Band.CLOSE),
        ShutdownHook("cleanup", timed(spans, "cleanup", 100.0), priority=Band.CLEANUP),
        ShutdownHook("never", timed(spans, "never", 1.0), priority=50),
    ]
    async with supervisor_tree(simple(), hooks=hooks, shutdown_deadline=5.0) as tree:
        await trio.sleep(2)
    report = tree.shutdown_report
    assert report is not None
    # The shutdown starts at 2; each band starts when the one before it has ended; the
    # deadline (7) cancels "cleanup"; the band after it never starts.
    assert [
        (
            hook.name,
            hook.status,
            None if hook.started is None else round(hook.started, 9),
            round(hook.duration, 9),
        )
        for hook in report.hooks
    ] == [
        ("supervisor", "ok", 3.0, 0.0),
        ("stop", "ok", 2.0, 1.0),
        ("stop-quick", "ok", 2.0, 0.25),
        ("flush", "timed_out", 3.0, 0.5),
        ("close", "error", 3.5, 1.0),
        ("cleanup", "cancelled", 4.5, 2.5),
        ("never", "skipped", None, 0.0),
    ]
    (close,) = [hook for hook in report.hooks if hook.name == "close"]
    assert close.error is error
    assert report.deadline_exceeded
    assert HookResult("h", 0, "skipped", 0.0).started is None


# ---------------------------------------------------------------------------- DrainDelay


def test_drain_delay_hook() -> None:
    drain = DrainDelay(2)
    assert drain.seconds == 2.0
    assert isinstance(drain.seconds, float)
    hook = drain.hook
    assert isinstance(hook, ShutdownHook)
    assert (hook.name, hook.priority, hook.band, hook.timeout) == (
        "drain-delay",
        Band.STOP_ACCEPTING,
        0,
        None,
    )
    assert drain.remaining is None
    assert DrainDelay().seconds == 5.0
    assert DrainDelay(0.5, name="lb-drain").hook.name == "lb-drain"


@pytest.mark.parametrize(
    ("seconds", "name", "message"),
    [
        (-1, "drain-delay", r"^DrainDelay 'drain-delay': seconds must be >= 0 \(got -1\)$"),
        (math.nan, "lb", r"^DrainDelay 'lb': seconds must be >= 0 \(got nan\)$"),
        (None, "lb", r"^DrainDelay 'lb': seconds must be a number >= 0 \(got None\)$"),
        ("5", "lb", r"^DrainDelay 'lb': seconds must be a number >= 0 \(got '5'\)$"),
        (True, "lb", r"^DrainDelay 'lb': seconds must be a number >= 0 \(got True\)$"),
        (5, "", r"^ShutdownHook: name must be a non-empty string \(got ''\)$"),
    ],
)
def test_drain_delay_validation(seconds: object, name: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        DrainDelay(seconds, name=name)  # type: ignore[arg-type]


async def test_drain_delay_keeps_serving_while_not_ready_then_lets_listeners_close(
    autojump_clock: trio.testing.MockClock,
) -> None:
    drain = DrainDelay(5)
    closed_at: list[float] = []
    samples: list[tuple[float, float | None, bool, ChildState]] = []

    async def close_listeners() -> None:
        await drain.wait()
        closed_at.append(trio.current_time())

    async def probe() -> None:
        # A child that looks at the tree every second, off the whole seconds.
        tree = current_tree()
        await trio.sleep(0.5)
        while True:
            samples.append(
                (trio.current_time(), drain.remaining, tree.health().ready, tree.info("web").state)
            )
            await trio.sleep(1)

    hooks = [
        drain.hook,
        ShutdownHook("close-listeners", close_listeners, priority=Band.STOP_ACCEPTING),
    ]
    spec = SupervisorSpec("app", [ChildSpec("web", sleeper()), ChildSpec("probe", probe)])
    async with supervisor_tree(spec, hooks=hooks, shutdown_deadline=20.0) as tree:
        recorder = EventRecorder(tree)
        await trio.sleep(2)
    running = ChildState.RUNNING
    assert samples == [
        (0.5, None, True, running),
        (1.5, None, True, running),
        # The shutdown started at 2: not ready, the delay counts down, "web" still serves.
        (2.5, 4.5, False, running),
        (3.5, 3.5, False, running),
        (4.5, 2.5, False, running),
        (5.5, 1.5, False, running),
        (6.5, 0.5, False, running),
    ]
    assert closed_at == [7.0]
    assert drain.remaining == 0.0
    # The children are stopped in band DRAIN, once the delay is over.
    assert [(e.path, e.time) for e in recorder.of(EventKind.TERMINATED)] == [
        ("probe", 7.0),
        ("web", 7.0),
    ]
    report = tree.shutdown_report
    assert report is not None
    assert report.ok
    assert results(report) == {
        "supervisor": ("ok", 0.0),
        "drain-delay": ("ok", 5.0),
        "close-listeners": ("ok", 5.0),
    }
    assert [hook.started for hook in report.hooks] == [7.0, 2.0, 2.0]


async def test_a_zero_drain_delay_returns_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    drain = DrainDelay(0)
    waited: list[float] = []

    async def close_listeners() -> None:
        await drain.wait()
        waited.append(trio.current_time())

    hooks = [drain.hook, ShutdownHook("close", close_listeners, priority=0)]
    async with supervisor_tree(simple(), hooks=hooks) as tree:
        await trio.sleep(1)
    assert waited == [1.0]
    assert drain.remaining == 0.0
    assert results(tree.shutdown_report)["drain-delay"] == ("ok", 0.0)


async def test_a_deadline_shorter_than_the_drain_delay_cuts_it_and_wait_returns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    drain = DrainDelay(10)
    waited: list[float] = []
    remaining: list[float | None] = []

    async def close_listeners() -> None:
        # Shielded, to see wait() return although the deadline cancels this hook too.
        with trio.CancelScope(shield=True):
            await drain.wait()
        waited.append(trio.current_time())
        remaining.append(drain.remaining)

    hooks = [drain.hook, ShutdownHook("close", close_listeners, priority=Band.STOP_ACCEPTING)]
    async with supervisor_tree(simple(), hooks=hooks, shutdown_deadline=3.0) as tree:
        await trio.sleep(1)
    assert waited == [4.0]
    assert remaining == [0.0]
    assert trio.current_time() == pytest.approx(4.0)
    report = tree.shutdown_report
    assert report is not None
    assert report.deadline_exceeded
    assert results(report) == {
        "supervisor": ("skipped", 0.0),
        "drain-delay": ("cancelled", 3.0),
        "close": ("cancelled", 3.0),
    }


async def _nothing() -> None:
    await trio.lowlevel.checkpoint()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("flush", r"^shutdown hook 'flush': the name is taken; give each hook its own name$"),
        (
            "supervisor",
            r"^shutdown hook 'supervisor': the name is taken by the tree's own step;"
            r" give each hook its own name$",
        ),
    ],
)
async def test_hook_names_are_unique(
    autojump_clock: trio.testing.MockClock, name: str, message: str
) -> None:
    flush = ShutdownHook("flush", _nothing, priority=Band.FLUSH)
    spec = SupervisorSpec("app", [])
    hooks = [flush, ShutdownHook(name, _nothing, priority=0)]
    with pytest.raises(SpecError, match=message):
        async with supervisor_tree(spec, hooks=hooks):
            pass  # pragma: no cover
    async with supervisor_tree(spec, hooks=[flush]) as tree:
        with pytest.raises(SpecError, match=message):
            tree.add_shutdown_hook(name, _nothing, priority=0)
