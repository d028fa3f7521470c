"""``current_child()``: a running child's view of itself."""

from __future__ import annotations

import re

import attrs
import pytest
import trio
import trio.testing

from trio_supervise import (
    ChildContext,
    ChildSpec,
    ShutdownHook,
    Strategy,
    SupervisorSpec,
    current_child,
    supervisor_tree,
)
from trio_supervise.testing import FakeCrash, sleeper

OUTSIDE = (
    r"^current_child\(\) was called outside a supervised child; call it from a"
    r" ChildSpec target \(or a task that target spawned\)$"
)


async def test_name_and_path(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[ChildContext] = []

    async def worker() -> None:
        seen.append(current_child())
        await trio.sleep_forever()

    spec = SupervisorSpec(
        "root",
        [ChildSpec("top", worker), SupervisorSpec("db", [ChildSpec("pool", worker)])],
    )
    async with supervisor_tree(spec):
        await trio.sleep(1)
    assert sorted((ctx.name, ctx.path, ctx.restarts) for ctx in seen) == [
        ("pool", "db/pool", 0),
        ("top", "top", 0),
    ]
    assert all(isinstance(ctx.stop_requested, trio.Event) for ctx in seen)


async def test_restarts_counts_up_across_restarts(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[ChildContext] = []

    async def worker() -> None:
        ctx = current_child()
        seen.append(ctx)
        await trio.sleep(1)
        if ctx.restarts < 3:
            raise FakeCrash(f"run {ctx.restarts}")
        await trio.sleep_forever()

    spec = SupervisorSpec("root", [ChildSpec("w", worker)], backoff=None, max_restarts=5)
    async with supervisor_tree(spec) as tree:
        await trio.sleep(10)
        assert tree.info("w").restarts == 3
    assert [ctx.restarts for ctx in seen] == [0, 1, 2, 3]
    assert [ctx.path for ctx in seen] == ["w"] * 4
    # A fresh context, and a fresh stop request, for every run.
    assert len({id(ctx) for ctx in seen}) == 4
    assert len({id(ctx.stop_requested) for ctx in seen}) == 4


async def test_restarts_counts_restart_child_too(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[int] = []

    async def worker() -> None:
        seen.append(current_child().restarts)
        await trio.sleep_forever()

    async with supervisor_tree(SupervisorSpec("root", [ChildSpec("w", worker)])) as tree:
        await tree.restart_child("w")
        await tree.restart_child("w")
    assert seen == [0, 1, 2]


async def test_stop_requested_is_set_before_the_cancellation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    observed: list[tuple[str, bool, float]] = []

    async def worker() -> None:
        ctx = current_child()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            observed.append(("cancelled", ctx.stop_requested.is_set(), trio.current_time()))
            raise
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(0.5)
                observed.append(("finally", ctx.stop_requested.is_set(), trio.current_time()))

    spec = SupervisorSpec("root", [ChildSpec("w", worker, shutdown_timeout=5.0)])
    async with supervisor_tree(spec) as tree:
        await trio.sleep(2)
        assert observed == []
        await tree.terminate_child("w")
        assert trio.current_time() == pytest.approx(2.5)
    assert observed == [("cancelled", True, 2.0), ("finally", True, 2.5)]


async def test_a_context_first_asked_for_after_the_stop_request_sees_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The context is made on the first current_child(): one made after the ask is set too.
    observed: list[tuple[str, int, bool]] = []

    async def worker() -> None:
        try:
            await trio.sleep_forever()
        finally:
            ctx = current_child()
            observed.append((ctx.path, ctx.restarts, ctx.stop_requested.is_set()))

    spec = SupervisorSpec("root", [ChildSpec("w", worker, shutdown_timeout=5.0)])
    async with supervisor_tree(spec) as tree:
        await tree.restart_child("w")
        await tree.terminate_child("w")
    assert observed == [("w", 0, True), ("w", 1, True)]


async def test_stop_requested_lets_a_child_wind_down_by_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    steps: list[float] = []

    async def worker() -> None:
        stop = current_child().stop_requested
        with trio.CancelScope(shield=True):
            # A long step that only looks at its stop request between items.
            while not stop.is_set():
                await trio.sleep(1)
                steps.append(trio.current_time())

    spec = SupervisorSpec("root", [ChildSpec("w", worker, shutdown_timeout=10.0)])
    async with supervisor_tree(spec) as tree:
        await trio.sleep(2.5)
        await tree.terminate_child("w")
        assert trio.current_time() == pytest.approx(3.0)
    assert steps == [1.0, 2.0, 3.0]


async def test_stop_requested_is_not_set_by_a_brutal_kill(
    autojump_clock: trio.testing.MockClock,
) -> None:
    observed: list[bool] = []

    async def worker() -> None:
        ctx = current_child()
        try:
            await trio.sleep_forever()
        finally:
            observed.append(ctx.stop_requested.is_set())

    # shutdown_timeout=0 skips the asking (§4).
    spec = SupervisorSpec("root", [ChildSpec("w", worker, shutdown_timeout=0)])
    async with supervisor_tree(spec) as tree:
        await tree.terminate_child("w")
    assert observed == [False]


async def test_in_a_task_spawned_by_the_target(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[tuple[ChildContext, ChildContext]] = []

    async def helper(parent: ChildContext) -> None:
        await trio.sleep(1)
        seen.append((parent, current_child()))

    async def worker() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(helper, current_child())
            await trio.sleep_forever()

    spec = SupervisorSpec("root", [SupervisorSpec("sub", [ChildSpec("w", worker)])])
    async with supervisor_tree(spec):
        await trio.sleep(2)
    ((parent, child),) = seen
    assert child is parent
    assert child.path == "sub/w"


async def test_in_a_service_run(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[ChildContext] = []

    @attrs.define
    class Service:
        async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            seen.append(current_child())
            task_status.started()
            await trio.sleep_forever()

    spec = SupervisorSpec("root", [SupervisorSpec("sub", [ChildSpec.service("svc", Service)])])
    async with supervisor_tree(spec) as tree:
        await tree.restart_child("sub/svc")
    assert [(ctx.path, ctx.restarts) for ctx in seen] == [("sub/svc", 0), ("sub/svc", 1)]


async def test_restarts_of_a_sibling_restarted_with_the_group(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: list[tuple[str, int]] = []

    async def worker(crash: bool) -> None:
        ctx = current_child()
        seen.append((ctx.name, ctx.restarts))
        await trio.sleep(1)
        if crash and ctx.restarts == 0:
            raise FakeCrash("once")
        await trio.sleep_forever()

    spec = SupervisorSpec(
        "root",
        [ChildSpec("a", worker, (False,)), ChildSpec("b", worker, (True,))],
        strategy=Strategy.ONE_FOR_ALL,
        backoff=None,
    )
    async with supervisor_tree(spec):
        await trio.sleep(2)
    # Plain targets start without waiting for each other: their first steps may interleave.
    assert sorted(seen) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]


def test_outside_any_child_raises() -> None:
    with pytest.raises(RuntimeError, match=OUTSIDE):
        current_child()


async def test_in_the_tree_body_and_hooks_raises(autojump_clock: trio.testing.MockClock) -> None:
    messages: dict[str, str] = {}

    async def hook() -> None:
        try:
            current_child()
        except RuntimeError as exc:
            messages["hook"] = str(exc)

    async def task() -> None:
        try:
            current_child()
        except RuntimeError as exc:
            messages["task"] = str(exc)

    hooks = [ShutdownHook("look", hook, priority=0)]
    spec = SupervisorSpec("root", [ChildSpec("w", sleeper())])
    async with supervisor_tree(spec, hooks=hooks):
        with pytest.raises(RuntimeError, match=OUTSIDE):
            current_child()
        # Nor in a task the body spawns.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(task)
    assert set(messages) == {"hook", "task"}
    assert all(re.match(OUTSIDE, message) for message in messages.values())
