"""The tree handle: introspection, dynamic children, and their errors."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_supervise import (
    Backoff,
    ChildCounts,
    ChildInfo,
    ChildNotFoundError,
    ChildSpec,
    ChildStartError,
    ChildState,
    EventKind,
    Restart,
    SpecError,
    Strategy,
    SupervisionError,
    SupervisorSpec,
    SupervisorTree,
    supervisor_tree,
)
from trio_supervise.testing import (
    EventRecorder,
    FakeCrash,
    crash_after,
    fail_start,
    sleeper,
    slow_start,
    wait_state,
)


def app(max_children: int | None = None) -> SupervisorSpec:
    return SupervisorSpec(
        "app",
        [
            ChildSpec("web", sleeper()),
            SupervisorSpec(
                "db",
                [ChildSpec("pool", sleeper()), ChildSpec("cache", sleeper())],
                strategy=Strategy.REST_FOR_ONE,
            ),
        ],
        max_children=max_children,
    )


async def test_children_info_and_counts(autojump_clock: trio.testing.MockClock) -> None:
    async with supervisor_tree(app()) as tree:
        await trio.sleep(1)
        assert [info.path for info in tree.children()] == ["web", "db"]
        assert [info.path for info in tree.children("db")] == ["db/pool", "db/cache"]
        assert tree.info("db/pool") == ChildInfo(
            "pool", "db/pool", "worker", ChildState.RUNNING, 0, None, 0.0
        )
        assert tree.info("db").kind == "supervisor"
        assert tree.info("").state is ChildState.RUNNING
        assert tree.count_children() == ChildCounts(specs=2, active=2, workers=1, supervisors=1)
        assert tree.count_children("db") == ChildCounts(2, 2, 2, 0)


async def test_render(autojump_clock: trio.testing.MockClock) -> None:
    async with supervisor_tree(app()) as tree:
        await tree.terminate_child("db/cache")
        assert tree.render() == (
            "app (supervisor, running)\n"
            "  web (worker, running, restarts=0)\n"
            "  db (supervisor, running, restarts=0)\n"
            "    pool (worker, running, restarts=0)\n"
            "    cache (worker, stopped, restarts=0)"
        )


async def test_unknown_paths_name_the_nearest_parent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with supervisor_tree(app()) as tree:
        with pytest.raises(ChildNotFoundError) as excinfo:
            tree.info("db/pol")
        assert str(excinfo.value) == (
            "no child at path 'db/pol': nearest existing supervisor is 'db',"
            " whose children are: 'pool', 'cache'"
        )
        assert (excinfo.value.path, excinfo.value.nearest) == ("db/pol", "db")
        with pytest.raises(
            LookupError,
            match=r"^no child at path 'nope': nearest existing supervisor is '' \(the root\),"
            r" whose children are: 'web', 'db'$",
        ):
            await tree.terminate_child("nope")
        with pytest.raises(LookupError, match=r"^no child at path 'web/x': nearest existing"):
            tree.children("web/x")
        with pytest.raises(SupervisionError, match=r"^'web' is a worker, not a supervisor"):
            tree.children("web")


async def test_start_child_at_run_time(autojump_clock: trio.testing.MockClock) -> None:
    async with supervisor_tree(app()) as tree:
        recorder = EventRecorder(tree)
        info = await tree.start_child(ChildSpec("late", slow_start(2.0)), under="db")
        # It returns once the child called started().
        assert trio.current_time() == pytest.approx(2.0)
        assert info.path == "db/late"
        assert info.state is ChildState.RUNNING
        assert [c.name for c in tree.children("db")] == ["pool", "cache", "late"]
        recorder.assert_exact((EventKind.STARTED, "db/late"))


async def test_start_child_errors(autojump_clock: trio.testing.MockClock) -> None:
    async with supervisor_tree(app(max_children=3)) as tree:
        with pytest.raises(
            SupervisionError,
            match=r"^supervisor '\(root\)' already has a child named 'web'; pick another name",
        ):
            await tree.start_child(ChildSpec("web", sleeper()))
        boom = FakeCrash("bad config")
        with pytest.raises(ChildStartError) as excinfo:
            await tree.start_child(ChildSpec("broken", fail_start(1.0, boom)))
        assert excinfo.value.__cause__ is boom
        assert [c.name for c in tree.children()] == ["web", "db"]
        await tree.start_child(ChildSpec("third", sleeper()))
        with pytest.raises(
            SupervisionError,
            match=r"^supervisor '\(root\)' already holds max_children=3 children;"
            r" cannot start 'fourth'$",
        ):
            await tree.start_child(ChildSpec("fourth", sleeper()))
        with pytest.raises(SpecError, match=r"^ChildSpec 'sig' is significant but"):
            await tree.start_child(
                ChildSpec("sig", sleeper(), restart=Restart.TRANSIENT, significant=True),
                under="db",
            )


async def test_terminate_restart_delete(autojump_clock: trio.testing.MockClock) -> None:
    async with supervisor_tree(app()) as tree:
        recorder = EventRecorder(tree)
        await tree.terminate_child("web")
        assert tree.info("web").state is ChildState.STOPPED
        await trio.sleep(10)
        assert tree.info("web").state is ChildState.STOPPED  # never restarted by itself
        assert tree.health().status.value == "healthy"  # stopped on purpose is not degraded
        info = await tree.restart_child("web")
        assert info.state is ChildState.RUNNING
        assert info.restarts == 1
        with pytest.raises(
            SupervisionError,
            match=r"^cannot delete 'web': it is running; terminate_child\(\) it first$",
        ):
            tree.delete_child("web")
        await tree.terminate_child("web")
        tree.delete_child("web")
        assert [c.name for c in tree.children()] == ["db"]
        recorder.assert_exact(
            EventKind.TERMINATED,
            EventKind.RESTARTED,
            EventKind.TERMINATED,
            EventKind.REMOVED,
            path="web",
        )


async def test_restart_child_cancels_pending_backoff_and_resets_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec(
        "app",
        [ChildSpec("w", crash_after(1.0))],
        backoff=Backoff(initial=10.0, maximum=100.0, jitter=0.0),
        max_restarts=100,
        max_seconds=1000,
    )
    async with supervisor_tree(spec) as tree:
        await wait_state(tree, "w", ChildState.RESTARTING)
        assert trio.current_time() == pytest.approx(1.0)
        await trio.sleep(1)
        await tree.restart_child("w")  # at 2, instead of 11
        assert tree.info("w").state is ChildState.RUNNING
        recorder = EventRecorder(tree)
        await trio.sleep(11.5)
        # Crash at 3: the backoff starts over at 10 s, so the next start is at 13.
        assert [(e.kind, e.time) for e in recorder.events] == [
            (EventKind.CRASHED, 3.0),
            (EventKind.RESTART_SCHEDULED, 3.0),
            (EventKind.RESTARTED, 13.0),
        ]


async def test_terminate_child_during_backoff(autojump_clock: trio.testing.MockClock) -> None:
    spec = SupervisorSpec(
        "app",
        [ChildSpec("w", crash_after(1.0))],
        backoff=Backoff(initial=10.0, jitter=0.0),
    )
    async with supervisor_tree(spec) as tree:
        await wait_state(tree, "w", ChildState.RESTARTING)
        await tree.terminate_child("w")
        await trio.sleep(30)
        assert tree.info("w").state is ChildState.STOPPED
        assert tree.info("w").restarts == 1


async def test_calls_to_a_stopped_supervisor_fail(autojump_clock: trio.testing.MockClock) -> None:
    async with supervisor_tree(app()) as tree:
        await tree.terminate_child("db")
        with pytest.raises(
            SupervisionError, match=r"^supervisor 'db' is not running, so it cannot take this call"
        ):
            await tree.start_child(ChildSpec("x", sleeper()), under="db")
        assert tree.info("db/pool").state is ChildState.STOPPED


async def test_tree_has_no_public_constructor() -> None:
    with pytest.raises(TypeError, match=r"has no public constructor"):
        SupervisorTree()  # type: ignore[call-arg]


async def test_bad_arguments_to_supervisor_tree() -> None:
    with pytest.raises(SpecError, match=r"^supervisor_tree takes a SupervisorSpec"):
        async with supervisor_tree(ChildSpec("x", sleeper())):  # type: ignore[arg-type]
            pass  # pragma: no cover
    with pytest.raises(SpecError, match=r"^supervisor_tree: shutdown_deadline must be >= 0"):
        async with supervisor_tree(app(), shutdown_deadline=-1):
            pass  # pragma: no cover
