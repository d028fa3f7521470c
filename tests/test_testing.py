"""The public test helpers of ``trio_supervise.testing``, in virtual time."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from trio_supervise import (
    Backoff,
    ChildSpec,
    ChildStartError,
    ChildState,
    EventKind,
    HealthStatus,
    Restart,
    SupervisorSpec,
    supervisor_tree,
)
from trio_supervise.testing import (
    EventRecorder,
    FakeCrash,
    FakeService,
    MemoryLock,
    ServiceFactory,
    crash_after,
    fail_start,
    flaky,
    refuse_stop,
    return_after,
    sleeper,
    slow_start,
    slow_stop,
    wait_idle,
    wait_stable,
    wait_state,
)


class Custom(Exception):
    pass


def tree_of(*children: ChildSpec, backoff: Backoff | None = None) -> SupervisorSpec:
    """A root that restarts at once (or after ``backoff``) and hardly ever gives up."""
    return SupervisorSpec(
        "root", list(children), backoff=backoff, max_restarts=1000, max_seconds=1.0
    )


def times(recorder: EventRecorder, kind: EventKind, path: str = "w") -> list[float]:
    return [event.time for event in recorder.of(kind, path)]


# ------------------------------------------------------------------------ fakes


async def test_sleeper_runs_until_stopped(autojump_clock: trio.testing.MockClock) -> None:
    async with supervisor_tree(tree_of(ChildSpec("w", sleeper()))) as tree:
        await trio.sleep(1000)
        assert tree.info("w").state is ChildState.RUNNING
        assert [e.kind for e in tree.history] == [EventKind.STARTED]


async def test_crash_after_crashes_after_each_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with supervisor_tree(tree_of(ChildSpec("w", crash_after(2.0)))) as tree:
        recorder = EventRecorder(tree)
        await trio.sleep(7)
    assert times(recorder, EventKind.CRASHED) == pytest.approx([2.0, 4.0, 6.0])
    errors = [event.error for event in recorder.of(EventKind.CRASHED)]
    assert all(isinstance(error, FakeCrash) for error in errors)
    assert str(errors[0]).startswith("crashed after 2s")


async def test_crash_after_only_the_first_starts(autojump_clock: trio.testing.MockClock) -> None:
    async with supervisor_tree(tree_of(ChildSpec("w", crash_after(2.0, starts=2)))) as tree:
        recorder = EventRecorder(tree)
        await trio.sleep(100)
        assert tree.info("w").state is ChildState.RUNNING
        assert tree.info("w").restarts == 2
    assert times(recorder, EventKind.CRASHED) == pytest.approx([2.0, 4.0])
    assert times(recorder, EventKind.RESTARTED) == pytest.approx([2.0, 4.0])


async def test_crash_after_raises_the_given_error(autojump_clock: trio.testing.MockClock) -> None:
    error = Custom("mine")
    spec = tree_of(ChildSpec("w", crash_after(1.5, error, starts=1)))
    async with supervisor_tree(spec) as tree:
        recorder = EventRecorder(tree)
        await trio.sleep(2)
    (crashed,) = recorder.of(EventKind.CRASHED)
    assert crashed.error is error
    assert crashed.time == pytest.approx(1.5)


async def test_return_after_returns_cleanly(autojump_clock: trio.testing.MockClock) -> None:
    spec = tree_of(
        ChildSpec("w", return_after(3.0)),
        ChildSpec("once", return_after(3.0), restart=Restart.TRANSIENT),
    )
    async with supervisor_tree(spec) as tree:
        recorder = EventRecorder(tree)
        await trio.sleep(7)
        assert tree.info("once").state is ChildState.STOPPED
    # A permanent child is restarted after each clean exit; the transient one is not.
    assert times(recorder, EventKind.EXITED) == pytest.approx([3.0, 6.0])
    assert [e.detail for e in recorder.of(EventKind.EXITED, "w")][:2] == ["returned", "returned"]
    assert recorder.of(EventKind.CRASHED) == []
    assert times(recorder, EventKind.EXITED, "once") == pytest.approx([3.0])


async def _flaky_crash_times(seed: int, probability: float = 0.5) -> list[float]:
    spec = tree_of(ChildSpec("w", flaky(probability, interval=1.0, seed=seed)))
    async with supervisor_tree(spec) as tree:
        start = trio.current_time()
        recorder = EventRecorder(tree)
        await trio.sleep(20.5)
    return [time - start for time in times(recorder, EventKind.CRASHED)]


async def test_flaky_with_a_seed_is_deterministic(autojump_clock: trio.testing.MockClock) -> None:
    first = await _flaky_crash_times(seed=7)
    second = await _flaky_crash_times(seed=7)
    assert first == second
    # One draw per interval from random.Random(seed); a draw below p is a crash.
    rng = random.Random(7)
    expected = [float(second) for second in range(1, 21) if rng.random() < 0.5]
    assert first == pytest.approx(expected)
    assert 0 < len(first) < 20


async def test_flaky_extremes(autojump_clock: trio.testing.MockClock) -> None:
    assert await _flaky_crash_times(seed=1, probability=0.0) == []
    assert await _flaky_crash_times(seed=1, probability=1.0) == pytest.approx(
        [float(second) for second in range(1, 21)]
    )


@pytest.mark.parametrize("probability", [-0.1, 1.5])
def test_flaky_rejects_a_bad_probability(probability: float) -> None:
    with pytest.raises(ValueError, match=r"^probability must be within \[0, 1\]"):
        flaky(probability)


async def test_slow_start_takes_its_time_to_start(autojump_clock: trio.testing.MockClock) -> None:
    spec = tree_of(ChildSpec("w", slow_start(3.0)), ChildSpec("next", sleeper()))
    async with supervisor_tree(spec) as tree:
        # The body runs once "w" called started(), and "next" started after it.
        assert trio.current_time() == pytest.approx(3.0)
        assert [(e.path, e.time) for e in tree.history] == [("w", 3.0), ("next", 3.0)]
        await trio.sleep(100)
        assert tree.info("w").state is ChildState.RUNNING


async def test_slow_start_then_runs_the_given_child(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = tree_of(ChildSpec("w", slow_start(2.0, then=crash_after(1.0))))
    async with supervisor_tree(spec) as tree:
        assert trio.current_time() == pytest.approx(2.0)
        recorder = EventRecorder(tree)
        await trio.sleep(5.5)
    assert times(recorder, EventKind.CRASHED) == pytest.approx([3.0, 6.0])
    assert times(recorder, EventKind.RESTARTED) == pytest.approx([5.0])


async def test_fail_start_fails_before_started(autojump_clock: trio.testing.MockClock) -> None:
    spec = tree_of(ChildSpec("w", fail_start(2.0)))
    with pytest.raises(ChildStartError) as excinfo:
        async with supervisor_tree(spec):
            pass
    assert excinfo.value.path == "w"
    assert isinstance(excinfo.value.__cause__, FakeCrash)
    assert str(excinfo.value.__cause__) == "failed to start after 2s"
    assert trio.current_time() == pytest.approx(2.0)


async def test_fail_start_raises_the_given_error(autojump_clock: trio.testing.MockClock) -> None:
    error = Custom("no config")
    async with supervisor_tree(tree_of(ChildSpec("a", sleeper()))) as tree:
        with pytest.raises(ChildStartError) as excinfo:
            await tree.start_child(ChildSpec("w", fail_start(error=error)))
        assert excinfo.value.__cause__ is error
        assert trio.current_time() == pytest.approx(0.0)


async def test_slow_stop_needs_its_time_to_stop(autojump_clock: trio.testing.MockClock) -> None:
    async with supervisor_tree(tree_of(ChildSpec("w", slow_stop(3.0)))) as tree:
        recorder = EventRecorder(tree)
        await trio.sleep(1)
        await tree.terminate_child("w")
        assert trio.current_time() == pytest.approx(4.0)
    assert times(recorder, EventKind.TERMINATED) == pytest.approx([4.0])
    assert recorder.of(EventKind.STOP_TIMEOUT) == []


async def test_refuse_stop_ignores_cancellation_for_its_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = tree_of(ChildSpec("w", refuse_stop(10.0), shutdown_timeout=2.0))
    async with supervisor_tree(spec) as tree:
        recorder = EventRecorder(tree)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tree.terminate_child, "w")
            await trio.sleep(5)
            assert tree.unstopped() == ["w"]
            assert tree.info("w").state is ChildState.STOPPING
        assert trio.current_time() == pytest.approx(10.0)
        assert tree.unstopped() == []
    assert times(recorder, EventKind.STOP_TIMEOUT) == pytest.approx([2.0])
    assert times(recorder, EventKind.TERMINATED) == pytest.approx([10.0])


async def test_fake_service_stops_when_asked(autojump_clock: trio.testing.MockClock) -> None:
    factory = ServiceFactory(stop_takes=1.0, exits_after_stop=2.0)
    async with supervisor_tree(tree_of(ChildSpec.service("svc", factory))) as tree:
        await tree.terminate_child("svc")
        assert trio.current_time() == pytest.approx(3.0)
        (service,) = factory.made
        assert service.calls == ["run", "started", "stop", "stopped"]


async def test_fake_service_that_never_exits_is_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    factory = ServiceFactory(exits_after_stop=None)
    spec = tree_of(ChildSpec.service("svc", factory, shutdown_timeout=2.0))
    async with supervisor_tree(spec) as tree:
        recorder = EventRecorder(tree)
        await tree.terminate_child("svc")
        assert trio.current_time() == pytest.approx(2.0)
        assert factory.made[0].calls == ["run", "started", "stop", "cancelled"]
    assert times(recorder, EventKind.STOP_TIMEOUT, "svc") == pytest.approx([2.0])


async def test_fake_service_start_takes(autojump_clock: trio.testing.MockClock) -> None:
    factory = ServiceFactory(start_takes=2.0)
    async with supervisor_tree(tree_of(ChildSpec.service("svc", factory))) as tree:
        assert trio.current_time() == pytest.approx(2.0)
        assert [(e.kind, e.time) for e in tree.history] == [(EventKind.STARTED, 2.0)]
        assert factory.made[0].calls == ["run", "started"]


async def test_service_factory_makes_a_fresh_service_per_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    factory = ServiceFactory()
    async with supervisor_tree(tree_of(ChildSpec.service("svc", factory))) as tree:
        await tree.restart_child("svc")
        await tree.restart_child("svc")
        assert len(factory.made) == 3
        assert len({id(service) for service in factory.made}) == 3
        assert [service.calls for service in factory.made] == [
            ["run", "started", "stop", "stopped"],
            ["run", "started", "stop", "stopped"],
            ["run", "started"],
        ]


async def test_fake_service_health() -> None:
    assert await FakeService().check_health() is True
    assert await FakeService(health=HealthStatus.DEGRADED).check_health() is HealthStatus.DEGRADED
    answers = iter([False, True])
    service = FakeService(health=lambda: next(answers))
    assert [await service.check_health(), await service.check_health()] == [False, True]
    assert service.calls == ["check_health", "check_health"]


# --------------------------------------------------------------------- recorder


async def test_recorder_assert_sequence(autojump_clock: trio.testing.MockClock) -> None:
    spec = tree_of(ChildSpec("a", sleeper()), ChildSpec("w", crash_after(1.0, starts=1)))
    async with supervisor_tree(spec) as tree:
        recorder = EventRecorder(tree)
        await trio.sleep(2)
        # In order, with others in between, by kind or by kind and path.
        recorder.assert_sequence(EventKind.CRASHED, (EventKind.RESTARTED, "w"))
        recorder.assert_sequence((EventKind.CRASHED, "w"))
        recorder.assert_sequence()
        # Only what happened since the recorder was made.
        with pytest.raises(AssertionError, match=r"^expected <EventKind.STARTED"):
            recorder.assert_sequence(EventKind.STARTED)
        with pytest.raises(AssertionError) as excinfo:
            recorder.assert_sequence(EventKind.RESTARTED, EventKind.CRASHED)
        message = str(excinfo.value)
        assert message.startswith("expected <EventKind.CRASHED: 'crashed'> (after the earlier")
        # The message lists what did happen.
        for event in recorder.events:
            assert str(event) in message
        with pytest.raises(
            AssertionError, match=r"^expected \(<EventKind.CRASHED: 'crashed'>, 'a'\)"
        ):
            recorder.assert_sequence((EventKind.CRASHED, "a"))


async def test_recorder_assert_exact(autojump_clock: trio.testing.MockClock) -> None:
    spec = tree_of(ChildSpec("a", sleeper()), ChildSpec("w", crash_after(1.0, starts=1)))
    async with supervisor_tree(spec) as tree:
        recorder = EventRecorder(tree)
        await trio.sleep(2)
        recorder.assert_exact(
            (EventKind.CRASHED, "w"), EventKind.RESTART_SCHEDULED, (EventKind.RESTARTED, "w")
        )
        recorder.assert_exact(path="a")
        recorder.assert_exact(
            EventKind.CRASHED, EventKind.RESTART_SCHEDULED, EventKind.RESTARTED, path="w"
        )
        with pytest.raises(AssertionError, match=r"^expected exactly \[") as excinfo:
            recorder.assert_exact(EventKind.CRASHED, EventKind.RESTARTED)
        assert "RESTART_SCHEDULED" in str(excinfo.value)
        with pytest.raises(AssertionError, match="no events"):
            recorder.assert_exact(EventKind.CRASHED, path="a")


async def test_recorder_of_and_kinds(autojump_clock: trio.testing.MockClock) -> None:
    spec = tree_of(
        ChildSpec("a", crash_after(1.0, starts=1)), ChildSpec("w", crash_after(2.0, starts=1))
    )
    async with supervisor_tree(spec) as tree:
        recorder = EventRecorder(tree)
        await trio.sleep(3)
        assert [e.path for e in recorder.of(EventKind.CRASHED)] == ["a", "w"]
        assert [e.kind for e in recorder.of(path="w")] == recorder.kinds("w")
        assert recorder.kinds("w") == [
            EventKind.CRASHED,
            EventKind.RESTART_SCHEDULED,
            EventKind.RESTARTED,
        ]
        assert [e.time for e in recorder.of(EventKind.RESTARTED, "a")] == [1.0]
        assert recorder.kinds() == [e.kind for e in recorder.events]
        assert len(recorder.kinds()) == 6
        assert recorder.of(EventKind.TERMINATED) == []


async def test_recorder_wait_for(autojump_clock: trio.testing.MockClock) -> None:
    spec = tree_of(ChildSpec("a", sleeper()), ChildSpec("w", crash_after(2.0)))
    async with supervisor_tree(spec) as tree:
        recorder = EventRecorder(tree)
        first = await recorder.wait_for(EventKind.CRASHED, "w")
        assert trio.current_time() == pytest.approx(2.0)
        assert first.time == pytest.approx(2.0)
        third = await recorder.wait_for(EventKind.CRASHED, count=3)
        assert trio.current_time() == pytest.approx(6.0)
        assert third.restarts == 2
        # Already recorded: returns at once.
        assert (
            await recorder.wait_for(EventKind.CRASHED, "w", count=2)
            is recorder.of(EventKind.CRASHED)[1]
        )
        assert trio.current_time() == pytest.approx(6.0)
        tree.shutdown()
    with pytest.raises(AssertionError, match=r"^the tree ended before 1 CRASHED event\(s\) of 'a'"):
        await recorder.wait_for(EventKind.CRASHED, "a")


async def test_recorder_close_stops_recording(autojump_clock: trio.testing.MockClock) -> None:
    async with supervisor_tree(tree_of(ChildSpec("w", crash_after(1.0)))) as tree:
        recorder = EventRecorder(tree)
        await trio.sleep(1.5)
        recorder.close()
        await trio.sleep(5)
    assert recorder.kinds() == [
        EventKind.CRASHED,
        EventKind.RESTART_SCHEDULED,
        EventKind.RESTARTED,
    ]


# ------------------------------------------------------------------------ waits


async def test_wait_idle_returns_without_time_passing_when_only_time_helps(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = tree_of(ChildSpec("w", crash_after(1.0, starts=1)), backoff=Backoff(5.0, jitter=0))
    async with supervisor_tree(spec) as tree:
        await trio.sleep(1.5)
        await wait_idle(tree)
        assert trio.current_time() == pytest.approx(1.5)
        # Waiting for its backoff counts as idle.
        assert tree.info("w").state is ChildState.RESTARTING


async def test_wait_idle_waits_for_a_start_in_progress(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        supervisor_tree(tree_of(ChildSpec("a", sleeper()))) as tree,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(tree.start_child, ChildSpec("w", slow_start(3.0)))
        await trio.testing.wait_all_tasks_blocked()
        assert tree.info("w").state is ChildState.STARTING
        await wait_idle(tree)
        assert trio.current_time() == pytest.approx(3.0)
        assert tree.info("w").state is ChildState.RUNNING


async def test_wait_idle_waits_for_a_stop_in_progress(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with (
        supervisor_tree(tree_of(ChildSpec("w", slow_stop(3.0)))) as tree,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(tree.terminate_child, "w")
        await trio.testing.wait_all_tasks_blocked()
        assert tree.info("w").state is ChildState.STOPPING
        await wait_idle(tree)
        assert trio.current_time() == pytest.approx(3.0)
        assert tree.info("w").state is ChildState.STOPPED


async def test_wait_stable_waits_for_pending_restarts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = tree_of(
        ChildSpec("w", crash_after(1.0, starts=1)),
        backoff=Backoff(4.75, jitter=0),
    )
    async with supervisor_tree(spec) as tree:
        await trio.sleep(1.5)
        assert tree.info("w").state is ChildState.RESTARTING
        await wait_stable(tree)
        assert trio.current_time() == pytest.approx(5.75)
        assert tree.info("w").state is ChildState.RUNNING
        # Already stable: returns at once.
        await wait_stable(tree)
        assert trio.current_time() == pytest.approx(5.75)


async def test_wait_stable_looks_into_nested_supervisors(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec(
        "root",
        [
            ChildSpec("a", sleeper()),
            SupervisorSpec(
                "sub",
                [ChildSpec("w", crash_after(1.0, starts=1))],
                backoff=Backoff(2.0, jitter=0),
            ),
        ],
    )
    async with supervisor_tree(spec) as tree:
        await trio.sleep(1.5)
        assert tree.info("sub/w").state is ChildState.RESTARTING
        await wait_stable(tree)
        assert trio.current_time() == pytest.approx(3.0)
        assert tree.info("sub/w").state is ChildState.RUNNING


async def test_wait_state(autojump_clock: trio.testing.MockClock) -> None:
    spec = tree_of(ChildSpec("w", crash_after(1.0, starts=1)), backoff=Backoff(2.5, jitter=0))
    async with supervisor_tree(spec) as tree:
        await wait_state(tree, "w", ChildState.RESTARTING)
        assert trio.current_time() == pytest.approx(1.0)
        await wait_state(tree, "w", ChildState.RUNNING)
        assert trio.current_time() == pytest.approx(3.5)
        # Already there: returns at once.
        await wait_state(tree, "w", ChildState.RUNNING)
        assert trio.current_time() == pytest.approx(3.5)


# ------------------------------------------------------------------------ MemoryLock


async def test_memory_lock_is_handed_over_first_come_first_served(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A holder that let go and asks again at once queued behind the replica that was
    # waiting, or took the lock back first, as Trio's scheduler happened to order them:
    # a singleton test that expected the waiting replica to take over hung in CI.
    for _ in range(20):  # each round is a new toss of the scheduler's coin
        lock = MemoryLock()
        order: list[str] = []
        seen: list[str | None] = []

        async def waiter(lock: MemoryLock, order: list[str], seen: list[str | None]) -> None:
            async with lock.hold("b", report_holder=seen.append):
                order.append("b")

        async with trio.open_nursery() as nursery:
            async with lock.hold("a"):
                nursery.start_soon(waiter, lock, order, seen)
                await trio.sleep(1)
            async with lock.hold("a"):  # at once, in the same tick
                order.append("a again")
        assert order == ["b", "a again"]
        assert seen == ["a"]
        assert await lock.holder() is None


async def test_a_waiter_cancelled_while_it_waits_leaves_the_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lock = MemoryLock()
    got: list[str] = []

    async def waiter(name: str, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            async with lock.hold(name):
                got.append(name)
                await trio.sleep(1)

    async with trio.open_nursery() as nursery, lock.hold("a"):
        first = await nursery.start(waiter, "b")
        await nursery.start(waiter, "c")
        await trio.sleep(1)
        first.cancel()  # b gives up waiting
        await trio.sleep(1)
    assert got == ["c"]
    assert await lock.holder() is None


async def test_memory_lock_lose_stops_the_holder_and_frees_the_lock_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    lock = MemoryLock()
    async with lock.hold("a") as lease:
        lock.lose("gone")
        assert lease.lost.is_set()
        assert lease.lost_reason == "gone"
        assert lease.scope.cancel_called
        assert await lock.holder() == "a"  # free once the holder has stopped
    assert await lock.holder() is None
    with pytest.raises(RuntimeError, match="nobody holds the lock"):
        lock.lose()
