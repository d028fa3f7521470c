"""Regression tests for the defects of issue 9 (moved into the module test files later)."""

from __future__ import annotations

import math
from time import perf_counter

import pytest
import trio
import trio.testing

from trio_supervise import (
    Backoff,
    ChildSpec,
    ChildState,
    EventKind,
    Restart,
    Strategy,
    SupervisionError,
    SupervisorSpec,
    supervisor_tree,
)
from trio_supervise.testing import FakeCrash, sleeper, slow_stop


async def test_delete_child_during_group_stop_is_done_after_it() -> None:
    async def crash_soon() -> None:
        await trio.sleep(1)
        raise FakeCrash("a crashed")

    spec = SupervisorSpec(
        "root",
        [
            ChildSpec("x", slow_stop(2.0)),
            ChildSpec("t", sleeper(), restart=Restart.TEMPORARY),
            ChildSpec("s", sleeper()),
            ChildSpec("a", crash_soon),
        ],
        strategy=Strategy.ONE_FOR_ALL,
        backoff=None,
    )
    async with supervisor_tree(spec) as tree:
        await tree.terminate_child("s")
        await trio.sleep(1.5)  # a crashed at 1; t was stopped; x stops until 3
        with pytest.raises(SupervisionError, match=r"^cannot delete 't': it is restarting;"):
            tree.delete_child("t")
        tree.delete_child("s")  # stopped, and its supervisor is busy: queued
        assert [c.name for c in tree.children()] == ["x", "t", "s", "a"]
        await trio.sleep(2)
        assert [c.name for c in tree.children()] == ["x", "a"]
        assert tree.info("x").state is ChildState.RUNNING
    removed = [e for e in tree.history if e.kind is EventKind.REMOVED]
    assert [(e.path, e.detail) for e in removed] == [
        ("t", "temporary child stopped by one_for_all restart after 'a' exited"),
        ("s", "delete_child"),
    ]


@pytest.mark.parametrize("strategy", [Strategy.ONE_FOR_ALL, Strategy.REST_FOR_ONE])
async def test_plain_children_start_in_list_order(strategy: Strategy) -> None:
    for _ in range(30):
        order: list[str] = []

        def child(name: str, crash: bool) -> ChildSpec:
            async def target() -> None:
                order.append(name)
                await trio.sleep(1)
                if crash:
                    raise FakeCrash(name)
                await trio.sleep_forever()

            return ChildSpec(name, target, restart=Restart.TRANSIENT)

        names = "abcdef"
        spec = SupervisorSpec(
            "root",
            [child(n, crash=(n == "a")) for n in names],
            strategy=strategy,
            backoff=None,
        )
        async with supervisor_tree(spec):
            order.append("body")
            assert order == [*names, "body"]
            await trio.sleep(1.5)
        assert order[7:] == list(names)


async def test_failing_restarts_keep_the_supervisor_serving() -> None:
    attempts = 0

    async def fails_after_first(
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        nonlocal attempts
        attempts += 1
        if attempts > 1:
            await trio.sleep(0.5)
            raise FakeCrash(f"start {attempts} failed")
        task_status.started()
        await trio.sleep(1)
        raise FakeCrash("crashed")

    async def exits_later() -> None:
        await trio.sleep(3)

    spec = SupervisorSpec(
        "root",
        [ChildSpec("f", fails_after_first), ChildSpec("s", exits_later, restart=Restart.TRANSIENT)],
        max_restarts=1000,
        max_seconds=1,
        backoff=None,
    )
    async with supervisor_tree(spec) as tree:
        await trio.sleep(2)
        counts = tree.count_children()
        assert (counts.specs, counts.active) == (2, 1)  # f is restarting
        with trio.fail_after(1):
            info = await tree.start_child(ChildSpec("new", sleeper()))
        assert info.state is ChildState.RUNNING
        await trio.sleep(1.25)  # s returned at 3
        assert tree.info("s").state is ChildState.STOPPED
        with trio.fail_after(1):
            await tree.terminate_child("f")
        tried = attempts
        await trio.sleep(5)
        assert attempts == tried
        assert tree.info("f").state is ChildState.STOPPED


async def test_count_children_does_not_count_a_child_in_backoff() -> None:
    spec = SupervisorSpec(
        "root",
        [ChildSpec("c", sleeper()), ChildSpec("w", sleeper())],
        backoff=Backoff(initial=10, jitter=0),
    )

    async def crash() -> None:
        raise FakeCrash("boom")

    async with supervisor_tree(spec) as tree:
        await tree.start_child(ChildSpec("k", crash))
        await trio.testing.wait_all_tasks_blocked()
        assert tree.info("k").state is ChildState.RESTARTING
        assert tree.count_children().active == 2


@pytest.mark.parametrize("n", [1_000, 4_000])
async def test_start_child_cost_does_not_grow(n: int) -> None:
    spec = SupervisorSpec("root", [], backoff=None)
    async with supervisor_tree(spec) as tree:
        for i in range(n):
            await tree.start_child(ChildSpec(f"c{i}", sleeper()))
        t0 = perf_counter()
        for i in range(200):
            await tree.start_child(ChildSpec(f"d{i}", sleeper()))
        for i in range(200):
            await tree.terminate_child(f"d{i}")
        print(n, (perf_counter() - t0) / 400 * 1e6, "us")
