"""systemd service notifications (``sd_notify``) over a Trio datagram socket.

The protocol of sd_notify(3) needs no library: a notification is one datagram of
``KEY=VALUE`` lines sent to the ``AF_UNIX`` socket that systemd names in ``$NOTIFY_SOCKET``
(a filesystem path, or an abstract socket name written with a leading ``@``).
``$WATCHDOG_USEC`` and ``$WATCHDOG_PID`` say whether, and how often, systemd expects
``WATCHDOG=1`` keep-alive pings from this process (sd_watchdog_enabled(3)).
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Protocol, final

import trio

from . import _checks
from ._context import ChildState
from ._events import Event, log
from ._health import HealthReport
from ._spec import HealthStatus

#: systemd reads a notification into a buffer of this many bytes and drops longer ones.
MAX_MESSAGE_BYTES = 4096
#: ``status()`` shortens longer texts to this many characters (ending with "…"); even in
#: 4-byte characters the message stays under ``MAX_MESSAGE_BYTES``.
MAX_STATUS_CHARS = 1000
#: Seconds one notification may wait for room in systemd's receive queue before it is
#: dropped (and logged): a stuck service manager must not hold up the tree.
SEND_TIMEOUT = 1.0
#: Seconds a tree's ``STATUS=`` waits after a change before it is sent, so that a restart
#: or a stop in progress has settled and a burst of changes makes one update.
STATUS_SETTLE = 0.25

# The names systemd defines are upper case; checking catches a typo such as ``ready=1``.
_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_DIGITS = re.compile(r"[0-9]+")
# sizeof(struct sockaddr_un.sun_path) on Linux.
_SUN_PATH_BYTES = 108
# systemd's USEC_INFINITY (2**64 - 1) means "no watchdog".
_USEC_INFINITY = 2**64 - 1
_KIND = "SYSTEMD"


def _notify_address(raw: str) -> str | None:
    """The socket address ``$NOTIFY_SOCKET`` names, or None (logged) if it is unusable."""
    if raw == "":
        return None
    if raw.startswith("/"):
        address = raw
    elif raw.startswith("@") and len(raw) > 1:
        address = "\0" + raw[1:]  # Linux's abstract namespace
    elif raw.startswith("vsock:"):
        log(
            logging.WARNING,
            "NOTIFY_SOCKET=%r is an AF_VSOCK address, which trio_supervise does not support;"
            " systemd notifications are off",
            raw,
            path="",
            kind=_KIND,
        )
        return None
    else:
        log(
            logging.WARNING,
            "NOTIFY_SOCKET=%r is neither an absolute path nor an abstract socket name starting"
            " with '@'; systemd notifications are off",
            raw,
            path="",
            kind=_KIND,
        )
        return None
    if len(os.fsencode(address)) > _SUN_PATH_BYTES:
        log(
            logging.WARNING,
            "NOTIFY_SOCKET=%r is longer than the %d bytes a unix socket address can hold;"
            " systemd notifications are off",
            raw,
            _SUN_PATH_BYTES,
            path="",
            kind=_KIND,
        )
        return None
    return address


def _malformed(name: str, value: str, rule: str) -> None:
    log(
        logging.WARNING,
        "%s=%r is not %s; the systemd watchdog is off (check WatchdogSec= in the unit)",
        name,
        value,
        rule,
        path="",
        kind=_KIND,
    )


def _watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds when the watchdog is this process's, else None."""
    usec_text = environ.get("WATCHDOG_USEC", "")
    if usec_text == "":
        return None
    if not _DIGITS.fullmatch(usec_text.strip()) or not 0 < int(usec_text) < _USEC_INFINITY:
        _malformed("WATCHDOG_USEC", usec_text, "a positive whole number of microseconds")
        return None
    pid_text = environ.get("WATCHDOG_PID", "")
    if pid_text != "":
        if not _DIGITS.fullmatch(pid_text.strip()) or int(pid_text) <= 0:
            _malformed("WATCHDOG_PID", pid_text, "a process id")
            return None
        if int(pid_text) != pid:
            # The variables were inherited from the process systemd watches; it pings.
            log(
                logging.DEBUG,
                "WATCHDOG_PID=%s is not this process (%d): not pinging the systemd watchdog",
                pid_text,
                pid,
                path="",
                kind=_KIND,
            )
            return None
    # sd_watchdog_enabled(3): ping every half of the timeout.
    return int(usec_text) / 2 / 1_000_000


def _encode(fields: Mapping[str, str | int]) -> bytes:
    if not fields:
        raise ValueError(
            "SystemdNotifier.notify: give at least one field, e.g. notify(READY=1, STATUS='up')"
        )
    lines = []
    for name, value in fields.items():
        if not _FIELD_NAME.fullmatch(name):
            raise ValueError(
                f"sd_notify field name {name!r} is not valid: systemd's names are upper-case"
                " letters, digits and '_' (READY, STATUS, WATCHDOG, ...)"
            )
        if isinstance(value, bool):
            text = "1" if value else "0"
        elif isinstance(value, int | str):
            text = str(value)
        else:
            raise TypeError(
                f"sd_notify field {name}: the value must be a str or an int (got {value!r})"
            )
        if "\n" in text or "\0" in text:
            raise ValueError(
                f"sd_notify field {name}: the value must not contain a newline or NUL"
                f" (got {text!r}); each field is one line of the message; use status() for"
                " free text, which joins the lines"
            )
        lines.append(f"{name}={text}")
    data = "\n".join(lines).encode("utf-8")
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(
            f"sd_notify message is {len(data)} bytes; systemd drops messages over"
            f" {MAX_MESSAGE_BYTES} bytes; shorten the values"
        )
    return data


def one_line_status(text: str) -> str:
    """``text`` made fit for ``STATUS=``: one line, no NUL, at most ``MAX_STATUS_CHARS``."""
    line = " ".join(part for part in text.replace("\0", "").splitlines() if part)
    if len(line) > MAX_STATUS_CHARS:
        line = line[: MAX_STATUS_CHARS - 1] + "…"
    return line


@final
class SystemdNotifier:
    """Tells systemd about the service (sd_notify(3)), with no dependency beyond Trio.

    A disabled notifier (no ``$NOTIFY_SOCKET``) sends nothing and returns False, so code
    can call it unconditionally. A notification that cannot be
    sent (the socket is gone, systemd's queue stays full for ``SEND_TIMEOUT`` seconds) is
    logged once per outage through the ``trio_supervise`` logger and reported as False,
    never raised: losing systemd must not take the service down. The socket is connected
    at the first notification and connected anew after a failure, so a socket systemd
    re-created at the same address (``systemctl daemon-reexec``) is found again.

    Args:
      address: where to send: an absolute filesystem path, an abstract socket name
        starting with ``"\\0"``, or None for a disabled notifier.
      watchdog_interval: seconds between ``WATCHDOG=1`` pings (half of systemd's
        ``WatchdogSec=``), or None when systemd expects none.

    Raises:
      ValueError: for an address that is not absolute or abstract, or an interval that is
        not a finite number > 0.

    Example::

        async with SystemdNotifier.from_environ() as notifier:
            await notifier.ready("accepting connections on :8080")
    """

    def __init__(self, address: str | None, *, watchdog_interval: float | None = None) -> None:
        if address is not None and (
            not isinstance(address, str) or not address.startswith(("/", "\0"))
        ):
            raise ValueError(
                "SystemdNotifier: address must be an absolute path or an abstract name starting"
                f" with '\\0' (got {address!r}); use from_environ() to read $NOTIFY_SOCKET"
            )
        _checks.number(
            "SystemdNotifier",
            "watchdog_interval",
            watchdog_interval,
            above=0,
            finite=True,
            none=True,
        )
        #: The socket address (a path, or ``"\0name"``), or None when disabled.
        self.address = address
        #: Seconds between watchdog pings, or None when systemd expects none.
        self.watchdog_interval: float | None = (
            None if address is None or watchdog_interval is None else float(watchdog_interval)
        )
        # Connected at the first send, and again after a failed one; None in between, and
        # always for a disabled or unused notifier (it holds no descriptor).
        self._socket: trio.socket.SocketType | None = None
        # True from a failed send until one succeeds: an outage is logged once.
        self._failing = False
        self._closed = False

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] = os.environ, pid: int | None = None
    ) -> SystemdNotifier:
        """The notifier systemd's environment variables describe.

        ``$NOTIFY_SOCKET`` unset or empty gives a disabled notifier, silently; a value that
        is not an absolute path or an ``@`` abstract name (``vsock:`` addresses included)
        gives a disabled one and a warning. The watchdog interval is half of
        ``$WATCHDOG_USEC`` when ``$WATCHDOG_PID`` is unset or is ``pid``; a malformed value
        turns the watchdog off with a warning naming the variable and the value.

        Args:
          environ: the environment to read (default: ``os.environ``).
          pid: this process's id (default: ``os.getpid()``).
        """
        address = _notify_address(environ.get("NOTIFY_SOCKET", ""))
        if address is None:
            return cls(None)
        interval = _watchdog_interval(environ, os.getpid() if pid is None else pid)
        return cls(address, watchdog_interval=interval)

    @property
    def enabled(self) -> bool:
        """True when there is a socket to send to."""
        return self.address is not None

    def _display(self) -> str:
        assert self.address is not None
        return "@" + self.address[1:] if self.address.startswith("\0") else self.address

    async def notify(self, **fields: str | int) -> bool:
        """Send one notification made of ``fields``, in order: ``notify(READY=1, STATUS="up")``.

        ``True`` and ``False`` are sent as ``1`` and ``0``.

        Returns:
          True when the datagram was sent; False when disabled or the send failed (logged).

        Raises:
          ValueError: no fields, a name that is not upper case, a value holding a newline
            or NUL, or a message over ``MAX_MESSAGE_BYTES``.
          TypeError: a value that is not a str or an int.
          trio.ClosedResourceError: the notifier was closed.
        """
        data = _encode(fields)
        if self._closed:
            raise trio.ClosedResourceError("this SystemdNotifier was closed")
        if self.address is None:
            await trio.lowlevel.checkpoint()
            return False
        error: OSError | None = None
        try:
            with trio.move_on_after(SEND_TIMEOUT) as timeout:
                await self._send(data, self.address)
            if timeout.cancelled_caught:
                error = TimeoutError(f"systemd did not take it within {SEND_TIMEOUT:g}s")
        except OSError as exc:
            error = exc
        if error is not None:
            if not self._failing:
                log(
                    logging.WARNING,
                    "cannot notify systemd at NOTIFY_SOCKET=%s (%s); the service goes on, and"
                    " further failures are not logged until a notification gets through",
                    self._display(),
                    error,
                    path="",
                    kind=_KIND,
                )
            self._failing = True
            return False
        if self._failing:
            log(
                logging.INFO,
                "notifications to systemd at NOTIFY_SOCKET=%s get through again",
                self._display(),
                path="",
                kind=_KIND,
            )
            self._failing = False
        return True

    async def _send(self, data: bytes, address: str) -> None:
        # A connected socket, unlike sendto(), waits for room when systemd's queue is full
        # (poll reports an unconnected datagram socket writable all the same).
        if self._socket is not None:
            try:
                await self._socket.send(data)
                return
            except OSError:
                # systemd re-created its socket (daemon-reexec) or is gone: connect anew.
                self._disconnect()
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            await sock.connect(address)
            await sock.send(data)
        except BaseException:
            sock.close()
            raise
        self._socket = sock

    def _disconnect(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def ready(self, status: str | None = None) -> bool:
        """Send ``READY=1`` (start-up is finished), with ``STATUS=`` when given."""
        if status is None:
            return await self.notify(READY=1)
        return await self.notify(READY=1, STATUS=one_line_status(status))

    async def stopping(self, status: str | None = None) -> bool:
        """Send ``STOPPING=1`` (the shutdown has begun), with ``STATUS=`` when given."""
        if status is None:
            return await self.notify(STOPPING=1)
        return await self.notify(STOPPING=1, STATUS=one_line_status(status))

    async def status(self, text: str) -> bool:
        """Send ``STATUS=text``; lines are joined with spaces and a long text is shortened."""
        return await self.notify(STATUS=one_line_status(text))

    async def watchdog(self) -> bool:
        """Send one ``WATCHDOG=1`` keep-alive ping."""
        return await self.notify(WATCHDOG=1)

    def close(self) -> None:
        """Close the socket; later notifications raise ``trio.ClosedResourceError``."""
        self._closed = True
        self._disconnect()

    async def aclose(self) -> None:
        """Close the socket (see ``close``)."""
        self.close()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> SystemdNotifier:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def status_text(report: HealthReport) -> str:
    """The tree's ``STATUS=`` line: ``"running: 3 children"``, ``"degraded: 2 of 3 ..."``."""
    total = len(report.children)
    running = sum(child.state is ChildState.RUNNING for child in report.children.values())
    noun = "child" if total == 1 else "children"
    if report.status is HealthStatus.UNHEALTHY:
        return "unhealthy"
    if report.status is HealthStatus.DEGRADED:
        return f"degraded: {running} of {total} {noun} running"
    if running == total:
        return f"running: {total} {noun}"
    return f"running: {running} of {total} {noun}"


class WatchedTree(Protocol):
    """What ``TreeNotifications`` reads of a running tree (a ``SupervisorTree`` has it all).

    A protocol, so that this module needs nothing of ``_tree.py`` (which builds on it).
    """

    @property
    def shutting_down(self) -> bool:
        """True once the shutdown has been decided."""
        ...

    def health(self) -> HealthReport:
        """The tree's health now."""
        ...

    def add_event_listener(self, listener: Callable[[Event], object]) -> Callable[[], None]:
        """Call ``listener`` for every event from now on; return the function that stops it."""
        ...

    async def wait_changed(self) -> None:
        """Wait until any child's state changes."""
        ...


@final
class TreeNotifications:
    """What a running tree tells systemd, in order: READY, then STATUS and WATCHDOG, then STOPPING.

    ``supervisor_tree`` calls ``started`` between the root's start and the body, and
    ``stopping`` just before the shutdown's hooks run, both from its own task, so READY
    always precedes STOPPING and a start cut short by the shutdown sends no READY.

    Status:
      After a change (a child's state, or an event such as a health change) the status
      is sent ``STATUS_SETTLE`` seconds later if its text differs: a restart or a stop
      in progress settles first, and a burst of changes makes one update.

    Watchdog:
      Between READY and STOPPING a task pings every ``watchdog_interval`` seconds while
      ``tree.health().status`` is not ``UNHEALTHY``. A tree whose root supervisor is
      failing (it gave up and is stopping its children) stops pinging, so that systemd
      acts as ``WatchdogSec=`` says (``Restart=on-watchdog``) if that takes too long; a
      blocked event loop stops the pings as well. systemd disarms the watchdog when it
      gets ``STOPPING=1``, so there are no pings after it.
    """

    def __init__(self, notifier: SystemdNotifier, tree: WatchedTree) -> None:
        self._notifier = notifier
        self._tree = tree
        # Cancelled by stopping(): no ping or status may follow STOPPING=1.
        self._scope = trio.CancelScope()
        # Set when the tree changed since the status was last computed.
        self._changed = trio.Event()
        # The STATUS= text systemd has now, to send only changes.
        self._status = ""
        # Set while the listener is installed (between started() and stopping()).
        self._remove_listener: Callable[[], None] | None = None
        # True while pings are held back because the tree is unhealthy (logged once).
        self._holding_pings = False

    async def started(self, nursery: trio.Nursery) -> None:
        """Send READY=1 with the status, then keep systemd informed from a task in ``nursery``."""
        ready_at = trio.current_time()
        self._status = status_text(self._tree.health())
        # Listening first: a change while READY is on its way still updates the status.
        self._remove_listener = self._tree.add_event_listener(self._on_event)
        await self._notifier.ready(self._status)
        nursery.start_soon(self._keep_alive, ready_at)

    async def stopping(self, reason: str) -> None:
        """Stop the pings and status updates, then send STOPPING=1 with the reason."""
        self._scope.cancel(reason="trio_supervise shutdown: STOPPING=1 is next")
        self._stop_listening()
        # Cancellation from outside must not keep systemd from knowing; the send is
        # bounded by SEND_TIMEOUT.
        with trio.CancelScope(shield=True):
            await self._notifier.stopping(f"shutting down: {reason}")

    def close(self) -> None:
        self._scope.cancel(reason="trio_supervise tree ended")
        self._stop_listening()
        self._notifier.close()

    def _stop_listening(self) -> None:
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None

    def _on_event(self, event: Event) -> None:
        self._changed.set()

    async def _keep_alive(self, ready_at: float) -> None:
        interval = self._notifier.watchdog_interval
        with self._scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_states)
                nursery.start_soon(self._report_status)
                if interval is not None:
                    nursery.start_soon(self._ping_watchdog, ready_at, interval)

    async def _watch_states(self) -> None:
        # A state change need not come with an event (a terminated child ends STOPPED).
        while True:
            await self._tree.wait_changed()
            self._changed.set()

    async def _report_status(self) -> None:
        while True:
            await self._changed.wait()
            await trio.sleep(STATUS_SETTLE)
            self._changed = trio.Event()  # before reading: a later change makes a new round
            if self._tree.shutting_down:
                continue  # STOPPING=1 carries the status from now on
            text = status_text(self._tree.health())
            if text == "unhealthy" and self._notifier.watchdog_interval is not None:
                text = "unhealthy: watchdog pings stopped"
            if text != self._status:
                self._status = text
                await self._notifier.status(text)

    async def _ping_watchdog(self, ready_at: float, interval: float) -> None:
        next_ping = ready_at + interval
        while True:
            await trio.sleep_until(next_ping)
            await self._ping()
            now = trio.current_time()
            next_ping += interval
            if next_ping <= now:  # the loop was held up: no burst of late pings
                next_ping = now + interval

    async def _ping(self) -> None:
        if self._tree.health().status is HealthStatus.UNHEALTHY:
            # The root exits before the shutdown: nothing to warn about then.
            if not self._holding_pings and not self._tree.shutting_down:
                log(
                    logging.WARNING,
                    "the tree is unhealthy: not pinging the systemd watchdog, so systemd"
                    " acts on WatchdogSec= unless the tree recovers or stops first",
                    path="",
                    kind=_KIND,
                )
            self._holding_pings = True
            return
        if self._holding_pings:
            log(
                logging.INFO,
                "the tree is healthy again: pinging the systemd watchdog",
                path="",
                kind=_KIND,
            )
            self._holding_pings = False
        await self._notifier.watchdog()
