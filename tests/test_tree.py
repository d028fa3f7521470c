"""The tree handle: introspection, dynamic children, and their errors."""

from __future__ import annotations

import gc
import logging
import sys
import types
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing
from timed_hooks import Spans, timed

from trio_supervise import (
    Backoff,
    Band,
    ChildCounts,
    ChildInfo,
    ChildNotFoundError,
    ChildSpec,
    ChildStartError,
    ChildState,
    Event,
    EventKind,
    Restart,
    ShutdownHook,
    SpecError,
    Strategy,
    SupervisionError,
    SupervisorSpec,
    SupervisorTree,
    current_tree,
    supervisor_tree,
)
from trio_supervise.testing import (
    EventRecorder,
    FakeCrash,
    crash_after,
    fail_start,
    sleeper,
    slow_start,
    slow_stop,
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


async def test_a_bool_deadline_is_refused_as_a_hook_timeout_is() -> None:
    # True is no number of seconds; supervisor_tree used to take it as 1.
    async def flush() -> None:
        pass  # pragma: no cover

    with pytest.raises(SpecError) as hook_error:
        ShutdownHook("flush", flush, priority=Band.FLUSH, timeout=True)
    with pytest.raises(SpecError) as tree_error:
        async with supervisor_tree(app(), shutdown_deadline=True):
            pass  # pragma: no cover
    assert str(hook_error.value) == (
        "ShutdownHook 'flush': timeout must be a number >= 0 or None (got True)"
    )
    assert str(tree_error.value) == (
        "supervisor_tree: shutdown_deadline must be a number >= 0 (got True)"
    )


async def test_a_bool_history_size_is_refused() -> None:
    with pytest.raises(SpecError, match=r"^supervisor_tree: history_size must be an int >= 0"):
        async with supervisor_tree(app(), history_size=True):
            pass  # pragma: no cover


# ------------------------------------------------------------------------ current_tree()


def test_current_tree_outside_a_tree_raises() -> None:
    with pytest.raises(
        RuntimeError,
        match=r"^current_tree\(\) was called outside a supervisor tree; call it from the body"
        r" of `async with supervisor_tree\(\.\.\.\)`, a supervised child or a shutdown hook$",
    ):
        current_tree()


async def test_current_tree_from_the_body_children_their_tasks_and_hooks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: dict[str, SupervisorTree] = {}
    runs = 0

    async def nested_task() -> None:
        await trio.sleep(1)
        seen["task of a child"] = current_tree()
        await trio.sleep_forever()

    async def worker() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            seen["child"] = current_tree()
            raise FakeCrash("first run")
        seen["restarted child"] = current_tree()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(nested_task)

    async def startable(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        seen["task_status child before started()"] = current_tree()
        task_status.started()
        await trio.sleep_forever()

    async def dynamic() -> None:
        seen["child from start_child"] = current_tree()
        await trio.sleep_forever()

    def recorder(key: str) -> Callable[[], Awaitable[None]]:
        async def hook() -> None:
            seen[key] = current_tree()

        return hook

    spec = SupervisorSpec(
        "app",
        [ChildSpec("w", worker), SupervisorSpec("sub", [ChildSpec("s", startable)])],
        backoff=None,
    )
    hooks = [ShutdownHook("given", recorder("hook from hooks="), priority=Band.CLEANUP)]
    async with supervisor_tree(
        spec, hooks=hooks, reload_hooks={"r": recorder("reload hook")}
    ) as tree:
        seen["body"] = current_tree()
        tree.add_shutdown_hook("added", recorder("hook from add_shutdown_hook"), priority=0)
        await tree.start_child(ChildSpec("dynamic", dynamic), under="sub")
        await tree.reload()
        await trio.sleep(2)
    assert sorted(seen) == [
        "body",
        "child",
        "child from start_child",
        "hook from add_shutdown_hook",
        "hook from hooks=",
        "reload hook",
        "restarted child",
        "task of a child",
        "task_status child before started()",
    ]
    assert all(value is tree for value in seen.values()), seen
    # The tree is forgotten when its block ends.
    with pytest.raises(RuntimeError, match=r"^current_tree\(\) was called outside"):
        current_tree()


async def test_nested_trees_each_see_their_own(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[tuple[str, SupervisorTree]] = []
    trees: dict[str, SupervisorTree] = {}

    def recording(key: str) -> Callable[[], Awaitable[None]]:
        async def target() -> None:
            seen.append((key, current_tree()))
            await trio.sleep_forever()

        return target

    async def host() -> None:
        # A child that runs a tree of its own.
        inner_spec = SupervisorSpec("in-child", [ChildSpec("iw", recording("in-child worker"))])
        async with supervisor_tree(inner_spec) as inner:
            trees["in-child"] = inner
            seen.append(("in-child body", current_tree()))
            await trio.sleep_forever()

    outer_spec = SupervisorSpec(
        "outer", [ChildSpec("ow", recording("outer worker")), ChildSpec("host", host)]
    )
    async with supervisor_tree(outer_spec) as outer:
        trees["outer"] = outer
        await trio.sleep(1)
        seen.append(("outer body", current_tree()))
        body_spec = SupervisorSpec("in-body", [ChildSpec("bw", recording("in-body worker"))])
        async with supervisor_tree(body_spec) as in_body:
            trees["in-body"] = in_body
            await trio.sleep(1)
            seen.append(("in-body body", current_tree()))
        seen.append(("outer body after the inner tree", current_tree()))
    assert len({id(tree) for tree in trees.values()}) == 3
    # A body may run before its plain children's first step: compare without the order.
    names = {key: next(k for k, t in trees.items() if t is tree) for key, tree in seen}
    assert len(names) == len(seen)
    assert names == {
        "outer worker": "outer",
        "in-child worker": "in-child",
        "in-child body": "in-child",
        "outer body": "outer",
        "in-body worker": "in-body",
        "in-body body": "in-body",
        "outer body after the inner tree": "outer",
    }


# ------------------------------------------------------------------------ event listeners


def _crashing_app() -> SupervisorSpec:
    return SupervisorSpec(
        "app",
        [ChildSpec("w", crash_after(1.0)), ChildSpec("s", sleeper())],
        backoff=None,
        max_restarts=100,
        max_seconds=1.0,
    )


async def test_an_event_listener_is_called_synchronously_for_every_event_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls: list[tuple[Event, int, float]] = []
    async with supervisor_tree(_crashing_app()) as tree:
        first = len(tree.history)

        def listener(event: Event) -> None:
            # Called as each event is emitted: it is the newest in the history, and no
            # later event (even of the same instant) has been emitted yet.
            calls.append((event, len(tree.history), trio.current_time()))

        tree.add_event_listener(listener)
        await tree.terminate_child("s")
        # terminate_child returned: its event was delivered without waiting for a task.
        assert [(e.kind, e.path) for e, _, _ in calls] == [(EventKind.TERMINATED, "s")]
        await trio.sleep(2.5)
    events = [event for event, _, _ in calls]
    assert events == tree.history[first:]
    assert [size for _, size, _ in calls] == list(range(first + 1, first + 1 + len(calls)))
    assert [time for _, _, time in calls] == [event.time for event in events]
    assert [(e.kind, e.path) for e in events] == [
        (EventKind.TERMINATED, "s"),
        (EventKind.CRASHED, "w"),
        (EventKind.RESTART_SCHEDULED, "w"),
        (EventKind.RESTARTED, "w"),
        (EventKind.CRASHED, "w"),
        (EventKind.RESTART_SCHEDULED, "w"),
        (EventKind.RESTARTED, "w"),
        (EventKind.SHUTDOWN_STARTED, ""),
        (EventKind.TERMINATED, "w"),
        (EventKind.HOOK_FINISHED, "supervisor"),
        (EventKind.SHUTDOWN_FINISHED, ""),
    ]


async def test_removing_an_event_listener(autojump_clock: trio.testing.MockClock) -> None:
    kept: list[EventKind] = []
    removed: list[EventKind] = []
    once: list[EventKind] = []
    async with supervisor_tree(_crashing_app()) as tree:
        tree.add_event_listener(lambda event: kept.append(event.kind))
        remove = tree.add_event_listener(lambda event: removed.append(event.kind))

        def one_shot(event: Event) -> None:
            once.append(event.kind)
            remove_one_shot()  # removing itself while being called is fine

        remove_one_shot = tree.add_event_listener(one_shot)
        await trio.sleep(1.5)
        cycle = [EventKind.CRASHED, EventKind.RESTART_SCHEDULED, EventKind.RESTARTED]
        assert kept == removed == cycle
        assert once == [EventKind.CRASHED]
        remove()
        remove()  # a second call does nothing
        await trio.sleep(1)
    assert removed == cycle
    assert once == [EventKind.CRASHED]
    assert kept == [
        *cycle,
        *cycle,
        EventKind.SHUTDOWN_STARTED,
        EventKind.TERMINATED,
        EventKind.TERMINATED,
        EventKind.HOOK_FINISHED,
        EventKind.SHUTDOWN_FINISHED,
    ]


async def test_a_raising_event_listener_is_logged_and_supervision_goes_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_supervise")
    error = FakeCrash("exporter down")

    def broken(event: Event) -> None:
        raise error

    after: list[EventKind] = []
    async with supervisor_tree(_crashing_app()) as tree:
        tree.add_event_listener(broken)
        # Registered after the broken one: still called for every event.
        tree.add_event_listener(lambda event: after.append(event.kind))
        await trio.sleep(1.5)
        assert tree.info("w").state is ChildState.RUNNING
        assert tree.info("w").restarts == 1
    assert after == [
        EventKind.CRASHED,
        EventKind.RESTART_SCHEDULED,
        EventKind.RESTARTED,
        EventKind.SHUTDOWN_STARTED,
        EventKind.TERMINATED,
        EventKind.TERMINATED,
        EventKind.HOOK_FINISHED,
        EventKind.SHUTDOWN_FINISHED,
    ]
    failures = [r for r in caplog.records if getattr(r, "kind", None) == "LISTENER_FAILED"]
    assert [r.getMessage() for r in failures] == [
        f"event listener {broken!r} failed on {kind.name}" for kind in after
    ]
    assert {(r.name, r.levelno) for r in failures} == {("trio_supervise", logging.ERROR)}
    assert [getattr(r, "path", None) for r in failures][:3] == ["w", "w", "w"]
    assert all(r.exc_info is not None and r.exc_info[1] is error for r in failures)
    assert tree.shutdown_report is not None
    assert tree.shutdown_report.ok


async def test_add_event_listener_takes_a_callable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with supervisor_tree(app()) as tree:
        with pytest.raises(TypeError, match=r"^add_event_listener takes a callable \(got 5\)$"):
            tree.add_event_listener(5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- reload hooks


async def nothing() -> None:
    pass


def not_async() -> None:
    pass


async def test_reload_runs_every_hook_concurrently_and_returns_the_outcomes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spans: Spans = {}
    async with supervisor_tree(app(), reload_hooks={"config": timed(spans, "config", 1.0)}) as tree:
        tree.add_reload_hook("tls", timed(spans, "tls", 2.0))
        recorder = EventRecorder(tree)
        await trio.sleep(1)
        assert await tree.reload() == {"config": None, "tls": None}
        assert trio.current_time() == pytest.approx(3.0)
        assert spans == {"config": (1.0, 2.0), "tls": (1.0, 3.0)}
        assert [(e.kind, e.path, e.time, e.error) for e in recorder.events] == [
            (EventKind.RELOADED, "config", 2.0, None),
            (EventKind.RELOADED, "tls", 3.0, None),
        ]
        # Every reload runs them all again.
        assert await tree.reload() == {"config": None, "tls": None}
        assert spans == {"config": (3.0, 4.0), "tls": (3.0, 5.0)}
        assert [info.state for info in tree.children()] == [ChildState.RUNNING] * 2


async def test_reload_without_hooks_does_nothing(autojump_clock: trio.testing.MockClock) -> None:
    async with supervisor_tree(app()) as tree:
        recorder = EventRecorder(tree)
        assert await tree.reload() == {}
        assert recorder.events == []
        assert trio.current_time() == 0.0


async def test_a_failing_reload_hook_is_logged_and_the_tree_lives_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_supervise")
    error = FakeCrash("bad configuration file")
    spans: Spans = {}

    async def broken() -> None:
        await trio.sleep(0.5)
        raise error

    reload_hooks = {"broken": broken, "config": timed(spans, "config", 1.0)}
    async with supervisor_tree(app(), reload_hooks=reload_hooks) as tree:
        recorder = EventRecorder(tree)
        outcomes = await tree.reload()
        assert outcomes == {"broken": error, "config": None}
        assert outcomes["broken"] is error
        # The other hook ran on to its end: a failing hook cancels nothing.
        assert spans == {"config": (0.0, 1.0)}
        (failed, worked) = recorder.of(EventKind.RELOADED)
        assert (failed.path, failed.time, failed.error) == ("broken", 0.5, error)
        assert (worked.path, worked.time, worked.error) == ("config", 1.0, None)
        # The tree lives on.
        await trio.sleep(10)
        assert not tree.shutting_down
        assert tree.health().ready
        assert [(info.path, info.state) for info in tree.children()] == [
            ("web", ChildState.RUNNING),
            ("db", ChildState.RUNNING),
        ]
        assert recorder.kinds() == [EventKind.RELOADED, EventKind.RELOADED]
    (record,) = [r for r in caplog.records if getattr(r, "kind", None) == "RELOAD"]
    assert record.getMessage() == "reload hook 'broken' failed"
    assert (record.name, record.levelno) == ("trio_supervise", logging.ERROR)
    assert record.exc_info is not None
    assert record.exc_info[1] is error
    assert tree.shutdown_report is not None
    assert tree.shutdown_report.reason == "body ended"


async def test_add_reload_hook_validation(autojump_clock: trio.testing.MockClock) -> None:
    async with supervisor_tree(app(), reload_hooks={"config": nothing}) as tree:
        with pytest.raises(
            SpecError, match=r"^reload hook: name must be a non-empty string \(got ''\)$"
        ):
            tree.add_reload_hook("", nothing)
        with pytest.raises(
            SpecError, match=r"^reload hook: name must be a non-empty string \(got 5\)$"
        ):
            tree.add_reload_hook(5, nothing)  # type: ignore[arg-type]
        with pytest.raises(
            SpecError,
            match=r"^reload hook 'config': the name is taken; give each hook its own name$",
        ):
            tree.add_reload_hook("config", nothing)
        with pytest.raises(
            SpecError,
            match=r"^reload hook 'tls': fn must be an async function \(async def\) that is"
            r" called anew on every start \(got function 'not_async'\)",
        ):
            tree.add_reload_hook("tls", not_async)  # type: ignore[arg-type]
        coroutine = nothing()
        with pytest.raises(
            SpecError, match=r"^reload hook 'tls': fn must be an async function, not a coroutine"
        ):
            tree.add_reload_hook("tls", coroutine)  # type: ignore[arg-type]
        # None of them was added.
        assert await tree.reload() == {"config": None}


@pytest.mark.parametrize(
    ("reload_hooks", "message"),
    [
        ({"": nothing}, r"^reload hook: name must be a non-empty string \(got ''\)$"),
        ({7: nothing}, r"^reload hook: name must be a non-empty string \(got 7\)$"),
        ({"x": not_async}, r"^reload hook 'x': fn must be an async function \(async def\)"),
    ],
)
async def test_bad_reload_hooks_fail_before_anything_starts(
    reload_hooks: dict[object, object], message: str
) -> None:
    started: list[str] = []

    async def worker() -> None:
        started.append("worker")  # pragma: no cover

    with pytest.raises(SpecError, match=message):
        async with supervisor_tree(
            SupervisorSpec("app", [ChildSpec("w", worker)]),
            reload_hooks=reload_hooks,  # type: ignore[arg-type]
        ):
            pass  # pragma: no cover
    assert started == []


# ------------------------------------------------------------ a start cut short by a shutdown


async def test_a_shutdown_during_the_start_enters_the_body_already_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # An async with block cannot be skipped without raising; like a cancelled nursery, the
    # body is entered with its scope cancelled and ends at its first checkpoint.
    body_ran = False

    async def slow(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        current_tree().shutdown("stop during the start")
        await trio.sleep(5)
        task_status.started()  # pragma: no cover
        await trio.sleep_forever()  # pragma: no cover

    spec = SupervisorSpec("app", [ChildSpec("a", sleeper()), ChildSpec("slow", slow)])
    async with supervisor_tree(spec) as tree:
        assert tree.shutting_down
        await trio.lowlevel.checkpoint()
        body_ran = True  # pragma: no cover
    assert [(e.kind, e.path) for e in tree.history][:3] == [
        (EventKind.STARTED, "a"),
        (EventKind.TERMINATED, "slow"),
        (EventKind.TERMINATED, "a"),
    ]
    assert trio.current_time() == 0.0
    assert not body_ran


async def test_shutdown_reason(autojump_clock: trio.testing.MockClock) -> None:
    async with supervisor_tree(SupervisorSpec("app", [ChildSpec("a", sleeper())])) as tree:
        assert tree.shutdown_reason is None
        tree.shutdown("deploy")
        assert tree.shutdown_reason == "deploy"
        await trio.sleep_forever()
    assert tree.shutdown_reason == "deploy"


async def test_a_terminated_child_is_stopped_when_its_event_arrives(
    autojump_clock: trio.testing.MockClock,
) -> None:
    states: list[tuple[EventKind, ChildState]] = []
    async with supervisor_tree(SupervisorSpec("app", [ChildSpec("a", sleeper())])) as tree:
        tree.add_event_listener(lambda e: states.append((e.kind, tree.info("a").state)))
        await tree.terminate_child("a")
    assert states[0] == (EventKind.TERMINATED, ChildState.STOPPED)


async def test_a_finished_tree_is_freed_by_reference_counting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A reference cycle through the tree (its own shutdown step, a task's context) would
    # leave every finished tree to the cyclic GC, whose pauses then land in later work.
    async def flush() -> None:
        await trio.sleep(1)

    hooks = [ShutdownHook("flush", flush, priority=Band.FLUSH)]
    gc.disable()
    try:
        async with supervisor_tree(app(), hooks=hooks) as tree:
            await tree.restart_child("web")
        assert tree.shutdown_report is not None
        assert tree.shutdown_report.ok
        freed = weakref.ref(tree)
        del tree
        assert freed() is None
    finally:
        gc.enable()


async def test_delete_child_during_a_group_stop_waits_for_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Before the fix the handle removed "t" at once, the group stop removed it again, and
    # the root died of a bare ExceptionGroup around ValueError: list.remove(x).
    spec = SupervisorSpec(
        "app",
        [
            ChildSpec("x", slow_stop(2.0)),
            ChildSpec("t", sleeper(), restart=Restart.TEMPORARY),
            ChildSpec("s", sleeper()),
            ChildSpec("a", crash_after(1.0)),
        ],
        strategy=Strategy.ONE_FOR_ALL,
        backoff=None,
    )
    async with supervisor_tree(spec) as tree:
        await tree.terminate_child("s")
        await trio.sleep(1.5)  # "a" crashed at 1; "t" is stopped; "x" stops until 3
        with pytest.raises(SupervisionError, match=r"^cannot delete 't': it is restarting;"):
            tree.delete_child("t")
        tree.delete_child("s")  # stopped, but its supervisor is busy: queued behind the stop
        assert [c.name for c in tree.children()] == ["x", "t", "s", "a"]
        await trio.sleep(2)
        assert [c.name for c in tree.children()] == ["x", "a"]
        assert tree.info("x").state is ChildState.RUNNING
    removed = [(e.path, e.detail) for e in tree.history if e.kind is EventKind.REMOVED]
    assert removed == [
        ("t", "temporary child stopped by one_for_all restart after 'a' exited"),
        ("s", "delete_child"),
    ]


async def traced_steps(run: Callable[[], Awaitable[None]]) -> int:
    """Count the Python lines and calls that ``await run()`` executes: its work, not time."""
    steps = 0

    def tracer(frame: types.FrameType, event: str, arg: object) -> Any:
        nonlocal steps
        steps += 1
        return tracer

    # The cyclic collector would run other tests' finalizers (a Popen's __del__) inside.
    gc.collect()
    gc.disable()
    sys.settrace(tracer)
    try:
        await run()
    finally:
        sys.settrace(None)
        gc.enable()
    return steps


@pytest.mark.parametrize("call", ["start_child", "terminate_child"])
async def test_a_tree_call_does_the_same_work_at_any_size(
    autojump_clock: trio.testing.MockClock, call: str
) -> None:
    # Before the fix each call walked the children: its cost grew with the tree (181 µs at
    # 1,000 children, 709 at 16,000). Counted in executed lines, so the test is exact; the
    # time per call is benchmarks/bench_core.py's to measure.
    steps: dict[int, int] = {}
    for size in (100, 1_000):
        async with supervisor_tree(SupervisorSpec("pool", [], backoff=None)) as tree:
            for i in range(size):
                await tree.start_child(ChildSpec(f"c{i}", sleeper()))
            await tree.start_child(ChildSpec("probe-warm", sleeper()))
            await tree.terminate_child("probe-warm")

            async def one_call() -> None:
                if call == "start_child":
                    await tree.start_child(ChildSpec("probe", sleeper()))
                else:
                    await tree.terminate_child("c50")

            steps[size] = await traced_steps(one_call)
    assert steps[1_000] == steps[100]


async def test_cancelling_a_terminate_child_call_leaves_the_stop_to_its_supervisor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The caller of an idle supervisor's terminate_child does the asking itself; the exit
    # completes the call. Cancelling the caller must not cut the stop short, lose its
    # STOP_TIMEOUT, or let the supervisor take other calls before the child has exited.
    spec = SupervisorSpec("app", [ChildSpec("w", slow_stop(3.0), shutdown_timeout=1.0)])
    async with supervisor_tree(spec) as tree:
        await trio.sleep(1)
        with trio.move_on_after(0.5):
            await tree.terminate_child("w")
        assert trio.current_time() == 1.5
        assert tree.info("w").state is ChildState.STOPPING
        info = await tree.start_child(ChildSpec("late", sleeper()))  # waits for the stop
        assert trio.current_time() == 4.0
        assert info.started_at == 4.0
        assert tree.info("w").state is ChildState.STOPPED
        assert tree.unstopped() == []
    events = [(e.kind, e.path, e.time) for e in tree.history if e.path in ("w", "late")]
    assert events[1:4] == [
        (EventKind.STOP_TIMEOUT, "w", 2.0),
        (EventKind.TERMINATED, "w", 4.0),
        (EventKind.STARTED, "late", 4.0),
    ]


async def test_concurrent_calls_are_taken_one_at_a_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spec = SupervisorSpec("app", [ChildSpec("a", slow_stop(1)), ChildSpec("b", slow_stop(2))])
    async with supervisor_tree(spec) as tree:
        async with trio.open_nursery() as calls:
            calls.start_soon(tree.terminate_child, "a")
            calls.start_soon(tree.terminate_child, "b")
            calls.start_soon(tree.start_child, ChildSpec("c", sleeper()))
        started = tree.info("c").started_at
    # One call at a time, whichever order Trio ran the callers in: the stops never
    # overlap, and the start came before, between or after them, never during one.
    stopped = [(e.path, e.time) for e in tree.history if e.kind is EventKind.TERMINATED]
    first, second = stopped[:2]  # then the shutdown stopped c
    assert {first[0], second[0]} == {"a", "b"}
    assert second[1] - first[1] == {"a": 1.0, "b": 2.0}[second[0]]
    assert started in (0.0, first[1], second[1])
    assert [(c.name, c.state) for c in tree.children()] == [
        ("a", ChildState.STOPPED),
        ("b", ChildState.STOPPED),
        ("c", ChildState.STOPPED),
    ]
