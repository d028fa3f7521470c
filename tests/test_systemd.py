"""systemd notifications: sd_notify messages, their order and timing, read from a real socket."""

from __future__ import annotations

import logging
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import final

import attrs
import pytest
import trio
import trio.testing

from trio_supervise import (
    Backoff,
    ChildHealth,
    ChildSpec,
    ChildState,
    Event,
    HealthReport,
    HealthStatus,
    RestartIntensityExceeded,
    SupervisorSpec,
    SystemdNotifier,
    current_tree,
    supervisor_tree,
)
from trio_supervise._systemd import (
    MAX_MESSAGE_BYTES,
    MAX_STATUS_CHARS,
    SEND_TIMEOUT,
    STATUS_SETTLE,
    TreeNotifications,
)
from trio_supervise.testing import FakeCrash, crash_after, sleeper, slow_start, slow_stop

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="AF_UNIX sockets")

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="abstract sockets and errno texts of Linux"
)

READY_2 = "READY=1\nSTATUS=running: 2 children"
PING = "WATCHDOG=1"


@final
@attrs.define(eq=False)
class Receiver:
    """The service manager's end: a bound datagram socket and what arrived, with the time."""

    sock: socket.socket
    messages: list[tuple[float, str]] = attrs.field(factory=list)

    @classmethod
    def bind(cls, address: str) -> Receiver:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(address)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    def drain(self) -> None:
        """Take every datagram waiting now, stamped with the (virtual) time."""
        while True:
            try:
                data = self.sock.recv(2 * MAX_MESSAGE_BYTES)
            except BlockingIOError:
                return
            self.messages.append((trio.current_time(), data.decode()))

    async def collect(self) -> None:
        # The run loop polls for I/O before the autojump clock moves, so a datagram is
        # stamped with the virtual time it was sent at.
        while True:
            await trio.lowlevel.wait_readable(self.sock)
            self.drain()

    @property
    def texts(self) -> list[str]:
        return [text for _, text in self.messages]


@asynccontextmanager
async def collecting(receiver: Receiver) -> AsyncIterator[None]:
    """Record datagrams as they arrive while the block runs; take the rest at its end."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver.collect)
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()
    receiver.drain()


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tests may themselves run under systemd.
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def notify_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A short directory: a unix socket path holds at most 107 bytes.
    return tmp_path_factory.mktemp("sd") / "notify"


@pytest.fixture
def receiver(notify_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    bound = Receiver.bind(str(notify_path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_path))
    yield bound
    bound.sock.close()


@pytest.fixture
def systemd_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="trio_supervise")
    return caplog


def logged(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    """The level and text of each record logged about systemd."""
    return [
        (record.levelno, record.getMessage())
        for record in caplog.records
        if getattr(record, "kind", "") == "SYSTEMD"
    ]


def two_workers() -> SupervisorSpec:
    return SupervisorSpec("app", [ChildSpec("a", sleeper()), ChildSpec("b", sleeper())])


# ------------------------------------------------------------------ the tree's messages


async def test_ready_pings_stopping_in_order_at_exact_times(
    autojump_clock: trio.testing.MockClock,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    async with collecting(receiver), supervisor_tree(two_workers(), notify_systemd=True):
        await trio.sleep(3.5)
    assert receiver.messages == [
        (0.0, READY_2),
        (1.0, PING),
        (2.0, PING),
        (3.0, PING),
        (3.5, "STOPPING=1\nSTATUS=shutting down: body ended"),
    ]


async def test_ready_is_sent_before_the_body_runs(
    autojump_clock: trio.testing.MockClock, receiver: Receiver
) -> None:
    async with supervisor_tree(two_workers(), notify_systemd=True) as tree:
        receiver.drain()
        assert receiver.texts == [READY_2]
        tree.shutdown()
        await trio.sleep(1.0)  # cancelled by the shutdown
    receiver.drain()
    assert receiver.texts == [READY_2, "STOPPING=1\nSTATUS=shutting down: requested"]


async def test_ready_waits_for_slow_starting_children(
    autojump_clock: trio.testing.MockClock, receiver: Receiver
) -> None:
    spec = SupervisorSpec("app", [ChildSpec("db", slow_start(2.0)), ChildSpec("web", sleeper())])
    async with collecting(receiver), supervisor_tree(spec, notify_systemd=True):
        await trio.sleep(1.0)
    assert receiver.messages == [
        (2.0, READY_2),
        (3.0, "STOPPING=1\nSTATUS=shutting down: body ended"),
    ]


async def test_abstract_socket(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("abstract sockets are Linux's")
    name = f"trio-supervise-test-{os.getpid()}-{secrets.token_hex(8)}"
    abstract = Receiver.bind("\0" + name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        async with collecting(abstract), supervisor_tree(two_workers(), notify_systemd=True):
            await trio.sleep(2.0)
    finally:
        abstract.sock.close()
    assert abstract.messages == [
        (0.0, READY_2),
        (2.0, "STOPPING=1\nSTATUS=shutting down: body ended"),
    ]


async def test_nothing_is_sent_without_notify_socket(
    autojump_clock: trio.testing.MockClock,
    notify_path: Path,
    systemd_logs: pytest.LogCaptureFixture,
) -> None:
    silent = Receiver.bind(str(notify_path))
    try:
        async with collecting(silent), supervisor_tree(two_workers(), notify_systemd=True):
            await trio.sleep(2.0)
    finally:
        silent.sock.close()
    assert silent.messages == []
    assert logged(systemd_logs) == []


async def test_nothing_is_sent_unless_asked(
    autojump_clock: trio.testing.MockClock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    async with collecting(receiver), supervisor_tree(two_workers()):
        await trio.sleep(2.0)
    assert receiver.messages == []


async def test_watchdog_of_another_process_is_not_pinged(
    autojump_clock: trio.testing.MockClock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    async with collecting(receiver), supervisor_tree(two_workers(), notify_systemd=True):
        await trio.sleep(3.5)
    assert receiver.messages == [
        (0.0, READY_2),
        (3.5, "STOPPING=1\nSTATUS=shutting down: body ended"),
    ]


async def test_malformed_watchdog_usec_means_no_pings(
    autojump_clock: trio.testing.MockClock,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    systemd_logs: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2s")
    async with collecting(receiver), supervisor_tree(two_workers(), notify_systemd=True):
        await trio.sleep(3.5)
    assert receiver.texts == [READY_2, "STOPPING=1\nSTATUS=shutting down: body ended"]
    assert logged(systemd_logs) == [
        (
            logging.WARNING,
            "WATCHDOG_USEC='2s' is not a positive whole number of microseconds; the systemd"
            " watchdog is off (check WatchdogSec= in the unit)",
        )
    ]


async def test_unhealthy_tree_stops_pinging(
    autojump_clock: trio.testing.MockClock,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    systemd_logs: pytest.LogCaptureFixture,
) -> None:
    # The root gives up at 2.5 and then needs 10 s to stop "slow": unhealthy meanwhile.
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    spec = SupervisorSpec(
        "app",
        [
            ChildSpec("slow", slow_stop(10.0), shutdown_timeout=None),
            ChildSpec("w", crash_after(2.5)),
        ],
        max_restarts=0,
        backoff=None,
    )
    async with collecting(receiver):
        with pytest.raises(RestartIntensityExceeded) as raised:
            async with supervisor_tree(spec, notify_systemd=True):
                await trio.sleep_forever()
    assert receiver.messages == [
        (0.0, READY_2),
        (1.0, PING),
        (2.0, PING),
        (2.75, "STATUS=unhealthy: watchdog pings stopped"),
        (12.5, f"STOPPING=1\nSTATUS=shutting down: root supervisor failed: {raised.value}"),
    ]
    assert logged(systemd_logs) == [
        (
            logging.WARNING,
            "the tree is unhealthy: not pinging the systemd watchdog, so systemd acts on"
            " WatchdogSec= unless the tree recovers or stops first",
        )
    ]


async def test_status_follows_a_restart(
    autojump_clock: trio.testing.MockClock, receiver: Receiver
) -> None:
    spec = SupervisorSpec(
        "app",
        [ChildSpec("a", sleeper()), ChildSpec("b", crash_after(1.0, starts=1))],
        backoff=Backoff(initial=0.5, jitter=0.0),
    )
    async with collecting(receiver), supervisor_tree(spec, notify_systemd=True):
        await trio.sleep(2.0)
    assert receiver.messages == [
        (0.0, READY_2),
        (1.25, "STATUS=degraded: 1 of 2 children running"),
        (1.75, "STATUS=running: 2 children"),
        (2.0, "STOPPING=1\nSTATUS=shutting down: body ended"),
    ]


async def test_terminated_child_shows_in_status(
    autojump_clock: trio.testing.MockClock, receiver: Receiver
) -> None:
    async with collecting(receiver), supervisor_tree(two_workers(), notify_systemd=True) as tree:
        await trio.sleep(1.0)
        await tree.terminate_child("b")
        await trio.sleep(1.0)
    assert receiver.messages == [
        (0.0, READY_2),
        (1.25, "STATUS=running: 1 of 2 children"),
        (2.0, "STOPPING=1\nSTATUS=shutting down: body ended"),
    ]


async def test_body_error_is_the_stopping_status(
    autojump_clock: trio.testing.MockClock, receiver: Receiver
) -> None:
    async def break_the_body() -> None:
        async with supervisor_tree(two_workers(), notify_systemd=True):
            await trio.sleep(1.0)
            raise FakeCrash("body broke")

    async with collecting(receiver):
        with pytest.raises(FakeCrash, match=r"^body broke$"):
            await break_the_body()
    assert receiver.messages == [
        (0.0, READY_2),
        (1.0, "STOPPING=1\nSTATUS=shutting down: body raised FakeCrash"),
    ]


async def test_start_cut_short_sends_no_ready(
    autojump_clock: trio.testing.MockClock, receiver: Receiver
) -> None:
    async def stop_while_starting(
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await trio.sleep(1.0)
        current_tree().shutdown("stop during start")
        await trio.sleep_forever()

    spec = SupervisorSpec("app", [ChildSpec("a", sleeper()), ChildSpec("b", stop_while_starting)])
    async with collecting(receiver), supervisor_tree(spec, notify_systemd=True):
        await trio.sleep(5.0)  # cancelled at once: the shutdown came first
    assert receiver.messages == [(1.0, "STOPPING=1\nSTATUS=shutting down: stop during start")]


async def test_cancelled_during_start_still_sends_stopping(
    autojump_clock: trio.testing.MockClock, receiver: Receiver
) -> None:
    spec = SupervisorSpec("app", [ChildSpec("slow", slow_start(5.0))])
    async with collecting(receiver):
        with trio.move_on_after(2.0) as outside:
            async with supervisor_tree(spec, notify_systemd=True):
                pytest.fail("the body must not run")  # pragma: no cover
    assert outside.cancelled_caught
    assert receiver.messages == [(2.0, "STOPPING=1\nSTATUS=shutting down: cancelled from outside")]


async def test_cancelled_from_outside_sends_stopping_shielded(
    autojump_clock: trio.testing.MockClock, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    async with collecting(receiver):
        with trio.move_on_after(1.5):
            async with supervisor_tree(two_workers(), notify_systemd=True):
                await trio.sleep_forever()
    assert receiver.messages == [
        (0.0, READY_2),
        (1.0, PING),
        (1.5, "STOPPING=1\nSTATUS=shutting down: cancelled from outside"),
    ]


@linux_only
async def test_socket_gone_is_logged_once_and_the_tree_goes_on(
    autojump_clock: trio.testing.MockClock,
    notify_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    systemd_logs: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_path))
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    first = Receiver.bind(str(notify_path))
    second: Receiver | None = None
    try:
        async with supervisor_tree(two_workers(), notify_systemd=True) as tree:
            async with collecting(first):
                await trio.sleep(1.5)
            first.sock.close()
            os.unlink(notify_path)  # at once: a thread would let the clock jump meanwhile
            await trio.sleep(3.0)  # the pings at 2, 3 and 4 fail
            assert [info.state for info in tree.children()] == [ChildState.RUNNING] * 2
            assert logged(systemd_logs) == [
                (
                    logging.WARNING,
                    f"cannot notify systemd at NOTIFY_SOCKET={notify_path} ([Errno 2] No such"
                    " file or directory); the service goes on, and further failures are not"
                    " logged until a notification gets through",
                )
            ]
            # systemd is back (daemon-reexec) at the same address.
            second = Receiver.bind(str(notify_path))
            async with collecting(second):
                await trio.sleep(2.0)
            tree.shutdown()
            await trio.sleep(1.0)  # cancelled by the shutdown
        second.drain()  # STOPPING=1, sent as the body ended
    finally:
        first.sock.close()
        if second is not None:
            second.sock.close()
    assert first.messages == [(0.0, READY_2), (1.0, PING)]
    assert second.messages == [
        (5.0, PING),
        (6.0, PING),
        (6.5, "STOPPING=1\nSTATUS=shutting down: requested"),
    ]
    assert logged(systemd_logs)[1:] == [
        (
            logging.INFO,
            f"notifications to systemd at NOTIFY_SOCKET={notify_path} get through again",
        )
    ]


async def test_receiver_closed_but_path_left_is_survived(
    autojump_clock: trio.testing.MockClock,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    systemd_logs: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    async with supervisor_tree(two_workers(), notify_systemd=True) as tree:
        await trio.sleep(0.5)
        receiver.drain()
        receiver.sock.close()  # the path stays: sends are refused
        await trio.sleep(2.0)
        assert tree.health().ready
    assert receiver.texts == [READY_2]
    (warning,) = logged(systemd_logs)
    assert warning[0] == logging.WARNING
    assert "; the service goes on, and further failures are not logged" in warning[1]


@final
@attrs.define(eq=False)
class FakeTree:
    """Just what ``TreeNotifications`` reads of a tree (``WatchedTree``), set by the test."""

    report: HealthReport
    shutting_down: bool = False
    listeners: list[Callable[[Event], object]] = attrs.field(factory=list)
    changed: trio.Event = attrs.field(factory=trio.Event)

    def health(self) -> HealthReport:
        return self.report

    def add_event_listener(self, listener: Callable[[Event], object]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    async def wait_changed(self) -> None:
        await self.changed.wait()
        self.changed = trio.Event()


def health_of(*states: ChildState) -> HealthReport:
    children = {
        f"w{i}": ChildHealth(
            HealthStatus.HEALTHY if state is ChildState.RUNNING else HealthStatus.DEGRADED, state
        )
        for i, state in enumerate(states)
    }
    degraded = any(state is not ChildState.RUNNING for state in states)
    status = HealthStatus.DEGRADED if degraded else HealthStatus.HEALTHY
    return HealthReport(status, children, ready=True, live=True)


async def test_tree_notifications_need_only_what_watched_tree_names(
    autojump_clock: trio.testing.MockClock, notify_path: Path
) -> None:
    receiver = Receiver.bind(str(notify_path))
    tree = FakeTree(health_of(ChildState.RUNNING, ChildState.RUNNING))
    notifications = TreeNotifications(SystemdNotifier(str(notify_path)), tree)
    try:
        async with collecting(receiver), trio.open_nursery() as nursery:
            await notifications.started(nursery)
            assert len(tree.listeners) == 1
            await trio.sleep(1.0)
            tree.report = health_of(ChildState.RUNNING, ChildState.RESTARTING)
            tree.changed.set()  # a state change without an event
            await trio.sleep(1.0)
            tree.shutting_down = True
            await notifications.stopping("test over")
            assert tree.listeners == []
    finally:
        notifications.close()
        receiver.sock.close()
    assert receiver.messages == [
        (0.0, READY_2),
        (1.0 + STATUS_SETTLE, "STATUS=degraded: 1 of 2 children running"),
        (2.0, "STOPPING=1\nSTATUS=shutting down: test over"),
    ]


# --------------------------------------------------------------------- the notifier


async def test_notify_sends_one_datagram_of_fields_in_order(
    autojump_clock: trio.testing.MockClock, receiver: Receiver, notify_path: Path
) -> None:
    async with SystemdNotifier(str(notify_path)) as notifier:
        assert notifier.enabled
        assert await notifier.notify(READY=1, STATUS="up", MAINPID=42, X_FLAG=True, Y=False)
        assert await notifier.ready()
        assert await notifier.ready("serving")
        assert await notifier.status("half\nway\r\nthere\0!")
        assert await notifier.watchdog()
        assert await notifier.stopping()
        assert await notifier.stopping("bye")
    receiver.drain()
    assert receiver.texts == [
        "READY=1\nSTATUS=up\nMAINPID=42\nX_FLAG=1\nY=0",
        "READY=1",
        "READY=1\nSTATUS=serving",
        "STATUS=half way there!",
        "WATCHDOG=1",
        "STOPPING=1",
        "STOPPING=1\nSTATUS=bye",
    ]


async def test_status_is_shortened(
    autojump_clock: trio.testing.MockClock, receiver: Receiver, notify_path: Path
) -> None:
    async with SystemdNotifier(str(notify_path)) as notifier:
        assert await notifier.status("x" * 5000)
        # Four bytes each in UTF-8: still one message systemd takes.
        assert await notifier.stopping("\N{SNAKE}" * 5000)
    receiver.drain()
    assert receiver.texts == [
        "STATUS=" + "x" * (MAX_STATUS_CHARS - 1) + "…",
        "STOPPING=1\nSTATUS=" + "\N{SNAKE}" * (MAX_STATUS_CHARS - 1) + "…",
    ]


@pytest.mark.parametrize(
    ("fields", "error", "message"),
    [
        (
            {},
            ValueError,
            r"^SystemdNotifier\.notify: give at least one field, e\.g\. notify\(READY=1,"
            r" STATUS='up'\)$",
        ),
        (
            {"ready": 1},
            ValueError,
            r"^sd_notify field name 'ready' is not valid: systemd's names are upper-case"
            r" letters, digits and '_' \(READY, STATUS, WATCHDOG, \.\.\.\)$",
        ),
        (
            {"STATUS": "two\nlines"},
            ValueError,
            r"^sd_notify field STATUS: the value must not contain a newline or NUL \(got"
            r" 'two\\nlines'\); each field is one line of the message; use status\(\) for free"
            r" text, which joins the lines$",
        ),
        (
            {"STATUS": "nul\0"},
            ValueError,
            r"^sd_notify field STATUS: the value must not contain a newline or NUL",
        ),
        (
            {"WATCHDOG_USEC": 1.5},
            TypeError,
            r"^sd_notify field WATCHDOG_USEC: the value must be a str or an int \(got 1\.5\)$",
        ),
        (
            {"STATUS": "x" * MAX_MESSAGE_BYTES},
            ValueError,
            rf"^sd_notify message is {MAX_MESSAGE_BYTES + 7} bytes; systemd drops messages"
            rf" over {MAX_MESSAGE_BYTES} bytes; shorten the values$",
        ),
    ],
)
async def test_bad_fields_raise_even_when_disabled(
    fields: dict[str, object], error: type[Exception], message: str
) -> None:
    for notifier in (SystemdNotifier(None), SystemdNotifier("/nonexistent/notify")):
        with pytest.raises(error, match=message):
            await notifier.notify(**fields)  # type: ignore[arg-type]  # wrong on purpose


async def test_disabled_notifier_sends_nothing() -> None:
    notifier = SystemdNotifier(None, watchdog_interval=5.0)
    assert not notifier.enabled
    assert notifier.address is None
    assert notifier.watchdog_interval is None
    assert await notifier.ready("up") is False
    assert await notifier.watchdog() is False
    await notifier.aclose()


async def test_closed_notifier_raises(receiver: Receiver, notify_path: Path) -> None:
    notifier = SystemdNotifier(str(notify_path))
    assert await notifier.ready()
    await notifier.aclose()
    with pytest.raises(trio.ClosedResourceError, match=r"^this SystemdNotifier was closed$"):
        await notifier.watchdog()
    receiver.drain()
    assert receiver.texts == ["READY=1"]


@pytest.mark.parametrize(
    ("address", "interval", "message"),
    [
        (
            "relative/notify",
            None,
            r"^SystemdNotifier: address must be an absolute path or an abstract name starting"
            r" with '\\0' \(got 'relative/notify'\); use from_environ\(\) to read"
            r" \$NOTIFY_SOCKET$",
        ),
        ("", None, r"^SystemdNotifier: address must be an absolute path"),
        (
            "/run/notify",
            0,
            r"^SystemdNotifier: watchdog_interval must be > 0 and finite or None \(got 0\)$",
        ),
        ("/run/notify", -1.0, r"\(got -1\.0\)$"),
        ("/run/notify", math.nan, r"\(got nan\)$"),
        ("/run/notify", math.inf, r"\(got inf\)$"),
        ("/run/notify", True, r"\(got True\)$"),
    ],
)
def test_constructor_checks_its_arguments(
    address: str, interval: float | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SystemdNotifier(address, watchdog_interval=interval)


async def test_full_queue_times_out_and_recovers(
    autojump_clock: trio.testing.MockClock,
    receiver: Receiver,
    notify_path: Path,
    systemd_logs: pytest.LogCaptureFixture,
) -> None:
    # Nobody reads: the kernel queue fills, and the send waits SEND_TIMEOUT, no longer.
    notifier = SystemdNotifier(str(notify_path))
    sent = 0
    with trio.fail_after(60):
        while await notifier.watchdog():
            sent += 1
            assert trio.current_time() == 0.0
    assert trio.current_time() == SEND_TIMEOUT
    assert sent > 0
    receiver.drain()
    assert receiver.texts == [PING] * sent
    assert await notifier.status("back")
    await notifier.aclose()
    receiver.drain()
    assert receiver.texts[-1] == "STATUS=back"
    assert logged(systemd_logs) == [
        (
            logging.WARNING,
            f"cannot notify systemd at NOTIFY_SOCKET={notify_path} (systemd did not take it"
            " within 1s); the service goes on, and further failures are not logged until a"
            " notification gets through",
        ),
        (
            logging.INFO,
            f"notifications to systemd at NOTIFY_SOCKET={notify_path} get through again",
        ),
    ]


# -------------------------------------------------------------------- the environment


def test_from_environ_unset_or_empty_is_disabled_silently(
    systemd_logs: pytest.LogCaptureFixture,
) -> None:
    for environ in ({}, {"NOTIFY_SOCKET": ""}, {"WATCHDOG_USEC": "1000000"}):
        notifier = SystemdNotifier.from_environ(environ)
        assert not notifier.enabled
        assert notifier.watchdog_interval is None
    assert logged(systemd_logs) == []


def test_from_environ_reads_os_environ_by_default(
    monkeypatch: pytest.MonkeyPatch, notify_path: Path
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_path))
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = SystemdNotifier.from_environ()
    assert notifier.address == str(notify_path)
    assert notifier.watchdog_interval == 15.0


def test_from_environ_addresses() -> None:
    assert SystemdNotifier.from_environ({"NOTIFY_SOCKET": "/run/systemd/notify"}).address == (
        "/run/systemd/notify"
    )
    assert SystemdNotifier.from_environ({"NOTIFY_SOCKET": "@sd-notify"}).address == "\0sd-notify"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            "run/notify",
            "NOTIFY_SOCKET='run/notify' is neither an absolute path nor an abstract socket"
            " name starting with '@'; systemd notifications are off",
        ),
        (
            "@",
            "NOTIFY_SOCKET='@' is neither an absolute path nor an abstract socket name"
            " starting with '@'; systemd notifications are off",
        ),
        (
            "vsock:2:1234",
            "NOTIFY_SOCKET='vsock:2:1234' is an AF_VSOCK address, which trio_supervise does"
            " not support; systemd notifications are off",
        ),
        (
            "/" + "x" * 108,
            f"NOTIFY_SOCKET='/{'x' * 108}' is longer than the 108 bytes a unix socket address"
            " can hold; systemd notifications are off",
        ),
    ],
)
def test_from_environ_unsupported_socket_is_disabled_with_a_warning(
    raw: str, message: str, systemd_logs: pytest.LogCaptureFixture
) -> None:
    notifier = SystemdNotifier.from_environ({"NOTIFY_SOCKET": raw, "WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert logged(systemd_logs) == [(logging.WARNING, message)]


def test_from_environ_watchdog_is_half_the_timeout_for_the_right_pid(
    systemd_logs: pytest.LogCaptureFixture,
) -> None:
    base = {"NOTIFY_SOCKET": "/run/notify", "WATCHDOG_USEC": "3000000"}
    assert SystemdNotifier.from_environ(base).watchdog_interval == 1.5
    assert SystemdNotifier.from_environ({**base, "WATCHDOG_PID": "77"}, 77).watchdog_interval == (
        1.5
    )
    assert SystemdNotifier.from_environ({**base, "WATCHDOG_USEC": "1"}).watchdog_interval == 5e-7
    assert logged(systemd_logs) == []
    other = SystemdNotifier.from_environ({**base, "WATCHDOG_PID": "77"}, pid=78)
    assert other.enabled
    assert other.watchdog_interval is None
    assert logged(systemd_logs) == [
        (
            logging.DEBUG,
            "WATCHDOG_PID=77 is not this process (78): not pinging the systemd watchdog",
        )
    ]


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("WATCHDOG_USEC", "abc", "a positive whole number of microseconds"),
        ("WATCHDOG_USEC", "-5", "a positive whole number of microseconds"),
        ("WATCHDOG_USEC", "0", "a positive whole number of microseconds"),
        ("WATCHDOG_USEC", "1.5", "a positive whole number of microseconds"),
        ("WATCHDOG_USEC", "1_000", "a positive whole number of microseconds"),
        ("WATCHDOG_USEC", str(2**64 - 1), "a positive whole number of microseconds"),
        ("WATCHDOG_USEC", " ", "a positive whole number of microseconds"),
        ("WATCHDOG_PID", "init", "a process id"),
        ("WATCHDOG_PID", "0", "a process id"),
        ("WATCHDOG_PID", "-1", "a process id"),
    ],
)
def test_from_environ_malformed_watchdog_is_off_with_a_warning(
    name: str, value: str, rule: str, systemd_logs: pytest.LogCaptureFixture
) -> None:
    environ = {"NOTIFY_SOCKET": "/run/notify", "WATCHDOG_USEC": "1000000", name: value}
    notifier = SystemdNotifier.from_environ(environ, pid=1)
    assert notifier.enabled
    assert notifier.watchdog_interval is None
    assert logged(systemd_logs) == [
        (
            logging.WARNING,
            f"{name}={value!r} is not {rule}; the systemd watchdog is off (check WatchdogSec="
            " in the unit)",
        )
    ]


# --------------------------------------------------------------------------- run()

SCRIPT = textwrap.dedent(
    """
    import sys
    import trio_supervise
    from trio_supervise import ChildSpec, SupervisorSpec
    from trio_supervise.testing import sleeper

    spec = SupervisorSpec("app", [ChildSpec("w", sleeper())])
    sys.exit(trio_supervise.run(spec, shutdown_deadline=5.0))
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_run_tells_systemd_ready_then_stopping_and_exits_0(notify_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(notify_path))
        manager.settimeout(30)
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(notify_path),
            # Pings every 0.5 ms if the check of WATCHDOG_PID (not the child's) failed.
            "WATCHDOG_USEC": "1000",
            "WATCHDOG_PID": "1",
        }
        process = subprocess.Popen(
            [sys.executable, "-c", SCRIPT],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            ready = manager.recv(MAX_MESSAGE_BYTES)
            # The signal handlers are installed before the first child starts.
            process.send_signal(signal.SIGTERM)
            stopping = manager.recv(MAX_MESSAGE_BYTES)
            _, err = process.communicate(timeout=30)
        finally:
            process.kill()
            process.wait()
        manager.setblocking(False)
        with pytest.raises(BlockingIOError):
            manager.recv(MAX_MESSAGE_BYTES)
    assert ready == b"READY=1\nSTATUS=running: 1 child"
    assert stopping == b"STOPPING=1\nSTATUS=shutting down: signal SIGTERM"
    assert process.returncode == 0, err
