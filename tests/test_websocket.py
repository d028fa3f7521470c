"""The supervised WebSocket server: real sockets on 127.0.0.1, real trio-websocket clients.

Time: ``clock`` runs at real speed (the sockets are real) and the tests jump it forward to
end a drain delay or a close timeout at a moment they choose, so nothing waits on a guess.
The slow-consumer tests run the same server on UNIX socket pairs (``SocketPairListener``)
in virtual time (``autojump_clock``), with exact times.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
import trio_websocket
from processes import import_message_without
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    WebSocketRequest,
)
from websocket_client import open_client

from trio_supervise import (
    Band,
    ChildSpec,
    ChildState,
    DrainDelay,
    EventKind,
    ShutdownHook,
    SpecError,
    SupervisorSpec,
    current_tree,
    serve,
    supervisor_tree,
)
from trio_supervise.integrations import websocket as websocket_module
from trio_supervise.integrations.websocket import (
    GOING_AWAY,
    HANDSHAKE_TIMEOUT,
    INTERNAL_ERROR,
    POLICY_VIOLATION,
    WebSocketServer,
)
from trio_supervise.testing import EventRecorder, fail_start

GREETING = '{"type": "hello"}'
NOTICE = '{"type": "server_shutdown"}'
HOST = "127.0.0.1"
#: A fail-safe only: every wait below ends on a condition long before it.
FAIL_SAFE = 30.0


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Real-speed time that a test can jump forward (pytest-trio runs the test with it)."""
    return trio.testing.MockClock(rate=1.0)


# ------------------------------------------------------------------------------- clients


@attrs.define
class Received:
    """What one client read until its connection closed."""

    messages: list[str | bytes] = attrs.Factory(list)
    reason: CloseReason | None = None
    closed: trio.Event = attrs.Factory(trio.Event)


async def read_all(ws: WebSocketConnection, into: Received) -> None:
    try:
        while True:
            into.messages.append(await ws.get_message())
    except ConnectionClosed as exc:
        into.reason = exc.reason
        into.closed.set()


async def reading_client(
    port: int,
    into: Received,
    *,
    greeted: bool = True,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Connect, report started once the greeting came (or at once), read until closed."""
    async with open_client(port) as ws:
        if greeted:
            into.messages.append(await ws.get_message())
        task_status.started()
        await read_all(ws, into)


#: A reading client for a server without a greeting.
ungreeted_client = functools.partial(reading_client, greeted=False)


async def refused_status(port: int, path: str = "/ws") -> int:
    """Attempt a handshake that the server refuses; return the HTTP status."""
    with pytest.RaisesGroup(ConnectionRejected) as caught:
        async with open_client(port, path):
            pass
    rejected = caught.value.exceptions[0]
    assert isinstance(rejected, ConnectionRejected)
    return rejected.status_code


@asynccontextmanager
async def open_mute_client(port: int) -> AsyncIterator[trio.SocketStream]:
    """A raw TCP client that completes the opening handshake and never answers anything."""
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        await stream.send_all(
            b"GET /ws HTTP/1.1\r\n"
            b"Host: " + f"{HOST}:{port}".encode() + b"\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        response = b""
        while b"\r\n\r\n" not in response:
            response += await stream.receive_some()
        assert response.startswith(b"HTTP/1.1 101 "), response
        assert response.endswith(b"\r\n\r\n"), "the server sent a frame before any was due"
        yield stream


async def receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, f"EOF after {data!r}"
        data += chunk
    return data


def text_frame(text: str) -> bytes:
    """An unmasked server text frame (payloads below 126 bytes)."""
    payload = text.encode()
    return bytes([0x81, len(payload)]) + payload


def close_frame(code: int, reason: str) -> bytes:
    payload = code.to_bytes(2, "big") + reason.encode()
    return bytes([0x88, len(payload)]) + payload


# ------------------------------------------------------------------------------ handlers


async def read_forever(conn: WebSocketConnection) -> None:
    """A handler that reads until the connection closes (ConnectionClosed ends it)."""
    while True:
        await conn.get_message()


async def idle(conn: WebSocketConnection) -> None:
    """A handler that never touches its connection: only broadcasts reach the client."""
    await trio.sleep_forever()


async def echo_or_fail(conn: WebSocketConnection) -> None:
    """Echo; "boom" raises, "bye" returns (the server then closes normally)."""
    while True:
        message = await conn.get_message()
        if message == "boom":
            raise RuntimeError("handler failed on purpose")
        if message == "bye":
            return
        await conn.send_message(message)


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll a condition that no event announces (the state of another party's socket)."""
    while not predicate():  # noqa: ASYNC110 - nothing to wait on: the state is another task's
        await trio.sleep(0.001)


def records(caplog: pytest.LogCaptureFixture, kind: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "kind", None) == kind]


# ------------------------------------------------------------------------------ shutdown


async def test_shutdown_drain_refuse_notice_then_1001(
    clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_supervise")
    drain = DrainDelay(5.0)
    server = WebSocketServer(read_forever, port=0, drain=drain, greeting=GREETING)
    # Holds the DRAIN band (where the child is stopped and the listener closes) until the
    # prober has seen the 503: hooks of one band run concurrently, bands one after another.
    refused_seen = trio.Event()
    gate = ShutdownHook("test: gate", refused_seen.wait, priority=Band.STOP_ACCEPTING)
    spec = SupervisorSpec("app", [server.child_spec()])
    clients = [Received() for _ in range(6)]
    statuses: list[int] = []

    async def prober(recorder: EventRecorder, port: int, nursery: trio.Nursery) -> None:
        await recorder.wait_for(EventKind.SHUTDOWN_STARTED)
        await wait_until(lambda: drain.remaining is not None)  # its hook task has begun
        # The drain delay runs: the tree is not ready, yet handshakes still succeed.
        assert drain.remaining == pytest.approx(5.0, abs=0.5)
        assert server.accepting
        await nursery.start(reading_client, port, clients[5])
        assert len(server.connections) == 6
        clock.jump(5.0)  # the drain delay ends
        await recorder.wait_for(EventKind.HOOK_FINISHED, "websocket: stop accepting")
        assert not server.accepting
        statuses.append(await refused_status(port))
        assert len(server.connections) == 6, "open connections go on during STOP_ACCEPTING"
        refused_seen.set()

    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery:
            async with supervisor_tree(
                spec, hooks=[drain.hook, server.shutdown_hook(), gate]
            ) as tree:
                recorder = EventRecorder(tree)
                port = server.port
                assert port != 0
                for received in clients[:5]:
                    await nursery.start(reading_client, port, received)
                assert len(server.connections) == 5
                nursery.start_soon(prober, recorder, port, nursery)
            # The tree has exited: the listener is closed.
            with pytest.raises(OSError, match=r"Connection refused|all attempts to connect"):
                await trio.open_tcp_stream(HOST, port)

    assert statuses == [503]
    for received in clients:
        assert received.messages == [GREETING, NOTICE]
        assert received.reason is not None
        assert (received.reason.code, received.reason.reason) == (GOING_AWAY, "going away")
    assert len(server.connections) == 0
    report = tree.shutdown_report
    assert report is not None
    assert report.ok, report.format()
    recorder.assert_sequence(
        (EventKind.SHUTDOWN_STARTED, ""),
        (EventKind.HOOK_FINISHED, "drain-delay"),
        (EventKind.HOOK_FINISHED, "websocket: stop accepting"),
        (EventKind.HOOK_FINISHED, "test: gate"),
        (EventKind.TERMINATED, "websocket"),
        (EventKind.HOOK_FINISHED, "supervisor"),
        (EventKind.SHUTDOWN_FINISHED, ""),
    )
    assert recorder.of(EventKind.STOP_TIMEOUT) == []
    assert [r.getMessage() for r in records(caplog, "WEBSOCKET_STOPPING")] == [
        "WebSocket server stopping: closing 6 connection(s) with 1001 going away"
    ]
    assert records(caplog, "WEBSOCKET_CLOSE_TIMEOUT") == []


async def test_a_client_that_never_answers_the_close_is_aborted_after_close_timeout(
    clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_supervise")
    server = WebSocketServer(read_forever, port=0, close_timeout=5.0)
    spec = SupervisorSpec("app", [server.child_spec()])
    cleaned_up: list[float] = []

    async def cleanup() -> None:
        cleaned_up.append(trio.current_time())

    later = ShutdownHook("test: cleanup", cleanup, priority=Band.CLEANUP)
    good = Received()
    mute_received: list[bytes] = []

    async def mute(port: int, task_status: trio.TaskStatus[None]) -> None:
        async with open_mute_client(port) as stream:
            task_status.started()
            expected = text_frame(NOTICE) + close_frame(GOING_AWAY, "going away")
            mute_received.append(await receive_exactly(stream, len(expected)))
            # The good client's close handshake is over once it left the registry; the
            # server still waits for an answer from this one, that never comes.
            await good.closed.wait()
            await wait_until(lambda: len(server.connections) == 1)
            clock.jump(5.0)
            mute_received.append(await stream.receive_some())  # b"": aborted

    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery, supervisor_tree(spec, hooks=[later]) as tree:
            recorder = EventRecorder(tree)
            await nursery.start(ungreeted_client, server.port, good)
            await nursery.start(mute, server.port)
            await wait_until(lambda: len(server.connections) == 2)

    # The reading client was closed properly at once, the mute one aborted after 5 s.
    assert good.messages == [NOTICE]
    assert good.reason is not None
    assert good.reason.code == GOING_AWAY
    assert mute_received == [text_frame(NOTICE) + close_frame(GOING_AWAY, "going away"), b""]
    started = recorder.of(EventKind.SHUTDOWN_STARTED)[0].time
    terminated = recorder.of(EventKind.TERMINATED, "websocket")[0].time
    assert 5.0 <= terminated - started < 5.5
    assert recorder.of(EventKind.STOP_TIMEOUT) == []
    report = tree.shutdown_report
    assert report is not None
    assert report.ok, report.format()
    assert len(cleaned_up) == 1
    assert cleaned_up[0] >= terminated  # the shutdown went on to the later bands
    [warning] = records(caplog, "WEBSOCKET_CLOSE_TIMEOUT")
    assert warning.levelno == logging.WARNING
    assert warning.getMessage().startswith(
        "1 WebSocket connection(s) did not finish the close handshake within 5s"
        " (close_timeout) and were aborted: 127.0.0.1:"
    )


async def test_terminate_child_without_shutdown_hook_still_refuses_and_closes_with_1001(
    clock: trio.testing.MockClock,
) -> None:
    server = WebSocketServer(idle, port=0, notice=None)
    spec = SupervisorSpec("app", [server.child_spec("ws")])
    received = Received()
    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery, supervisor_tree(spec) as tree:
            port = server.port
            await nursery.start(ungreeted_client, port, received)
            await tree.terminate_child("ws")
            assert tree.info("ws").state is ChildState.STOPPED
            assert not server.accepting
            with pytest.raises(OSError, match=r"Connection refused|all attempts to connect"):
                await trio.open_tcp_stream(HOST, port)
    assert received.messages == []  # notice=None sends none
    assert received.reason is not None
    assert received.reason.code == GOING_AWAY


async def test_a_handshake_accepted_as_the_stop_begins_gets_the_notice_and_1001(
    clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hold one handshake between the server's "accepting?" check and its 101 answer.
    real_accept = WebSocketRequest.accept
    reached, proceed = trio.Event(), trio.Event()

    async def held_accept(request: WebSocketRequest, **kwargs: Any) -> WebSocketConnection:
        reached.set()
        await proceed.wait()
        return await real_accept(request, **kwargs)

    monkeypatch.setattr(WebSocketRequest, "accept", held_accept)
    server = WebSocketServer(read_forever, port=0, greeting=GREETING)
    spec = SupervisorSpec("app", [server.child_spec()])
    late = Received()
    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery, supervisor_tree(spec) as tree:
            nursery.start_soon(ungreeted_client, server.port, late)
            await reached.wait()
            nursery.start_soon(tree.terminate_child, "websocket")
            await wait_until(lambda: not server.accepting)  # stop() has begun
            proceed.set()
            await late.closed.wait()
            await wait_until(lambda: tree.info("websocket").state is ChildState.STOPPED)
    # Its handler never ran (no greeting): it was told to go away at once.
    assert late.messages == [NOTICE]
    assert late.reason is not None
    assert late.reason.code == GOING_AWAY


# ----------------------------------------------------------------------------- broadcast


async def test_broadcast_skips_and_forgets_a_client_that_vanished(
    clock: trio.testing.MockClock,
) -> None:
    server = WebSocketServer(idle, port=0)
    spec = SupervisorSpec("app", [server.child_spec()])
    clients = [Received() for _ in range(2)]
    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery, supervisor_tree(spec):
            port = server.port
            assert await server.broadcast("nobody yet") == 0
            for received in clients:
                await nursery.start(ungreeted_client, port, received)
            # A third client vanishes without a close handshake (its TCP stream closed).
            stream = await trio.open_tcp_stream(HOST, port)
            async with stream, trio.open_nursery() as inner:
                await trio_websocket.wrap_client_stream(inner, stream, f"{HOST}:{port}", "/ws")
                await wait_until(lambda: len(server.connections) == 3)
                vanished = list(server.connections)[2]
                inner.cancel_scope.cancel()
            # The idle handler never reads, so the broken one stays registered until a
            # broadcast finds it closed (1006 once the server read the EOF).
            await wait_until(lambda: vanished.closed is not None)
            assert vanished in server.connections
            assert await server.broadcast('{"type": "note", "id": 1}') == 2
            assert vanished not in server.connections
            assert len(server.connections) == 2
            assert await server.broadcast('{"type": "note", "id": 2}') == 2
    for received in clients:
        assert received.messages == [
            '{"type": "note", "id": 1}',
            '{"type": "note", "id": 2}',
            NOTICE,
        ]
        assert received.reason is not None
        assert received.reason.code == GOING_AWAY


async def test_broadcast_sends_nothing_once_stopping_and_checks_its_argument(
    clock: trio.testing.MockClock,
) -> None:
    server = WebSocketServer(idle, port=0)
    assert await server.broadcast("before the first start") == 0
    with pytest.raises(TypeError, match=r"^WebSocketServer.broadcast: message must be a str"):
        await server.broadcast(b"bytes")  # type: ignore[arg-type]
    sent_during_stop: list[int] = []

    async def broadcast_late() -> None:
        sent_during_stop.append(await server.broadcast("too late"))

    spec = SupervisorSpec("app", [server.child_spec()])
    received = Received()
    late = ShutdownHook("test: broadcast", broadcast_late, priority=Band.FLUSH)
    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery, supervisor_tree(spec, hooks=[late]):
            await nursery.start(ungreeted_client, server.port, received)
    assert sent_during_stop == [0]
    assert received.messages == [NOTICE]


# ---------------------------------------------- slow consumers (socket pairs, virtual time)

#: The send and receive buffer of each end of a socket pair: a client that stops reading
#: blocks the server's writes after a few messages.
PAIR_BUFFER = 16384
#: A message larger than both buffers: its write waits for the client to read.
BIG = "x" * 200_000


@attrs.define(eq=False)
class _ListeningSocket:
    """The listener's ``socket``, which the server asks for its port."""

    def getsockname(self) -> tuple[str, int]:
        return (HOST, 1)


@attrs.define(eq=False)
class SocketPairListener(trio.abc.Listener[trio.SocketStream]):
    """Stands in for the server's TCP listener: each ``connect()`` is a UNIX socket pair.

    What one end of a socket pair writes is in the other end's buffer when the write
    returns (loopback TCP may hand it over later, from the kernel's network thread), so
    the autojump clock, which moves whenever every task waits, never moves while data is
    on its way: the tests run in virtual time, with exact times, on real socket buffers.
    """

    socket: _ListeningSocket = attrs.Factory(_ListeningSocket)
    _incoming: tuple[
        trio.MemorySendChannel[trio.SocketStream], trio.MemoryReceiveChannel[trio.SocketStream]
    ] = attrs.Factory(lambda: trio.open_memory_channel[trio.SocketStream](math.inf))

    def connect(self) -> trio.SocketStream:
        client, server = trio.socket.socketpair()
        for sock in (client, server):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PAIR_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PAIR_BUFFER)
        self._incoming[0].send_nowait(trio.SocketStream(server))
        return trio.SocketStream(client)

    async def accept(self) -> trio.SocketStream:
        return await self._incoming[1].receive()

    async def aclose(self) -> None:
        self._incoming[1].close()
        await trio.lowlevel.checkpoint()


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch) -> SocketPairListener:
    """The listener every ``WebSocketServer`` of the test gets instead of a TCP one."""
    fake = SocketPairListener()

    async def open_pair_listeners(port: int, *, host: str | None = None) -> list[Any]:
        return [fake]

    monkeypatch.setattr(trio, "open_tcp_listeners", open_pair_listeners)
    return fake


@asynccontextmanager
async def open_pair_client(
    listener: SocketPairListener, *, takes: int = 1
) -> AsyncIterator[WebSocketConnection]:
    """A trio-websocket client on a socket pair.

    ``takes`` is trio-websocket's ``message_queue_size``: how many messages its reader
    queues for ``get_message()`` before it waits, reading nothing more from the socket.
    ``takes=0`` holds one message (the reader waits to hand it over): a client that then
    never calls ``get_message()`` stops reading.
    """
    stream = listener.connect()
    async with stream, trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(
            nursery, stream, HOST, "/ws", message_queue_size=takes
        )
        try:
            yield ws
        finally:
            nursery.cancel_scope.cancel()


async def pair_reader(
    listener: SocketPairListener,
    into: Received,
    *,
    every: float = 0.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Connect and read until closed, a message each ``every`` seconds (0: at once)."""
    async with open_pair_client(listener, takes=0) as ws:
        task_status.started()
        try:
            while True:
                into.messages.append(await ws.get_message())
                await trio.sleep(every)
        except ConnectionClosed as exc:
            into.reason = exc.reason
            into.closed.set()


async def read_until_closed(ws: WebSocketConnection) -> tuple[list[str | bytes], CloseReason]:
    received = Received()
    await read_all(ws, received)
    assert received.reason is not None
    return received.messages, received.reason


def recording_closes(ended: list[float]) -> Callable[[WebSocketConnection], Awaitable[None]]:
    """A handler that reads until closed and records when (the server's view of it)."""

    async def handler(conn: WebSocketConnection) -> None:
        try:
            await read_forever(conn)
        except ConnectionClosed:
            ended.append(trio.current_time())
            raise

    return handler


async def broadcast_until_dropped(server: WebSocketServer, connections: int) -> list[int]:
    """Broadcast m0, m1, ... until one fewer connection takes one; then 3 more."""
    counts: list[int] = []
    for n in range(10_000):
        counts.append(await server.broadcast(f"m{n}"))
        if counts[-1] < connections:
            break
    for n in range(len(counts), len(counts) + 3):
        counts.append(await server.broadcast(f"m{n}"))
    return counts


def slow_consumer(why: str, setting: str) -> str:
    return (
        f"WebSocket client (unnamed socket) is too slow: {why} ({setting}); closing it with"
        " 1008 policy violation"
    )


async def test_a_client_that_stops_reading_is_dropped_with_1008_once_its_queue_is_full(
    autojump_clock: trio.testing.MockClock,
    listener: SocketPairListener,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Issue 10, item 7: broadcast() waited, without a limit, for a client that did not
    # read; each note's broadcast pinned an HTTP request of the demo.
    caplog.set_level(logging.INFO, logger="trio_supervise")
    ended: list[float] = []
    server = WebSocketServer(recording_closes(ended), port=0)  # broadcast_queue=32
    spec = SupervisorSpec("app", [server.child_spec()])
    reader = Received()
    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery, supervisor_tree(spec):
            await nursery.start(pair_reader, listener, reader)
            async with open_pair_client(listener, takes=0) as stalled:
                await trio.testing.wait_all_tasks_blocked()
                assert len(server.connections) == 2
                start = trio.current_time()
                counts = await broadcast_until_dropped(server, 2)
                # Its socket full, the stalled client's queue filled: m{dropped} found no
                # room, and broadcast() did not wait for that client.
                dropped = counts.index(1)
                assert counts == [2] * dropped + [1] * 4
                assert dropped > 32
                assert trio.current_time() == start
                assert len(server.connections) == 1
                [warning] = records(caplog, "WEBSOCKET_SLOW_CONSUMER")
                assert (warning.levelno, warning.getMessage()) == (
                    logging.WARNING,
                    slow_consumer("32 broadcast messages queued", "broadcast_queue=32"),
                )
                # Reading again within close_timeout, it gets every message written to
                # its socket, the last one whole, then the close; the 32 queued are not
                # sent.
                await trio.sleep(1.0)
                messages, reason = await read_until_closed(stalled)
                assert messages == [f"m{n}" for n in range(dropped - 32)]
                assert (reason.code, reason.reason) == (
                    POLICY_VIOLATION,
                    "too slow: 32 broadcast messages queued",
                )
                assert ended == [start + 1.0]
    assert len(records(caplog, "WEBSOCKET_SLOW_CONSUMER")) == 1
    assert records(caplog, "WEBSOCKET_CLOSE_TIMEOUT") == []
    # The other client got every message, in order, then the goodbye.
    assert reader.messages == [*(f"m{n}" for n in range(len(counts))), NOTICE]
    assert reader.reason is not None
    assert reader.reason.code == GOING_AWAY


async def test_a_dropped_client_that_does_not_read_is_cut_off_after_close_timeout(
    autojump_clock: trio.testing.MockClock, listener: SocketPairListener
) -> None:
    ended: list[float] = []

    async def idle_until_cancelled(conn: WebSocketConnection) -> None:
        try:
            await trio.sleep_forever()
        finally:
            ended.append(trio.current_time())

    server = WebSocketServer(idle_until_cancelled, port=0, broadcast_timeout=5.0, close_timeout=3.0)
    spec = SupervisorSpec("app", [server.child_spec()])
    with trio.fail_after(FAIL_SAFE):
        async with supervisor_tree(spec), open_pair_client(listener, takes=0) as stalled:
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            # It holds m0; BIG fills its socket, so the close frame cannot follow.
            assert [await server.broadcast("m0"), await server.broadcast(BIG)] == [1, 1]
            await trio.sleep(20.0)
            messages, reason = await read_until_closed(stalled)
    # Dropped at 5 s, its stream closed at the close's deadline, 3 s later, and then its
    # handler, which never touches the connection, cancelled. The client reads what was
    # written, part of BIG, and no close frame (1006).
    assert ended == [start + 8.0]
    assert messages == ["m0"]
    assert reason.code == 1006


async def test_a_message_not_sent_within_broadcast_timeout_drops_the_client(
    autojump_clock: trio.testing.MockClock,
    listener: SocketPairListener,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_supervise")
    ended: list[float] = []
    server = WebSocketServer(recording_closes(ended), port=0, broadcast_timeout=5.0)
    spec = SupervisorSpec("app", [server.child_spec()])
    with trio.fail_after(FAIL_SAFE):
        async with supervisor_tree(spec), open_pair_client(listener, takes=0) as stalled:
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            assert [await server.broadcast("m0"), await server.broadcast(BIG)] == [1, 1]
            await trio.sleep_until(start + 4.999)
            await trio.testing.wait_all_tasks_blocked()
            assert len(server.connections) == 1
            assert records(caplog, "WEBSOCKET_SLOW_CONSUMER") == []
            await trio.sleep_until(start + 5.0)
            await trio.testing.wait_all_tasks_blocked()
            assert len(server.connections) == 0
            [warning] = records(caplog, "WEBSOCKET_SLOW_CONSUMER")
            assert warning.getMessage() == slow_consumer(
                "a message took over 5s to send", "broadcast_timeout=5"
            )
            assert await server.broadcast("m2") == 0
            await trio.sleep(1.0)
            # The message that was being written is not cut: it comes whole, then the close.
            messages, reason = await read_until_closed(stalled)
    assert messages == ["m0", BIG]
    assert (reason.code, reason.reason) == (
        POLICY_VIOLATION,
        "too slow: a message took over 5s to send",
    )
    assert ended == [start + 6.0]


async def test_a_socket_that_fills_up_while_a_broadcast_waits_is_looked_at_again(
    autojump_clock: trio.testing.MockClock,
    listener: SocketPairListener,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The race that no test can schedule: the sender looks at the socket while its send
    # is still being written, finds room, and the send then fills the socket. Stood in for
    # by a first look that finds room although there is none.
    looks: list[bool] = []
    real_has_room = websocket_module._has_room

    def has_room_first(sock: trio.socket.SocketType) -> bool:
        looks.append(real_has_room(sock))
        return len(looks) == 1 or looks[-1]

    monkeypatch.setattr(websocket_module, "_has_room", has_room_first)
    server = WebSocketServer(read_forever, port=0, broadcast_queue=1)
    spec = SupervisorSpec("app", [server.child_spec()])
    with trio.fail_after(FAIL_SAFE):
        async with supervisor_tree(spec), open_pair_client(listener, takes=0):
            await trio.testing.wait_all_tasks_blocked()
            # m0 is held by the client, BIG fills its socket, m1 fills its queue.
            for message in ["m0", BIG, "m1"]:
                assert await server.broadcast(message) == 1
                await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            assert await server.broadcast("m2") == 0
            assert trio.current_time() == start + websocket_module._RECHECK
    assert looks == [False, False]


async def open_pair_mute_client(listener: SocketPairListener) -> trio.SocketStream:
    """A raw client that completes the opening handshake and reads nothing more."""
    stream = listener.connect()
    await stream.send_all(
        f"GET /ws HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += await stream.receive_some(1)  # not a byte past the response
    assert response.startswith(b"HTTP/1.1 101 "), response
    return stream


async def receive_text_frame(stream: trio.SocketStream) -> str:
    """One unmasked, unfragmented server text frame (RFC 6455 §5.2)."""
    first, length = await receive_exactly(stream, 2)
    assert (first, length & 0x80) == (0x81, 0)
    if length == 126:
        length = int.from_bytes(await receive_exactly(stream, 2), "big")
    elif length == 127:
        length = int.from_bytes(await receive_exactly(stream, 8), "big")
    return (await receive_exactly(stream, length)).decode()


async def test_the_greeting_goes_first_and_a_client_that_takes_no_greeting_is_dropped(
    autojump_clock: trio.testing.MockClock, listener: SocketPairListener
) -> None:
    handled: list[WebSocketConnection] = []

    async def handler(conn: WebSocketConnection) -> None:
        handled.append(conn)
        await read_forever(conn)

    # A greeting larger than the socket buffers: it is still being written when the
    # broadcasts come.
    server = WebSocketServer(handler, port=0, greeting=BIG, broadcast_timeout=2.0)
    spec = SupervisorSpec("app", [server.child_spec()])
    with trio.fail_after(FAIL_SAFE):
        async with supervisor_tree(spec):
            async with await open_pair_mute_client(listener) as late_reader:
                await trio.testing.wait_all_tasks_blocked()
                assert [await server.broadcast("m0"), await server.broadcast("m1")] == [1, 1]
                assert handled == []  # not before the greeting is out
                assert [await receive_text_frame(late_reader) for _ in range(3)] == [
                    BIG,
                    "m0",
                    "m1",
                ]
                await trio.testing.wait_all_tasks_blocked()
                assert len(handled) == 1
            # One that never takes its greeting is dropped at broadcast_timeout, and its
            # handler never runs.
            async with await open_pair_mute_client(listener):
                await trio.testing.wait_all_tasks_blocked()
                start = trio.current_time()
                assert len(server.connections) == 1
                await trio.sleep_until(start + 2.0)
                await trio.testing.wait_all_tasks_blocked()
                assert len(server.connections) == 0
                assert len(handled) == 1


async def test_each_connection_gets_its_broadcasts_in_order_at_its_own_pace(
    autojump_clock: trio.testing.MockClock, listener: SocketPairListener
) -> None:
    server = WebSocketServer(read_forever, port=0, greeting=GREETING, broadcast_queue=8)
    spec = SupervisorSpec("app", [server.child_spec()])
    fast, slow = Received(), Received()
    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery, supervisor_tree(spec):
            await nursery.start(pair_reader, listener, fast)
            # Takes one message every 2 s: each is written within broadcast_timeout, and
            # what waits fits in its queue.
            await nursery.start(functools.partial(pair_reader, every=2.0), listener, slow)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            assert [await server.broadcast(f"m{n}") for n in range(8)] == [2] * 8
            assert trio.current_time() == start
            await trio.sleep_until(start + 20.0)
            assert len(server.connections) == 2
    expected = [GREETING, *(f"m{n}" for n in range(8)), NOTICE]
    assert fast.messages == expected
    assert slow.messages == expected
    assert slow.reason is not None
    assert slow.reason.code == GOING_AWAY


async def test_a_burst_of_concurrent_broadcasts_drops_no_client_that_reads(
    autojump_clock: trio.testing.MockClock, listener: SocketPairListener
) -> None:
    # Four tasks broadcasting in a loop outrun the connections' tasks, which need a few
    # scheduling rounds per message: the queues (32) fill up. broadcast() then waits for
    # those tasks, whose clients read, instead of dropping the clients.
    server = WebSocketServer(read_forever, port=0)
    spec = SupervisorSpec("app", [server.child_spec()])
    clients = [Received() for _ in range(3)]
    counts: list[int] = []

    async def broadcaster(name: str) -> None:
        for n in range(250):
            counts.append(await server.broadcast(f"{name}{n}"))

    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery, supervisor_tree(spec):
            for received in clients:
                await nursery.start(pair_reader, listener, received)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            async with trio.open_nursery() as broadcasters:
                for name in "abcd":
                    broadcasters.start_soon(broadcaster, name)
            assert trio.current_time() == start
            await trio.testing.wait_all_tasks_blocked()
    assert counts == [3] * 1000
    for received in clients:
        assert len(received.messages) == 1001
        assert received.messages[-1] == NOTICE
        # Each task's messages in its order; tasks interleave.
        for name in "abcd":
            mine = [m for m in received.messages if isinstance(m, str) and m[0] == name]
            assert mine == [f"{name}{n}" for n in range(250)]
        assert received.messages[:4] != ["a0", "a1", "a2", "a3"]
        assert received.reason is not None
        assert received.reason.code == GOING_AWAY


async def test_a_cancelled_broadcast_queues_nothing_and_a_queued_one_outlives_its_caller(
    autojump_clock: trio.testing.MockClock, listener: SocketPairListener
) -> None:
    server = WebSocketServer(read_forever, port=0)
    spec = SupervisorSpec("app", [server.child_spec()])
    reader = Received()
    with trio.fail_after(FAIL_SAFE):
        async with (
            trio.open_nursery() as nursery,
            supervisor_tree(spec),
            open_pair_client(listener, takes=0),  # holds the first message, reads no more
        ):
            await nursery.start(pair_reader, listener, reader)
            await trio.testing.wait_all_tasks_blocked()
            with trio.CancelScope() as scope:
                scope.cancel()
                await server.broadcast("never queued")
            assert scope.cancelled_caught
            # Cancelling the caller once it returned takes nothing back: each
            # connection's own task sends what was queued.
            with trio.CancelScope() as scope:
                assert await server.broadcast(BIG) == 2
                assert await server.broadcast("queued too") == 2
                scope.cancel()
                await trio.sleep_forever()
            await trio.testing.wait_all_tasks_blocked()
            assert reader.messages == [BIG, "queued too"]
    assert reader.messages == [BIG, "queued too", NOTICE]


async def test_the_stop_sends_what_is_queued_and_waits_no_longer_than_close_timeout(
    autojump_clock: trio.testing.MockClock,
    listener: SocketPairListener,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_supervise")
    # broadcast_timeout passes during the stop: the goodbye's deadline rules then.
    server = WebSocketServer(read_forever, port=0, close_timeout=3.0, broadcast_timeout=1.0)
    spec = SupervisorSpec("app", [server.child_spec()])
    slow = Received()
    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery, supervisor_tree(spec) as tree:
            recorder = EventRecorder(tree)
            await nursery.start(functools.partial(pair_reader, every=0.5), listener, slow)
            async with open_pair_client(listener, takes=0) as stalled:
                await trio.testing.wait_all_tasks_blocked()
                # The stalled client holds m0; BIG fills its socket; m1..m3 wait.
                for message in ["m0", BIG, "m1", "m2", "m3"]:
                    assert await server.broadcast(message) == 2
                start = trio.current_time()
                await tree.terminate_child("websocket")
                assert trio.current_time() == start + 3.0
                messages, reason = await read_until_closed(stalled)
    # The slow reader got what was queued, then the notice and 1001, in time; the stalled
    # one was cut off at the deadline, in the middle of BIG.
    assert slow.messages == ["m0", BIG, "m1", "m2", "m3", NOTICE]
    assert slow.reason is not None
    assert slow.reason.code == GOING_AWAY
    assert messages == ["m0"]
    assert reason.code == 1006
    assert recorder.of(EventKind.STOP_TIMEOUT) == []
    assert records(caplog, "WEBSOCKET_SLOW_CONSUMER") == []
    [warning] = records(caplog, "WEBSOCKET_CLOSE_TIMEOUT")
    assert warning.getMessage() == (
        "1 WebSocket connection(s) did not finish the close handshake within 3s"
        " (close_timeout) and were aborted: (unnamed socket)"
    )


# ------------------------------------------------------------------------------ handlers


async def test_a_handler_error_closes_only_its_connection_with_1011(
    clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_supervise")
    server = WebSocketServer(echo_or_fail, port=0, greeting=GREETING)
    spec = SupervisorSpec("app", [server.child_spec()])
    with trio.fail_after(FAIL_SAFE):
        async with supervisor_tree(spec) as tree:
            recorder = EventRecorder(tree)
            port = server.port
            async with open_client(port) as bystander, open_client(port) as victim:
                assert await bystander.get_message() == GREETING
                assert await victim.get_message() == GREETING
                await victim.send_message("boom")
                with pytest.raises(ConnectionClosed) as closed:
                    await victim.get_message()
                assert closed.value.reason is not None
                assert (closed.value.reason.code, closed.value.reason.reason) == (
                    INTERNAL_ERROR,
                    "internal error",
                )
                # The server and the other connection go on.
                await bystander.send_message("still there?")
                assert await bystander.get_message() == "still there?"
                await wait_until(lambda: len(server.connections) == 1)
                # A handler that returns closes its connection normally.
                await bystander.send_message("bye")
                with pytest.raises(ConnectionClosed) as closed:
                    await bystander.get_message()
                assert closed.value.reason is not None
                assert closed.value.reason.code == 1000
            await wait_until(lambda: len(server.connections) == 0)
            assert server.accepting
            assert tree.info("websocket").state is ChildState.RUNNING
            assert tree.info("websocket").restarts == 0
            assert recorder.of(EventKind.CRASHED) == []
    [error] = records(caplog, "WEBSOCKET_HANDLER_ERROR")
    assert error.levelno == logging.ERROR
    assert error.getMessage().startswith("WebSocket handler raised for 127.0.0.1:")
    assert error.exc_info is not None
    assert isinstance(error.exc_info[1], RuntimeError)
    assert str(error.exc_info[1]) == "handler failed on purpose"


async def test_a_handler_ending_with_connection_closed_in_a_group_is_not_an_error(
    clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_supervise")
    ended: list[str] = []

    async def pump(conn: WebSocketConnection) -> None:
        # A common shape: a reader and a writer in one nursery; the client's close makes
        # the reader raise ConnectionClosed, which the nursery wraps in a group.
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_forever, conn)
                nursery.start_soon(trio.sleep_forever)
        finally:
            ended.append("pump")

    server = WebSocketServer(pump, port=0)
    spec = SupervisorSpec("app", [server.child_spec()])
    with trio.fail_after(FAIL_SAFE):
        async with supervisor_tree(spec):
            async with open_client(server.port) as ws:
                await wait_until(lambda: len(server.connections) == 1)
                await ws.aclose(1000, "done")
            await wait_until(lambda: len(server.connections) == 0)
    assert ended == ["pump"]
    assert records(caplog, "WEBSOCKET_HANDLER_ERROR") == []
    assert records(caplog, "WEBSOCKET_CONNECTION_ERROR") == []


async def test_a_handler_failing_while_cancelled_at_stop_does_not_crash_the_child(
    clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_supervise")

    async def fails_on_cancel(conn: WebSocketConnection) -> None:
        # The stop cancels handlers still running after their connection closed; this one
        # then raises next to its nursery's Cancelled: a BaseExceptionGroup of both.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            try:
                await trio.sleep_forever()
            finally:
                raise RuntimeError("cleanup failed")

    server = WebSocketServer(fails_on_cancel, port=0)
    spec = SupervisorSpec("app", [server.child_spec()])
    received = Received()
    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery, supervisor_tree(spec) as tree:
            recorder = EventRecorder(tree)
            await nursery.start(ungreeted_client, server.port, received)
    assert received.reason is not None
    assert received.reason.code == GOING_AWAY
    recorder.assert_exact((EventKind.TERMINATED, "websocket"), path="websocket")
    report = tree.shutdown_report
    assert report is not None
    assert report.ok, report.format()
    [error] = records(caplog, "WEBSOCKET_CONNECTION_ERROR")
    assert (error.levelno, error.getMessage()) == (logging.ERROR, "WebSocket connection failed")
    assert error.exc_info is not None
    assert pytest.RaisesGroup(
        pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match=r"^cleanup failed$"))
    ).matches(error.exc_info[1])


async def test_wrong_path_gets_404_and_a_query_string_is_ignored(
    clock: trio.testing.MockClock,
) -> None:
    server = WebSocketServer(read_forever, port=0, path="/live/ws", greeting=GREETING)
    spec = SupervisorSpec("app", [server.child_spec()])
    with trio.fail_after(FAIL_SAFE):
        async with supervisor_tree(spec):
            assert await refused_status(server.port, "/ws") == 404
            assert await refused_status(server.port, "/live/ws/more") == 404
            async with open_client(server.port, "/live/ws?token=abc") as ws:
                assert await ws.get_message() == GREETING
                assert ws.path == "/live/ws?token=abc"


async def test_a_client_that_never_completes_the_handshake_is_dropped(
    clock: trio.testing.MockClock,
) -> None:
    server = WebSocketServer(read_forever, port=0)
    spec = SupervisorSpec("app", [server.child_spec()])
    with trio.fail_after(FAIL_SAFE):
        async with supervisor_tree(spec):
            async with await trio.open_tcp_stream(HOST, server.port) as stalled:
                await stalled.send_all(b"GET /ws HTTP/1.1\r\n")  # and nothing more
                # Accepted after the stalled one, this client is registered only once the
                # stalled one's task has run and set its handshake deadline.
                async with open_client(server.port):
                    await wait_until(lambda: len(server.connections) == 1)
                clock.jump(HANDSHAKE_TIMEOUT)
                assert await stalled.receive_some() == b""
            await wait_until(lambda: len(server.connections) == 0)


# ---------------------------------------------------------------------- restart and crash


async def test_restart_child_says_goodbye_and_starts_with_an_empty_registry(
    clock: trio.testing.MockClock,
) -> None:
    server = WebSocketServer(read_forever, port=0, greeting=GREETING)
    spec = SupervisorSpec("app", [server.child_spec()])
    old = Received()
    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery, supervisor_tree(spec) as tree:
            await nursery.start(reading_client, server.port, old)
            old_view = server.connections
            assert len(old_view) == 1
            await tree.restart_child("websocket")
            assert old.messages == [GREETING, NOTICE]
            assert old.reason is not None
            assert old.reason.code == GOING_AWAY
            assert len(old_view) == 0
            assert len(server.connections) == 0
            assert server.accepting
            # The new run listens (with port=0, on a port picked anew).
            async with open_client(server.port) as ws:
                assert await ws.get_message() == GREETING
                assert len(server.connections) == 1
            assert tree.info("websocket").restarts == 1


async def test_a_crash_of_the_accept_loop_restarts_the_child_with_a_fresh_registry(
    clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_serve_listeners = trio.serve_listeners
    crash = trio.Event()
    calls: list[int] = []

    async def serve_then_fail_once(
        handler: Callable[[trio.SocketStream], Any],
        listeners: list[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[list[trio.SocketListener]],
    ) -> None:
        calls.append(len(calls))
        if len(calls) > 1:
            await real_serve_listeners(handler, listeners, task_status=task_status)
            return
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(real_serve_listeners, handler, listeners))
            task_status.started(listeners)
            await crash.wait()
            raise OSError(errno.EBADF, "accept failed")

    monkeypatch.setattr(trio, "serve_listeners", serve_then_fail_once)
    server = WebSocketServer(read_forever, port=0, greeting=GREETING)
    spec = SupervisorSpec("app", [server.child_spec()], backoff=None)
    dropped = Received()
    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery, supervisor_tree(spec) as tree:
            recorder = EventRecorder(tree)
            await nursery.start(reading_client, server.port, dropped)
            assert len(server.connections) == 1
            crash.set()
            restarted = await recorder.wait_for(EventKind.RESTARTED, "websocket")
            assert restarted.restarts == 1
            [crashed] = recorder.of(EventKind.CRASHED, "websocket")
            assert pytest.RaisesGroup(
                pytest.RaisesExc(OSError, match=r"^\[Errno 9\] accept failed$")
            ).matches(crashed.error)
            # A crash drops the connections at once (no close handshake, as a crashed
            # process breaks its links); the new run has its own, empty registry.
            await dropped.closed.wait()
            assert dropped.reason is not None
            assert dropped.reason.code == 1006
            assert len(server.connections) == 0
            async with open_client(server.port) as ws:
                assert await ws.get_message() == GREETING
                assert len(server.connections) == 1
    assert calls == [0, 1]


async def test_a_restart_during_the_shutdown_keeps_refusing_and_a_new_tree_accepts(
    clock: trio.testing.MockClock,
) -> None:
    server = WebSocketServer(read_forever, port=0)
    spec = SupervisorSpec("app", [server.child_spec()])
    statuses: list[int] = []

    async def restart_then_probe() -> None:
        # A crash-restart between the STOP_ACCEPTING and DRAIN bands, stood in for by
        # restart_child from a hook of band STOP_ACCEPTING once the server refuses.
        tree = current_tree()
        await stopped_accepting.wait()
        await tree.restart_child("websocket")
        statuses.append(await refused_status(server.port))

    stopped_accepting = trio.Event()
    hook = server.shutdown_hook()

    async def stop_accepting_then_signal() -> None:
        await hook.fn()
        stopped_accepting.set()

    hooks = [
        ShutdownHook("stop accepting", stop_accepting_then_signal, priority=Band.STOP_ACCEPTING),
        ShutdownHook("test: restart", restart_then_probe, priority=Band.STOP_ACCEPTING),
    ]
    with trio.fail_after(FAIL_SAFE):
        async with supervisor_tree(spec, hooks=hooks):
            pass
        assert statuses == [503]
        # The same server object in a new tree accepts again.
        async with supervisor_tree(spec):
            assert server.accepting
            async with open_client(server.port):
                assert len(server.connections) == 1


# ---------------------------------------------------------------------------- bad inputs


async def _handler(conn: WebSocketConnection) -> None:
    pass


def _not_async(conn: WebSocketConnection) -> None:
    pass


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"handler": _not_async},
            r"^WebSocketServer: handler must be an async function \(async def\)",
        ),
        ({"host": ""}, r"^WebSocketServer: host must be a non-empty str \(got ''\); use '0\.0"),
        ({"port": -1}, r"^WebSocketServer: port must be within \[0, 65535\] \(got -1\)"),
        ({"port": 65536}, r"^WebSocketServer: port must be within \[0, 65535\] \(got 65536\)"),
        ({"port": True}, r"^WebSocketServer: port must be an int within \[0, 65535\] \(got True\)"),
        ({"port": "80"}, r"^WebSocketServer: port must be an int within \[0, 65535\] \(got '80'\)"),
        ({"path": "ws"}, r"^WebSocketServer: path must be a str starting with '/' \(got 'ws'\)$"),
        ({"path": "/ws?x=1"}, r"^WebSocketServer: path must be a bare URL path, without query"),
        ({"path": "/a b"}, r"^WebSocketServer: path must be a bare URL path"),
        ({"drain": 5.0}, r"^WebSocketServer: drain must be a DrainDelay or None \(got 5\.0\)$"),
        ({"notice": b"x"}, r"^WebSocketServer: notice must be a str or None \(got b'x'\)$"),
        ({"greeting": 1}, r"^WebSocketServer: greeting must be a str or None \(got 1\)$"),
        ({"close_timeout": 0}, r"^WebSocketServer: close_timeout must be > 0 and finite \(got 0\)"),
        ({"close_timeout": -1.0}, r"^WebSocketServer: close_timeout must be > 0 and finite"),
        ({"close_timeout": float("nan")}, r"^WebSocketServer: close_timeout must be > 0 and"),
        ({"close_timeout": float("inf")}, r"^WebSocketServer: close_timeout must be > 0 and"),
        ({"close_timeout": None}, r"^WebSocketServer: close_timeout must be a finite number > 0"),
        (
            {"broadcast_queue": 0},
            r"^WebSocketServer: broadcast_queue must be >= 1 \(got 0\); it is how many broadcast"
            r" messages may wait for one client$",
        ),
        ({"broadcast_queue": -1}, r"^WebSocketServer: broadcast_queue must be >= 1 \(got -1\)"),
        ({"broadcast_queue": 2.0}, r"^WebSocketServer: broadcast_queue must be an int >= 1"),
        ({"broadcast_queue": True}, r"^WebSocketServer: broadcast_queue must be an int >= 1"),
        ({"broadcast_queue": None}, r"^WebSocketServer: broadcast_queue must be an int >= 1"),
        ({"broadcast_queue": math.inf}, r"^WebSocketServer: broadcast_queue must be an int"),
        (
            {"broadcast_timeout": 0},
            r"^WebSocketServer: broadcast_timeout must be > 0 and finite \(got 0\); it is how"
            r" long one broadcast message may take to reach a client's socket$",
        ),
        ({"broadcast_timeout": -2.0}, r"^WebSocketServer: broadcast_timeout must be > 0 and"),
        ({"broadcast_timeout": math.nan}, r"^WebSocketServer: broadcast_timeout must be > 0 and"),
        ({"broadcast_timeout": math.inf}, r"^WebSocketServer: broadcast_timeout must be > 0 and"),
        ({"broadcast_timeout": True}, r"^WebSocketServer: broadcast_timeout must be a finite"),
        ({"broadcast_timeout": "5"}, r"^WebSocketServer: broadcast_timeout must be a finite"),
    ],
)
def test_bad_constructor_arguments_raise_spec_error(kwargs: dict[str, Any], message: str) -> None:
    handler = kwargs.pop("handler", _handler)
    with pytest.raises(SpecError, match=message):
        WebSocketServer(handler, **kwargs)


def test_bad_child_spec_and_hook_arguments_raise_spec_error() -> None:
    server = WebSocketServer(_handler, close_timeout=2.0)
    with pytest.raises(
        SpecError,
        match=(
            r"^WebSocketServer child 'websocket': shutdown_timeout must be > close_timeout"
            r" \(2\) or None \(got 2\.0\); a shorter one cuts"
        ),
    ):
        server.child_spec(shutdown_timeout=2.0)
    with pytest.raises(SpecError, match=r"^WebSocketServer child 'ws': .* \(got nan\)"):
        server.child_spec("ws", shutdown_timeout=float("nan"))
    with pytest.raises(
        SpecError, match=r"^ChildSpec 'ws': shutdown_timeout must be a number >= 0 or None"
    ):
        server.child_spec("ws", shutdown_timeout="5")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match=r"^ChildSpec 'a/b': name must not contain '/'"):
        server.child_spec("a/b")
    with pytest.raises(SpecError, match=r"^ShutdownHook: name must be a non-empty string"):
        server.shutdown_hook("")


def test_child_spec_and_hook_defaults() -> None:
    server = WebSocketServer(_handler, close_timeout=2.0)
    spec = server.child_spec()
    assert spec.name == "websocket"
    assert spec.is_service
    assert spec.shutdown_timeout is None
    assert server.child_spec(shutdown_timeout=10).shutdown_timeout == 10
    hook = server.shutdown_hook()
    assert (hook.name, hook.priority, hook.timeout) == (
        "websocket: stop accepting",
        Band.STOP_ACCEPTING,
        None,
    )
    # Before the first start.
    with pytest.raises(
        RuntimeError,
        match=r"^WebSocketServer for 127\.0\.0\.1:8001 has not listened yet; its port is known",
    ):
        _ = server.port
    assert len(server.connections) == 0
    assert not server.accepting
    assert repr(server) == "<WebSocketServer ws://127.0.0.1:8001/ws 0 connection(s)>"


async def test_the_hook_of_a_server_that_never_started_skips_itself(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_supervise")
    server = WebSocketServer(read_forever, port=0)
    spec = SupervisorSpec("app", [ChildSpec("db", fail_start()), server.child_spec()])
    assert await serve(spec, hooks=[server.shutdown_hook()]) == 1
    finished = [r.getMessage() for r in caplog.records if getattr(r, "kind", "") == "HOOK_FINISHED"]
    assert finished[0] == (
        "HOOK_FINISHED websocket: stop accepting: skipped in 0.000s: the WebSocket server never"
        " started"
    )


def test_without_trio_websocket_the_import_says_how_to_install_it() -> None:
    # Issue 10, item 12: a bare ModuleNotFoundError, where the other extras explain.
    message = import_message_without("trio_supervise.integrations.websocket", "trio_websocket")
    assert message == (
        "trio_supervise.integrations.websocket needs trio-websocket, which is not installed;"
        " install the extra: pip install 'trio-supervise[websocket]'\n"
    )
