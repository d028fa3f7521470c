"""Signals: ``_signals.py`` in process, then real signals to a real service.

The first part raises signals in the test process itself (``signal.raise_signal``) against
``HeldSignals`` and ``watch_signals`` with a fake tree. The rest is end to end, ``run()`` and
``supervisor_tree(handle_signals=True)``:

Each test starts ``python -c SCRIPT`` and reads its stdout and stderr as one stream of lines:
the script prints its progress (``ready``, ``hook stop``, every event as ``EVENT KIND path``)
and logs through ``logging`` as ``LOG LEVEL KIND message``. The test waits for those lines
before it sends the next signal; where a step must be held, the script waits for a line on
its stdin (or for it to close). Timeouts are fail-safes only.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial

import attrs
import pytest
import trio
import trio.testing

from trio_supervise import AutoShutdown, ChildSpec, Restart, SupervisorSpec, run
from trio_supervise import _run as run_module
from trio_supervise._signals import (
    HANDLED_SIGNALS,
    RELOAD_SIGNAL,
    STOP_SIGNALS,
    HeldSignals,
    SignalControls,
    watch_signals,
)
from trio_supervise.testing import return_after

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

#: Seconds any one step may take before the test gives up (a fail-safe, never a pace).
FAIL_SAFE = 15.0

# ------------------------------------------------------------ _signals.py, in process


def test_the_signal_sets() -> None:
    assert STOP_SIGNALS == (signal.SIGINT, signal.SIGTERM)
    assert RELOAD_SIGNAL is signal.SIGHUP
    assert HANDLED_SIGNALS == (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def handlers() -> dict[signal.Signals, object]:
    return {signum: signal.getsignal(signum) for signum in HANDLED_SIGNALS}


def test_held_signals_record_and_give_the_handlers_back() -> None:
    before = handlers()
    with HeldSignals() as held:
        signal.raise_signal(signal.SIGHUP)
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
    assert held.received == [signal.SIGHUP, signal.SIGINT, signal.SIGTERM]
    assert held.first_stop_signal() is signal.SIGINT
    assert handlers() == before


def test_a_reload_signal_is_no_stop_signal() -> None:
    with HeldSignals() as held:
        assert held.first_stop_signal() is None
        signal.raise_signal(signal.SIGHUP)
    assert held.received == [signal.SIGHUP]
    assert held.first_stop_signal() is None


def test_nested_holders_share_the_outer_record() -> None:
    before = handlers()
    with HeldSignals() as outer:
        signal.raise_signal(signal.SIGTERM)
        with HeldSignals() as inner:
            # What serve() sees inside run(): the signal that came before it was called.
            assert inner.first_stop_signal() is signal.SIGTERM
            signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGHUP)  # the outer holder's handler is back
        assert outer.received == [signal.SIGTERM, signal.SIGINT, signal.SIGHUP]
    assert inner.received is outer.received
    assert handlers() == before
    with HeldSignals() as later:  # a new outermost holder starts a new record
        assert later.received == []


@pytest.fixture
def restore_handlers() -> Iterator[dict[signal.Signals, object]]:
    before = handlers()
    yield before
    for signum, handler in before.items():
        signal.signal(signum, handler)  # type: ignore[arg-type]


def test_after_a_stop_signal_the_handled_signals_stay_ignored(
    restore_handlers: dict[signal.Signals, object],
) -> None:
    # run() and the CLI return the process's exit code: the rest of a signal storm must
    # not kill the exit that follows.
    with HeldSignals(ignore_after_stop=True):
        signal.raise_signal(signal.SIGTERM)
    assert set(handlers().values()) == {signal.SIG_IGN}


async def test_a_stop_signal_acted_on_by_the_watcher_counts_too(
    restore_handlers: dict[signal.Signals, object],
) -> None:
    with HeldSignals(ignore_after_stop=True):
        async with watching(FakeTree()):
            await deliver(signal.SIGTERM)
    assert set(handlers().values()) == {signal.SIG_IGN}


def test_without_a_stop_signal_the_handlers_come_back(
    restore_handlers: dict[signal.Signals, object],
) -> None:
    with HeldSignals(ignore_after_stop=True):
        signal.raise_signal(signal.SIGHUP)  # a reload is no stop
    assert handlers() == restore_handlers
    with HeldSignals():  # and without ignore_after_stop, always
        signal.raise_signal(signal.SIGTERM)
    assert handlers() == restore_handlers


def test_held_signals_outside_the_main_thread_change_nothing() -> None:
    seen: list[object] = []

    def in_thread() -> None:
        with HeldSignals() as held:
            seen.append(handlers())
            seen.append(list(held.received))

    before = handlers()
    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert seen == [before, []]
    assert handlers() == before


@attrs.define(eq=False)
class FakeTree:
    """What the watcher may call, recorded; a reload waits for ``release_reload``."""

    reload_hooks: bool = True
    stopping: bool = False
    calls: list[str] = attrs.field(factory=list)
    release_reload: trio.Event = attrs.field(factory=trio.Event)

    def controls(self) -> SignalControls:
        return SignalControls(
            shutting_down=lambda: self.stopping,
            shutdown=self._shutdown,
            force_shutdown=lambda reason: self.calls.append(f"force: {reason}"),
            has_reload_hooks=lambda: self.reload_hooks,
            reload=self._reload,
        )

    def _shutdown(self, reason: str) -> None:
        self.calls.append(f"shutdown: {reason}")
        self.stopping = True

    async def _reload(self) -> None:
        self.calls.append("reload")
        await self.release_reload.wait()
        self.release_reload = trio.Event()
        self.calls.append("reloaded")


@asynccontextmanager
async def watching(fake: FakeTree) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(watch_signals, fake.controls()))
        yield
        nursery.cancel_scope.cancel()


async def deliver(signum: signal.Signals) -> None:
    signal.raise_signal(signum)
    await trio.testing.wait_all_tasks_blocked()


def signal_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if getattr(r, "kind", "") == "SIGNAL"]


async def test_the_watcher_shuts_down_then_forces_then_drops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="trio_supervise")
    fake = FakeTree()
    async with watching(fake):
        await deliver(signal.SIGTERM)
        assert fake.calls == ["shutdown: signal SIGTERM"]
        await deliver(signal.SIGINT)
        await deliver(signal.SIGTERM)
        await deliver(signal.SIGINT)
    assert fake.calls == ["shutdown: signal SIGTERM", "force: second signal SIGINT"]
    assert signal_logs(caplog) == [
        "received SIGTERM: shutting down (send it again to force)",
        "received SIGINT again: forcing the shutdown",
        "received SIGTERM after the forced shutdown: dropped",
        "received SIGINT after the forced shutdown: dropped",
    ]
    dropped = [r for r in caplog.records if r.getMessage().endswith(": dropped")]
    assert {r.levelno for r in dropped} == {logging.DEBUG}


async def test_a_stop_signal_after_another_shutdown_forces_it() -> None:
    fake = FakeTree(stopping=True)  # tree.shutdown() came first
    async with watching(fake):
        await deliver(signal.SIGINT)
    assert fake.calls == ["force: second signal SIGINT"]


async def test_the_watcher_runs_one_reload_at_a_time_and_coalesces_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_supervise")
    fake = FakeTree()
    async with watching(fake):
        await deliver(signal.SIGHUP)
        assert fake.calls == ["reload"]
        await deliver(signal.SIGHUP)
        await deliver(signal.SIGHUP)
        assert fake.calls == ["reload"]
        fake.release_reload.set()
        await trio.testing.wait_all_tasks_blocked()
        assert fake.calls == ["reload", "reloaded", "reload"]
        fake.release_reload.set()
        await trio.testing.wait_all_tasks_blocked()
    assert fake.calls == ["reload", "reloaded", "reload", "reloaded"]
    assert signal_logs(caplog) == ["received SIGHUP: reloading"] * 3


async def test_the_watcher_ignores_sighup_without_hooks_and_during_the_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_supervise")
    fake = FakeTree(reload_hooks=False)
    async with watching(fake):
        await deliver(signal.SIGHUP)
        fake.reload_hooks = True
        fake.stopping = True
        await deliver(signal.SIGHUP)
    assert fake.calls == []
    assert signal_logs(caplog) == [
        "received SIGHUP: no reload hooks registered; ignored",
        "received SIGHUP during the shutdown: ignored",
    ]


async def test_the_watcher_gives_the_handlers_back() -> None:
    before = handlers()
    async with watching(FakeTree()):
        assert handlers() != before
    assert handlers() == before


# ------------------------------------------------------------------ end to end

PRELUDE = textwrap.dedent(
    """
    import logging, sys, time
    import trio
    import trio_supervise
    from trio_supervise import (
        Band, ChildSpec, ShutdownHook, SupervisorSpec, current_tree, supervisor_tree
    )
    from trio_supervise._run import serve_with_grace

    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(
        logging.Formatter("LOG %(levelname)s %(kind)s %(message)s", defaults={"kind": "-"})
    )
    logging.basicConfig(level=logging.INFO, handlers=[_handler])


    def say(*parts):
        print(*parts, flush=True)


    def show(event):
        say("EVENT", event.kind.name, event.path or "(root)")


    async def ready(task_status=trio.TASK_STATUS_IGNORED):
        # Put it last: once it prints "ready", every child has started.
        current_tree().add_event_listener(show)
        task_status.started()
        say("ready")
        await trio.sleep_forever()


    def hook(name, priority):
        async def fn():
            say("hook", name)

        return ShutdownHook(name, fn, priority=priority)


    async def read_line():
        # The test writes a line, or closes stdin, to let the script go on.
        return await trio.to_thread.run_sync(sys.stdin.readline)


    def main(spec, **kwargs):
        code = trio_supervise.run(spec, **kwargs)
        say("run returned", code)
        sys.exit(code)
    """
)


class Service:
    """A script running in a subprocess, and the lines it has printed so far."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._partial = b""
        self._ended = False

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def send(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    async def _read(self) -> bool:
        """Read some output into ``lines``; False at the end of the output."""
        if self._ended:
            return False
        assert self.process.stdout is not None
        data = await self.process.stdout.receive_some()
        if not data:
            self._ended = True
            if self._partial:
                self.lines.append(self._partial.decode())
            return False
        *complete, self._partial = (self._partial + data).split(b"\n")
        self.lines.extend(line.decode() for line in complete)
        return True

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    async def expect(self, text: str, count: int = 1) -> None:
        """Read until ``count`` lines in all contain ``text``."""
        with trio.move_on_after(FAIL_SAFE) as fail_safe:
            while self.count(text) < count:
                if not await self._read():
                    raise AssertionError(
                        f"the output ended before {count} line(s) with {text!r}:\n{self.output}"
                    )
        if fail_safe.cancelled_caught:
            raise AssertionError(f"no {count} line(s) with {text!r} in time:\n{self.output}")

    async def release(self) -> None:
        """Close the script's stdin: its ``read_line()`` returns."""
        assert self.process.stdin is not None
        await self.process.stdin.aclose()

    async def write_line(self) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(b"\n")

    async def finish(self) -> int:
        """Read the rest of the output and return the exit code."""
        with trio.move_on_after(FAIL_SAFE) as fail_safe:
            while await self._read():
                pass
            return await self.process.wait()
        assert fail_safe.cancelled_caught
        raise AssertionError(f"the process did not exit in time:\n{self.output}")


@asynccontextmanager
async def service(body: str) -> AsyncIterator[Service]:
    """Run ``PRELUDE`` + ``body`` in a subprocess; kill it if it still runs at the end."""
    script = PRELUDE + textwrap.dedent(body)
    # Not under the test runner's systemd unit, if any: run() would talk to it.
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield Service(process)
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    await stream.aclose()


_REPORT_ROW = re.compile(r"^\s+(\d+)\s+(\S+)\s+(ok|error|timed_out|cancelled|skipped)\s+[\d.]+")


def report(svc: Service) -> tuple[str, dict[str, str]]:
    """The logged shutdown report: its first line, and each hook's status."""
    (start,) = [i for i, line in enumerate(svc.lines) if " SHUTDOWN_REPORT " in line]
    statuses: dict[str, str] = {}
    for line in svc.lines[start + 2 :]:
        row = _REPORT_ROW.match(line)
        if row is None:
            break
        statuses[row[2]] = row[3]
    return svc.lines[start].split(" SHUTDOWN_REPORT ", 1)[1], statuses


def progress(svc: Service) -> list[str]:
    """The hook and event lines but ``STARTED`` ones, in order."""
    return [
        line
        for line in svc.lines
        if line.startswith(("hook ", "EVENT ")) and not line.startswith("EVENT STARTED ")
    ]


# ------------------------------------------------------------------------- a clean stop

GRACEFUL = """
hooks = [
    hook("close", Band.CLOSE),
    hook("stop-accepting", Band.STOP_ACCEPTING),
    hook("cleanup", Band.CLEANUP),
    hook("flush", Band.FLUSH),
]
spec = SupervisorSpec(
    "app", [ChildSpec("worker", trio.sleep_forever), ChildSpec("ready", ready)]
)
main(spec, hooks=hooks)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_runs_the_shutdown_band_by_band_and_exits_0(
    signum: signal.Signals,
) -> None:
    async with service(GRACEFUL) as svc:
        await svc.expect("ready")
        svc.send(signum)
        code = await svc.finish()
    assert code == 0, svc.output
    assert progress(svc) == [
        "EVENT SHUTDOWN_STARTED (root)",
        "hook stop-accepting",
        "EVENT HOOK_FINISHED stop-accepting",
        # Band DRAIN: the built-in "supervisor" hook stops the children in reverse order.
        "EVENT TERMINATED ready",
        "EVENT TERMINATED worker",
        "EVENT HOOK_FINISHED supervisor",
        "hook flush",
        "EVENT HOOK_FINISHED flush",
        "hook close",
        "EVENT HOOK_FINISHED close",
        "hook cleanup",
        "EVENT HOOK_FINISHED cleanup",
        "EVENT SHUTDOWN_FINISHED (root)",
    ]
    name = signum.name
    assert svc.count(f"LOG WARNING SIGNAL received {name}: shutting down (send it again") == 1
    header, statuses = report(svc)
    assert re.fullmatch(rf"shutdown \(signal {name}\) took [\d.]+s", header), header
    assert statuses == dict.fromkeys(
        ["stop-accepting", "supervisor", "flush", "close", "cleanup"], "ok"
    )
    assert svc.lines[-1] == "run returned 0"
    assert "Traceback" not in svc.output


# ---------------------------------------------------------------------- a forced stop

FORCED = """
async def slow():
    say("hook slow started")
    try:
        await trio.sleep(60)
    except trio.Cancelled:
        say("hook slow cancelled")
        raise

hooks = [ShutdownHook("slow", slow, priority=Band.STOP_ACCEPTING), hook("flush", Band.FLUSH)]
main(SupervisorSpec("app", [ChildSpec("ready", ready)]), hooks=hooks)
"""


@pytest.mark.parametrize(
    ("first", "second"),
    [(signal.SIGTERM, signal.SIGTERM), (signal.SIGTERM, signal.SIGINT)],
)
async def test_a_second_signal_during_a_slow_hook_forces_the_shutdown(
    first: signal.Signals, second: signal.Signals
) -> None:
    async with service(FORCED) as svc:
        await svc.expect("ready")
        svc.send(first)
        await svc.expect("hook slow started")
        svc.send(second)
        code = await svc.finish()
    assert code == 1, svc.output
    assert svc.count(f"LOG WARNING SIGNAL received {second.name} again: forcing the shutdown") == 1
    assert "hook slow cancelled" in svc.lines
    assert "hook flush" not in svc.lines
    header, statuses = report(svc)
    assert re.fullmatch(rf"shutdown \(signal {first.name}\) took [\d.]+s, forced", header)
    # Cancelled where it was; the later bands (the children's stop too) never ran.
    assert statuses == {"slow": "cancelled", "supervisor": "skipped", "flush": "skipped"}
    assert svc.count("EVENT SHUTDOWN_STARTED") == 1
    assert svc.lines[-1] == "run returned 1"
    assert "Traceback" not in svc.output


# ------------------------------------------------------------------ a signal at start-up

SLOW_START = """
async def first():
    current_tree().add_event_listener(show)
    await trio.sleep_forever()

async def slow_start(task_status=trio.TASK_STATUS_IGNORED):
    say("starting")
    await trio.sleep(60)
    task_status.started()
    say("started")
    await trio.sleep_forever()

spec = SupervisorSpec("app", [ChildSpec("first", first), ChildSpec("slow", slow_start)])
"""


async def test_a_signal_during_the_start_stops_cleanly() -> None:
    async with service(SLOW_START + "main(spec)\n") as svc:
        await svc.expect("starting")
        svc.send(signal.SIGTERM)
        code = await svc.finish()
    # run(): 0 after a graceful shutdown whose hooks all finished ok.
    assert code == 0, svc.output
    assert "started" not in svc.lines
    assert svc.count("LOG WARNING SIGNAL received SIGTERM: shutting down") == 1
    # The start is cut short: the starting child is stopped, then the started one (the
    # root supervisor does that by itself, alongside the beginning of the shutdown).
    stops = [line for line in progress(svc) if line.startswith("EVENT TERMINATED")]
    assert stops == ["EVENT TERMINATED slow", "EVENT TERMINATED first"]
    assert [line for line in progress(svc) if line not in stops] == [
        "EVENT SHUTDOWN_STARTED (root)",
        "EVENT HOOK_FINISHED supervisor",
        "EVENT SHUTDOWN_FINISHED (root)",
    ]
    assert progress(svc).index("EVENT TERMINATED first") < progress(svc).index(
        "EVENT HOOK_FINISHED supervisor"
    )
    header, statuses = report(svc)
    assert header.startswith("shutdown (signal SIGTERM) took ")
    assert statuses == {"supervisor": "ok"}
    assert svc.lines[-1] == "run returned 0"
    assert "Traceback" not in svc.output


async def test_a_signal_during_the_start_enters_the_body_already_cancelled() -> None:
    body = """
    async def main_task():
        async with supervisor_tree(spec, handle_signals=True) as tree:
            say("body entered, shutting down:", tree.shutting_down)
            await trio.sleep_forever()
            say("body went on")
        say("tree exited", tree.shutdown_report.ok)

    trio.run(main_task)
    """
    async with service(SLOW_START + textwrap.dedent(body)) as svc:
        await svc.expect("starting")
        svc.send(signal.SIGTERM)
        code = await svc.finish()
    assert code == 0, svc.output
    assert svc.lines[-1] == "tree exited True"
    assert "body entered, shutting down: True" in svc.lines
    assert "body went on" not in svc.lines


# -------------------------------------------------------------------------- a storm

STORM = """
async def held():
    say("hook held started")
    # Shielded: the shutdown stays in this band until the test lets it go.
    with trio.CancelScope(shield=True):
        await read_line()
    say("hook held released")

hooks = [ShutdownHook("held", held, priority=Band.STOP_ACCEPTING), hook("flush", Band.FLUSH)]
main(SupervisorSpec("app", [ChildSpec("ready", ready)]), hooks=hooks)
"""


async def test_a_storm_of_signals_yields_one_shutdown() -> None:
    async with service(STORM) as svc:
        await svc.expect("ready")
        svc.send(signal.SIGTERM)
        await svc.expect("hook held started")
        for i in range(19):
            svc.send(signal.SIGINT if i % 2 == 0 else signal.SIGTERM)
        # SIGHUP is logged even during the shutdown. The storm was sent before the first
        # one, so it has been taken in by then; the second one is handled after it.
        ignored = "received SIGHUP during the shutdown: ignored"
        svc.send(signal.SIGHUP)
        await svc.expect(ignored)
        svc.send(signal.SIGHUP)
        await svc.expect(ignored, count=2)
        await svc.release()
        code = await svc.finish()
    assert code == 1, svc.output
    assert svc.count("shutting down (send it again to force)") == 1
    assert svc.count("forcing the shutdown") == 1
    assert svc.count("EVENT SHUTDOWN_STARTED") == 1
    assert svc.count("EVENT SHUTDOWN_FINISHED") == 1
    assert svc.count(" SHUTDOWN_REPORT ") == 1
    assert svc.count("hook held started") == 1
    assert "hook flush" not in svc.lines
    header, statuses = report(svc)
    assert header.endswith(", forced")
    # It shielded itself past the force, so it ended, but too late to count as "ok".
    assert statuses == {"held": "cancelled", "supervisor": "skipped", "flush": "skipped"}
    assert svc.lines[-1] == "run returned 1"
    assert "Traceback" not in svc.output


LATE = """
async def cleaning_up(task_status=trio.TASK_STATUS_IGNORED):
    task_status.started()
    say("ready")
    try:
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            say("cleaning up")
            await read_line()

async def slow():
    say("hook slow started")
    await trio.sleep(60)

spec = SupervisorSpec("app", [ChildSpec("w", cleaning_up, shutdown_timeout=None)])
main(spec, hooks=[ShutdownHook("slow", slow, priority=Band.STOP_ACCEPTING)])
"""


@pytest.mark.parametrize("third", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_after_a_forced_shutdown_does_not_crash_the_process(
    third: signal.Signals,
) -> None:
    async with service(LATE) as svc:
        await svc.expect("ready")
        svc.send(signal.SIGTERM)
        await svc.expect("hook slow started")
        svc.send(signal.SIGINT)
        # The shutdown has ended; a child's shielded clean-up still runs.
        await svc.expect("cleaning up")
        assert svc.count(" SHUTDOWN_REPORT ") == 1
        svc.send(third)
        await svc.release()
        code = await svc.finish()
    assert code == 1, svc.output
    assert svc.lines[-1] == "run returned 1"
    assert "Traceback" not in svc.output


# ------------------------------------------------------------------------------ SIGHUP

RELOAD = """
reloads = 0

async def reload_config():
    global reloads
    reloads += 1
    n = reloads
    say("reload", n, "started")
    await read_line()
    say("reload", n, "done")

async def broken():
    raise ValueError("bad configuration file")

async def ready_with_reload_hooks(task_status=trio.TASK_STATUS_IGNORED):
    current_tree().add_reload_hook("config", reload_config)
    current_tree().add_reload_hook("broken", broken)
    await ready(task_status=task_status)

main(SupervisorSpec("app", [ChildSpec("ready", ready_with_reload_hooks)]))
"""


async def test_sighup_runs_the_reload_hooks_and_the_service_keeps_running() -> None:
    reloading = "LOG INFO SIGNAL received SIGHUP: reloading"
    async with service(RELOAD) as svc:
        await svc.expect("ready")
        svc.send(signal.SIGHUP)
        await svc.expect("reload 1 started")
        # Two more during that reload: they make one more reload after it, not two.
        svc.send(signal.SIGHUP)
        await svc.expect(reloading, count=2)
        svc.send(signal.SIGHUP)
        await svc.expect(reloading, count=3)
        await svc.write_line()
        await svc.expect("reload 1 done")
        await svc.expect("reload 2 started")
        await svc.write_line()
        await svc.expect("reload 2 done")
        await svc.expect("EVENT RELOADED config", count=2)
        svc.send(signal.SIGTERM)
        code = await svc.finish()
    assert code == 0, svc.output
    assert svc.count("reload 3") == 0
    # A failing hook is logged each time and the service goes on.
    assert svc.count("LOG ERROR RELOAD reload hook 'broken' failed") == 2
    assert svc.count("ValueError: bad configuration file") == 2
    assert svc.count("EVENT RELOADED broken") == 2
    assert progress(svc)[-4:] == [
        "EVENT SHUTDOWN_STARTED (root)",
        "EVENT TERMINATED ready",
        "EVENT HOOK_FINISHED supervisor",
        "EVENT SHUTDOWN_FINISHED (root)",
    ]
    header, _ = report(svc)
    assert header.startswith("shutdown (signal SIGTERM) took ")
    assert svc.lines[-1] == "run returned 0"


async def test_sighup_without_reload_hooks_is_logged_and_ignored() -> None:
    body = """main(SupervisorSpec("app", [ChildSpec("ready", ready)]))\n"""
    async with service(body) as svc:
        await svc.expect("ready")
        svc.send(signal.SIGHUP)
        await svc.expect("LOG INFO SIGNAL received SIGHUP: no reload hooks registered; ignored")
        svc.send(signal.SIGHUP)
        await svc.expect("no reload hooks registered; ignored", count=2)
        svc.send(signal.SIGTERM)
        code = await svc.finish()
    assert code == 0, svc.output
    assert svc.count("EVENT RELOADED") == 0
    # It was still running: the shutdown came from SIGTERM and stopped the child.
    assert progress(svc) == [
        "EVENT SHUTDOWN_STARTED (root)",
        "EVENT TERMINATED ready",
        "EVENT HOOK_FINISHED supervisor",
        "EVENT SHUTDOWN_FINISHED (root)",
    ]
    assert report(svc)[0].startswith("shutdown (signal SIGTERM) took ")
    assert svc.lines[-1] == "run returned 0"
    assert "Traceback" not in svc.output


# ---------------------------------------------------------------------- the hard exit

DEADLINE, GRACE = 0.4, 0.3


async def test_a_nested_child_that_never_stops_gets_a_hard_exit_on_time() -> None:
    body = f"""
    async def stubborn():
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                say("stubborn refuses to stop")
                await trio.sleep(60)

    spec = SupervisorSpec(
        "app",
        [
            SupervisorSpec("workers", [ChildSpec("stubborn", stubborn, shutdown_timeout=0.1)]),
            ChildSpec("ready", ready),
        ],
    )
    # run() and serve() take no grace: serve_with_grace() is what they run.
    code = trio.run(lambda: serve_with_grace(spec, shutdown_deadline={DEADLINE}, grace={GRACE}))
    say("run returned", code)
    """
    async with service(body) as svc:
        await svc.expect("ready")
        sent = trio.current_time()
        svc.send(signal.SIGTERM)
        code = await svc.finish()
        elapsed = trio.current_time() - sent
    assert code == 137, svc.output
    assert elapsed >= DEADLINE + GRACE
    assert "stubborn refuses to stop" in svc.lines
    assert "EVENT STOP_TIMEOUT workers/stubborn" in svc.lines
    header, statuses = report(svc)
    assert header.endswith(", deadline exceeded")
    assert statuses == {"supervisor": "cancelled"}
    assert svc.lines[-1] == (
        "LOG CRITICAL HARD_EXIT shutdown overran its deadline and grace; children still"
        " running: workers/stubborn; exiting hard"
    )
    assert not any(line.startswith("run returned") for line in svc.lines)


async def test_a_child_that_blocks_the_event_loop_gets_a_hard_exit() -> None:
    body = f"""
    async def blocker():
        try:
            await trio.sleep_forever()
        finally:
            say("blocking the event loop")
            time.sleep(30)  # nothing else runs: not the deadline, not the report

    spec = SupervisorSpec("app", [ChildSpec("blocker", blocker), ChildSpec("ready", ready)])
    code = trio.run(lambda: serve_with_grace(spec, shutdown_deadline={DEADLINE}, grace={GRACE}))
    say("run returned", code)
    """
    async with service(body) as svc:
        await svc.expect("ready")
        sent = trio.current_time()
        svc.send(signal.SIGTERM)
        code = await svc.finish()
        elapsed = trio.current_time() - sent
    # The hard exit comes from a thread, on time although the event loop is stuck.
    assert code == 137, svc.output
    assert DEADLINE + GRACE <= elapsed < 30
    assert "blocking the event loop" in svc.lines
    assert svc.count(" SHUTDOWN_REPORT ") == 0
    assert svc.lines[-1] == (
        "LOG CRITICAL HARD_EXIT shutdown overran its deadline and grace; children still"
        " running: blocker; exiting hard"
    )


def test_run_uses_hard_exit_grace_as_set_when_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    intervals: list[float] = []

    def record(timer: object, seconds: float, tree: object) -> None:
        """Stands in for arming the hard-exit thread: records the interval, never fires."""
        intervals.append(seconds)

    monkeypatch.setattr(run_module, "HARD_EXIT_GRACE", 0.25)
    monkeypatch.setattr(run_module._HardExitTimer, "arm", record)
    spec = SupervisorSpec(
        "app",
        [ChildSpec("job", return_after(0.0), restart=Restart.TRANSIENT, significant=True)],
        auto_shutdown=AutoShutdown.ANY_SIGNIFICANT,
    )
    assert run(spec, shutdown_deadline=1.0) == 0
    assert intervals == [1.25]
