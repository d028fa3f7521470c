"""``run()`` and its async twin ``serve()``: exit codes, signals, the hard exit."""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
import trio
import trio.testing
from processes import signal_storm

from trio_supervise import (
    AutoShutdown,
    Band,
    ChildSpec,
    ChildState,
    Restart,
    ShutdownHook,
    SupervisorSpec,
    SupervisorTree,
    current_tree,
    run,
    serve,
)
from trio_supervise._signals import HANDLED_SIGNALS, HeldSignals
from trio_supervise.testing import FakeCrash, crash_after, return_after, sleeper


@pytest.fixture(autouse=True)
def no_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    # serve() notifies systemd when the tests themselves run under it.
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)


def finishing(after: float) -> SupervisorSpec:
    return SupervisorSpec(
        "app",
        [ChildSpec("job", return_after(after), restart=Restart.TRANSIENT, significant=True)],
        auto_shutdown=AutoShutdown.ANY_SIGNIFICANT,
    )


async def test_graceful_end_exits_0(autojump_clock: trio.testing.MockClock) -> None:
    assert await serve(finishing(2.0)) == 0
    assert trio.current_time() == pytest.approx(2.0)


async def test_the_hard_exit_thread_is_gone_once_serve_returns(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Started before the tree, armed when the shutdown starts, ended by serve's end.
    def hard_exit_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "trio_supervise hard exit"]

    assert hard_exit_threads() == []
    assert await serve(finishing(1.0)) == 0
    assert (
        await serve(SupervisorSpec("app", [ChildSpec("w", crash_after(1.0))], max_restarts=0)) == 1
    )
    assert hard_exit_threads() == []


async def test_failed_hook_exits_1(autojump_clock: trio.testing.MockClock) -> None:
    async def broken() -> None:
        raise FakeCrash("flush failed")

    hook = ShutdownHook("flush", broken, priority=20)
    assert await serve(finishing(1.0), hooks=[hook]) == 1


async def test_failed_tree_exits_1(autojump_clock: trio.testing.MockClock) -> None:
    spec = SupervisorSpec("app", [ChildSpec("w", crash_after(1.0))], max_restarts=0)
    assert await serve(spec) == 1


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_serve_acts_on_a_stop_signal_that_came_before_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    reasons: list[str | None] = []

    async def note_reason() -> None:
        reasons.append(current_tree().shutdown_reason)

    spec = SupervisorSpec("app", [ChildSpec("w", sleeper())])
    hook = ShutdownHook("note", note_reason, priority=Band.CLEANUP)
    with HeldSignals():  # as run() and the CLI hold them around trio.run
        signal.raise_signal(signal.SIGHUP)  # not a stop signal: no shutdown for it
        signal.raise_signal(signal.SIGTERM)
        assert await serve(spec, hooks=[hook]) == 0
    assert reasons == ["signal SIGTERM during the start"]
    assert trio.current_time() == 0.0


async def test_serve_gives_the_signal_handlers_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    before = {signum: signal.getsignal(signum) for signum in HANDLED_SIGNALS}
    assert await serve(finishing(1.0)) == 0
    assert {signum: signal.getsignal(signum) for signum in HANDLED_SIGNALS} == before


async def test_serve_outside_the_main_thread_says_to_call_it_from_there() -> None:
    def in_a_thread() -> int:
        return trio.run(serve, finishing(0.0))

    with pytest.raises(
        RuntimeError,
        match=(
            r"^trio_supervise\.serve\(\) and run\(\) handle signals, which Python allows only"
            r" in the main thread \(called from thread .+\); call them from the main"
            r" thread, or run supervisor_tree\(spec\) without handle_signals here$"
        ),
    ):
        await trio.to_thread.run_sync(in_a_thread)


def test_serve_takes_what_run_takes() -> None:
    assert inspect.signature(serve) == inspect.signature(run)


SCRIPT = textwrap.dedent(
    """
    import logging, sys, trio
    from trio_supervise import ChildSpec, SupervisorSpec
    from trio_supervise._run import serve_with_grace
    from trio_supervise.testing import refuse_stop, sleeper

    async def ready(task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        print("ready", flush=True)
        await trio.sleep_forever()

    logging.basicConfig(level=logging.WARNING)
    stubborn = sys.argv[1] == "stubborn"
    children = [ChildSpec("ready", ready)]
    if stubborn:  # first: once "ready" printed, it has run its first step (§2)
        children.insert(0, ChildSpec("stubborn", refuse_stop(), shutdown_timeout=0.2))
    spec = SupervisorSpec("app", children)
    sys.exit(trio.run(lambda: serve_with_grace(spec, shutdown_deadline=0.5, grace=0.5)))
    """
)


def start(mode: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    # Children start in order: "ready" printing means the handlers are installed.
    assert process.stdout.readline() == "ready\n"
    return process


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_with_0(signum: signal.Signals) -> None:
    process = start("polite")
    try:
        process.send_signal(signum)
        process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_child_that_refuses_to_stop_gets_a_hard_exit() -> None:
    process = start("stubborn")
    try:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 137
    assert "children still running: stubborn; exiting hard" in err


STORM_SCRIPT = textwrap.dedent(
    """
    import sys, trio
    from trio_supervise import ChildSpec, SupervisorSpec, run

    async def ready(task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        print("ready", flush=True)
        await trio.sleep_forever()

    sys.exit(run(SupervisorSpec("app", [ChildSpec("ready", ready)])))
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("attempt", range(3))
def test_a_storm_of_sigterms_is_one_shutdown_and_exit_0(attempt: int) -> None:
    # 20 SIGTERMs 10 ms apart: before the fix the ones after run() returned found the
    # default handler back, and the process died of SIGTERM (143) in 5 of 5 runs.
    process = subprocess.Popen(
        [sys.executable, "-c", STORM_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n"
        signal_storm(process)
        process.wait(timeout=30)
    finally:
        process.kill()
        process.communicate()
    assert process.returncode == 0


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_serve_takes_reload_hooks_and_hands_the_tree_to_on_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Issue 10, item 12: run() could neither take reload hooks nor reach the tree, so
    # metrics.attach(tree) needed a helper child.
    seen: list[object] = []
    reloads: list[float] = []

    async def reread() -> None:
        reloads.append(trio.current_time())

    def started(tree: SupervisorTree) -> None:
        seen.append(tree.info("job").state)
        signal.raise_signal(signal.SIGHUP)  # the tree's handlers are in place: a reload

    code = await serve(finishing(2.0), reload_hooks={"config": reread}, on_start=started)
    assert code == 0
    assert seen == [ChildState.RUNNING]
    assert reloads == [0.0]


async def test_on_start_must_be_a_plain_function() -> None:
    async def attach(tree: SupervisorTree) -> None:
        pass

    with pytest.raises(TypeError, match=r"^serve\(\): on_start must be a plain function"):
        await serve(finishing(1.0), on_start=attach)
