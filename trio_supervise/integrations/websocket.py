"""A supervised WebSocket server (trio-websocket) that says goodbye with 1001 at shutdown.

Needs the ``websocket`` extra (``pip install 'trio-supervise[websocket]'``).

``WebSocketServer`` serves one path over trio-websocket and keeps a registry of its open
connections. It runs as a service child of a supervision tree (``child_spec()``) and takes
part in the graceful shutdown in two steps:

1. band ``STOP_ACCEPTING`` (``shutdown_hook()``): after the optional Kubernetes drain delay,
   new handshakes are refused with HTTP 503; the open connections go on;
2. band ``DRAIN`` (the supervisor stops the child, which calls ``stop()``): every open
   connection is sent the ``notice`` message and closed with code 1001 "going away", all
   at once and within ``close_timeout``; then the listener closes.

A client thus reads the notice, then a close with code 1001, never a bare TCP close (1006).

``broadcast()`` never waits for a client: it puts the message in each connection's bounded
queue, which that connection's own task sends in order. A client that falls behind by a
full queue (``broadcast_queue``) and a full socket buffer, or does not take a message
within ``broadcast_timeout``, is closed with 1008 "policy violation", so that it holds
neither its broadcaster (an HTTP request, say) nor the server's memory.

Example::

    from trio_websocket import ConnectionClosed, WebSocketConnection

    async def echo(conn: WebSocketConnection) -> None:
        while True:
            await conn.send_message(await conn.get_message())

    drain = DrainDelay(5)
    server = WebSocketServer(echo, host="0.0.0.0", port=8001, drain=drain)
    spec = SupervisorSpec("app", [server.child_spec()])
    async with supervisor_tree(spec, hooks=[drain.hook, server.shutdown_hook()]) as tree:
        ...
"""

from __future__ import annotations

import contextlib
import logging
import math
import select
import sys
import urllib.parse
from collections.abc import Awaitable, Callable, KeysView
from typing import Final, final

import attrs
import trio

from .._extras import missing_extra

try:
    import trio_websocket
    from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest
except ImportError as exc:
    raise missing_extra(
        "trio_supervise.integrations.websocket", "trio-websocket", "websocket"
    ) from exc

from .. import _checks
from .._context import current_child_path
from .._errors import SpecError
from .._events import log
from .._shutdown import Band, DrainDelay, NothingToDo, ShutdownHook
from .._spec import ChildSpec
from .._tree import current_tree

__all__ = [
    "GOING_AWAY",
    "HANDSHAKE_TIMEOUT",
    "INTERNAL_ERROR",
    "POLICY_VIOLATION",
    "ConnectionHandler",
    "WebSocketServer",
]

logger = logging.getLogger("trio_supervise.websocket")

#: The close code sent to every client at shutdown (RFC 6455 §7.4.1, "going away").
GOING_AWAY: Final = 1001
#: The close code sent when the connection handler raised (RFC 6455 §7.4.1).
INTERNAL_ERROR: Final = 1011
#: The close code sent to a client too slow to take its broadcasts (RFC 6455 §7.4.1).
POLICY_VIOLATION: Final = 1008
_NORMAL: Final = 1000

#: Seconds a client may take from the TCP connect to a complete opening handshake.
HANDSHAKE_TIMEOUT: Final = 10.0
# While a broadcast waits for room in a connection's queue, how often its watchdog looks
# again whether the client's socket has filled up (a long message being written).
_RECHECK: Final = 0.01
_PORT_HINT: Final = "; 0 picks a free port"

ConnectionHandler = Callable[[WebSocketConnection], Awaitable[object]]


def _is_peer_gone(exc: BaseException) -> bool:
    """True for ConnectionClosed, alone or as the only kind in an exception group."""
    if isinstance(exc, ConnectionClosed):
        return True
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(ConnectionClosed)
        return rest is None
    return False


def _check_optional_str(field: str, value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise SpecError(f"WebSocketServer: {field} must be a str or None (got {value!r})")


def _check_path(path: object) -> None:
    if not isinstance(path, str) or not path.startswith("/"):
        raise SpecError(f"WebSocketServer: path must be a str starting with '/' (got {path!r})")
    if any(c in path for c in "?# ") or not path.isprintable():
        raise SpecError(
            f"WebSocketServer: path must be a bare URL path, without query, fragment, spaces"
            f" or control characters (got {path!r}); e.g. path='/ws'"
        )


@final
@attrs.define(eq=False)
class _Connection:
    """One accepted connection of one run: its queue of broadcasts, and who is closing it."""

    ws: WebSocketConnection
    # "address:port" of the client, read at accept (the socket may be gone when logged).
    peer: str
    # Its socket, to see whether the client takes what is written (room to write).
    socket: trio.socket.SocketType
    # The connection's own nursery (its stream's task): trio-websocket's reader, the
    # writer task (``_send_queued``), the close of a slow consumer. Open while registered.
    nursery: trio.Nursery
    # The broadcasts waiting for the writer, at most `broadcast_queue`. broadcast() puts
    # into it without waiting for the client; the goodbye closes it, so that nothing is
    # queued once the server stops and what was queued before still goes before the
    # notice.
    outbox: trio.MemorySendChannel[str]
    # Its other end, read by the writer alone; closed when the writer ends or the client
    # is dropped (broadcasts waiting for room then give up).
    queued: trio.MemoryReceiveChannel[str]
    # Set once the writer sent the greeting (if any), or ended without: the handler starts
    # only then, so that the greeting is the connection's first message.
    greeted: trio.Event = attrs.Factory(trio.Event)
    # Set when the writer ended: its queue closed and sent, or the connection closed or
    # dropped.
    writer_done: trio.Event = attrs.Factory(trio.Event)
    # True once dropped as a slow consumer (logged then, and out of the registry).
    dropped: bool = False
    # Wraps the handler; cancelled once a drop's close is done, as the connection is over.
    handler_scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    # When the message being written began to be; None while the writer waits for one.
    sending_since: float | None = None
    # When the watchdog (``_watch``) wakes by itself next; inf while there is no message
    # being written to watch.
    watch_until: float = math.inf
    # Wakes the watchdog before ``watch_until``: set by the writer when it begins to
    # write while ``watch_until`` is inf, and by a broadcast that waits for room. A fresh
    # one for each wait.
    alarm: trio.Event = attrs.Factory(trio.Event)
    # True once some task called aclose() on it; later closers wait for `closed` instead,
    # so that the connection's own task never tears it down under stop()'s close handshake.
    closing: bool = False
    # Set when that aclose() returned: the close handshake finished or was cut short.
    closed: trio.Event = attrs.Factory(trio.Event)
    # True when the close handshake was cut short by its deadline (the TCP stream was
    # then closed without the peer's answer).
    aborted: bool = False


@final
class _ServerRun:
    """One run of a ``WebSocketServer``: what ``ChildSpec.service`` starts and stops.

    A fresh one is made on every (re)start, so a restart begins with an empty registry.
    """

    def __init__(self, server: WebSocketServer) -> None:
        self._server = server
        # Accepted connections whose task has not yet ended, in accept order.
        self.registry: dict[WebSocketConnection, _Connection] = {}
        # The bound port; None until the listener is open.
        self.port: int | None = None
        # True from stop() on: handshakes get 503, broadcast() queues nothing, and a
        # connection whose handler returns is closed with 1001 too.
        self.stopping = False
        # The deadline of stop()'s close handshakes; set together with `stopping`.
        self.stop_deadline = math.inf
        # stop()'s nursery of goodbyes while it runs (set together with `stopping`), else
        # None; a connection accepted once `stopping` is set starts its goodbye in it.
        self._goodbyes: trio.Nursery | None = None
        # The connections stop() said goodbye to, to report those it had to abort.
        self._said_goodbye: list[_Connection] = []
        # One event per handshake between the `accepting` check and its registration,
        # set when it is registered or failed; stop() waits for them.
        self._handshakes: set[trio.Event] = set()
        # Wraps all of run(); stop() cancels it to end the accept loop and every
        # connection task (the handlers still running after their connection closed).
        self._scope = trio.CancelScope()
        # Set when run() has returned or raised, its listeners closed.
        self._done = trio.Event()
        self._path = ""

    @property
    def accepting(self) -> bool:
        return self.port is not None and not self.stopping and not self._server._refusing

    async def run(
        self,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        server = self._server
        self._path = current_child_path()
        if not _tree_shutting_down():
            # A restart in the middle of a shutdown keeps refusing; a new tree starts afresh.
            server._refusing = False
        try:
            with self._scope:
                listeners = await trio.open_tcp_listeners(server._port, host=server._host)
                try:
                    self.port = server._bound_port = listeners[0].socket.getsockname()[1]
                    log(
                        logging.INFO,
                        "WebSocket server listening on ws://%s:%d%s",
                        server._host,
                        self.port,
                        server._ws_path,
                        path=self._path,
                        kind="WEBSOCKET_LISTENING",
                        to=logger,
                    )
                    # serve_listeners reports started once it accepts; it closes the
                    # listeners when it ends, and each accepted stream (forcefully) when
                    # its connection task ends. A failing accept() is a crash of the child.
                    await trio.serve_listeners(
                        self._serve_stream, listeners, task_status=task_status
                    )
                finally:
                    for listener in listeners:
                        await trio.aclose_forcefully(listener)
        finally:
            self._done.set()

    async def stop(self) -> None:
        """Refuse handshakes, say goodbye to every connection with 1001, close the listener."""
        server = self._server
        deadline = trio.current_time() + server._close_timeout
        connections = list(self.registry.values())
        log(
            logging.INFO,
            "WebSocket server stopping: closing %d connection(s) with 1001 going away",
            len(connections),
            path=self._path,
            kind="WEBSOCKET_STOPPING",
            to=logger,
        )
        async with trio.open_nursery() as nursery:
            self.stopping, self.stop_deadline, self._goodbyes = True, deadline, nursery
            for connection in connections:
                nursery.start_soon(self._goodbye, connection, deadline)
            # Handshakes that passed the check before `stopping` register soon and start
            # their goodbye in this nursery, so that they get the notice and 1001 too.
            with trio.move_on_at(deadline):
                for handshake in list(self._handshakes):
                    await handshake.wait()
        self._goodbyes = None
        aborted = [
            connection
            for connection in self._said_goodbye
            if connection.aborted or not connection.closed.is_set()
        ]
        if aborted:
            log(
                logging.WARNING,
                "%d WebSocket connection(s) did not finish the close handshake within %gs"
                " (close_timeout) and were aborted: %s",
                len(aborted),
                server._close_timeout,
                ", ".join(connection.peer for connection in aborted),
                path=self._path,
                kind="WEBSOCKET_CLOSE_TIMEOUT",
                to=logger,
            )
        self._scope.cancel(reason="WebSocket server stopped")
        await self._done.wait()

    async def _goodbye(self, connection: _Connection, deadline: float) -> None:
        self._said_goodbye.append(connection)
        # The broadcasts queued before the stop go first; a writer stuck on a client that
        # does not read holds this only until the deadline.
        connection.outbox.close()
        with trio.move_on_at(deadline):
            await connection.writer_done.wait()
        notice = self._server._notice
        if notice is not None:
            # A closed or broken one raises ConnectionClosed; _close() below then waits
            # for the task closing it, or returns at once.
            with trio.move_on_at(deadline), contextlib.suppress(ConnectionClosed):
                await connection.ws.send_message(notice)
        # Past the deadline (a notice stuck on a full TCP buffer), this aborts at once.
        await self._close(connection, GOING_AWAY, "going away", deadline)

    async def _close(
        self, connection: _Connection, code: int, reason: str | None, deadline: float
    ) -> None:
        """Close with ``code`` by ``deadline``, or wait for the task already closing it."""
        if connection.closing:
            with trio.move_on_at(deadline):
                await connection.closed.wait()
            return
        connection.closing = True
        try:
            with trio.move_on_at(deadline) as scope:
                # Cut short, aclose() still closes the TCP stream in its finally block.
                await connection.ws.aclose(code, reason)
            connection.aborted = scope.cancelled_caught
        finally:
            connection.closed.set()

    async def _serve_stream(self, stream: trio.SocketStream) -> None:
        # One connection's failure must never end the accept loop and the other connections.
        try:
            async with trio.open_nursery() as nursery:
                await self._serve_connection(nursery, stream)
                nursery.cancel_scope.cancel()  # trio-websocket's reader task, if still reading
        except Exception as exc:
            self._connection_failed(exc)
        except BaseExceptionGroup as group:
            # A cancellation (the run is ending) next to a connection's own error: report
            # the error and let only the cancellation on, or it would crash the run.
            errors, others = group.split(Exception)
            if errors is None or others is None or others.split(trio.Cancelled)[1] is not None:
                raise
            self._connection_failed(errors)
            raise others from None

    def _connection_failed(self, exc: Exception) -> None:
        if _is_peer_gone(exc):
            level, message = logging.DEBUG, "WebSocket client went away during its handshake"
        else:
            level, message = logging.ERROR, "WebSocket connection failed"
        if logger.isEnabledFor(level) and logger.hasHandlers():
            logger.log(
                level,
                message,
                exc_info=exc,
                extra={"path": self._path, "kind": "WEBSOCKET_CONNECTION_ERROR"},
            )

    async def _serve_connection(self, nursery: trio.Nursery, stream: trio.SocketStream) -> None:
        server = self._server
        request: WebSocketRequest | None = None
        with trio.move_on_after(HANDSHAKE_TIMEOUT):
            request = await trio_websocket.wrap_server_stream(nursery, stream)
        if request is None:
            return
        requested = urllib.parse.urlsplit(request.path).path
        if requested != server._ws_path:
            body = f"no WebSocket endpoint at {requested!r}; it is at {server._ws_path!r}"
            await request.reject(404, body=body.encode())
            return
        if not self.accepting:
            await request.reject(503, body=b"the server is shutting down; connect again later")
            return
        handshake = trio.Event()
        self._handshakes.add(handshake)
        try:
            ws = await request.accept()
            outbox, queued = trio.open_memory_channel[str](server._broadcast_queue)
            connection = _Connection(ws, _describe(stream), stream.socket, nursery, outbox, queued)
            self.registry[ws] = connection
            greeting = None if self.stopping else server._greeting
            nursery.start_soon(self._send_queued, connection, greeting)
            if self.stopping:
                # Accepted as stop() began, it waits for this event: no greeting and no
                # handler, just the goodbye, in stop()'s nursery (or here if stop() is
                # already past it).
                if self._goodbyes is not None:
                    self._goodbyes.start_soon(self._goodbye, connection, self.stop_deadline)
                else:
                    await self._goodbye(connection, self.stop_deadline)
        finally:
            self._handshakes.discard(handshake)
            handshake.set()
        try:
            if not self.stopping:
                code, reason = _NORMAL, None
                with connection.handler_scope:
                    code, reason = await self._handle(connection)
                if not self.stopping:
                    deadline = trio.current_time() + server._close_timeout
                    await self._close(connection, code, reason, deadline)
            # Else stop() says goodbye to it (the notice, then 1001): wait for that.
            await connection.closed.wait()
        finally:
            self.registry.pop(ws, None)

    async def _handle(self, connection: _Connection) -> tuple[int, str | None]:
        """Run the user's handler once greeted; return the close code its ending calls for."""
        server = self._server
        ws = connection.ws
        await connection.greeted.wait()
        if connection.dropped or ws.closed is not None:
            # Gone or dropped before the greeting was out: the close is done or under way.
            return _NORMAL, None
        try:
            await server._handler(ws)
        except Exception as exc:
            if _is_peer_gone(exc):
                # The peer closed or vanished: the close is already done.
                return _NORMAL, None
            if logger.isEnabledFor(logging.ERROR) and logger.hasHandlers():
                logger.error(
                    "WebSocket handler raised for %s; closing that connection with 1011",
                    connection.peer,
                    exc_info=exc,
                    extra={"path": self._path, "kind": "WEBSOCKET_HANDLER_ERROR"},
                )
            return INTERNAL_ERROR, "internal error"
        return _NORMAL, None

    # ------------------------------------------------------------------------- broadcasts

    async def broadcast(self, message: str) -> int:
        """Queue ``message`` for every open connection; return for how many it was queued.

        A full queue is waited for only while the connection's writer is behind (a burst),
        never while its client is: its watchdog drops a client whose socket is full as
        soon as a broadcast waits for it (see ``_watch``).
        """
        if self.stopping:
            return 0
        queued = 0
        behind: list[_Connection] = []
        counted: list[_Connection] = []  # those of `behind` it was queued for
        for ws, connection in list(self.registry.items()):
            if ws.closed is not None:
                # Closed by the client or broken; an idle handler would never notice.
                del self.registry[ws]
                continue
            try:
                connection.outbox.send_nowait(message)
            except trio.WouldBlock:
                behind.append(connection)
            except trio.BrokenResourceError:  # its writer ended: the connection is closing
                del self.registry[ws]
            else:
                queued += 1
        # Shielded: the message is queued for all or for none that are open. It waits
        # only for this server's own tasks, each at most broadcast_timeout (then the
        # connection is dropped, which ends the wait); the stop closes the queues. All at
        # once: one scheduling round for many connections, not one each.
        if behind:
            with trio.CancelScope(shield=True):
                async with trio.open_nursery() as nursery:
                    for connection in behind:
                        nursery.start_soon(_queue_when_room, connection, message, counted)
        return queued + len(counted)

    async def _send_queued(self, connection: _Connection, greeting: str | None) -> None:
        """The connection's one writer of server messages: the greeting, then each queued
        broadcast in order, one at a time, watched by ``_watch``."""
        try:
            async with connection.queued, trio.open_nursery() as nursery:
                nursery.start_soon(self._watch, connection)
                try:
                    await self._write_all(connection, greeting)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            connection.greeted.set()
            connection.writer_done.set()

    async def _write_all(self, connection: _Connection, greeting: str | None) -> None:
        if greeting is not None and not await self._write(connection, greeting):
            return
        connection.greeted.set()
        queued = connection.queued
        while True:
            try:
                # No checkpoint when one is queued (the send has its own), so that a busy
                # writer keeps pace with a busy broadcaster.
                message = queued.receive_nowait()
            except trio.WouldBlock:
                try:
                    message = await queued.receive()
                except trio.EndOfChannel:
                    return
            except trio.EndOfChannel:
                return  # the goodbye closed the queue, and all of it was sent
            if not await self._write(connection, message):
                return

    async def _write(self, connection: _Connection, message: str) -> bool:
        """Send ``message``; False if the connection has closed or was dropped.

        Never cut short by a limit: a frame cut in the middle would garble the stream.
        The close frame of a drop follows the whole frame (trio-websocket writes one frame
        at a time), or the stream is closed at the close's deadline, which ends the send.
        """
        if connection.watch_until == math.inf:
            connection.alarm.set()  # the watchdog waits for a send to watch
        connection.sending_since = trio.current_time()
        try:
            await connection.ws.send_message(message)
        except ConnectionClosed:
            # Closed by the client, broken, or closed by the server.
            self.registry.pop(connection.ws, None)
            return False
        finally:
            connection.sending_since = None
        return not connection.dropped

    async def _watch(self, connection: _Connection) -> None:
        """Drop the connection's client as a slow consumer when it does not keep up.

        Two limits, on the message being written:

        * it has taken ``broadcast_timeout``;
        * a broadcast waits for room in the queue and the client's socket buffer is
          (nearly) full as well: it is the client that is behind, not the writer, and the
          broadcast must not wait for it. A socket that fills up after the look (a long
          message being written) is looked at again every ``_RECHECK`` while broadcasts
          wait.

        It sleeps until the current message's deadline, so a busy writer costs it a
        wake-up per ``broadcast_timeout``; the writer (from idle) and a waiting broadcast
        wake it early (``alarm``).
        """
        server = self._server
        timeout = server._broadcast_timeout
        while True:
            now = trio.current_time()
            since = connection.sending_since
            if since is None:
                wake_at = math.inf
            elif now >= since + timeout:
                why = f"a message took over {timeout:g}s to send"
                self._drop_slow(connection, why, f"broadcast_timeout={timeout:g}")
                return
            elif connection.outbox.statistics().tasks_waiting_send:
                if not _has_room(connection.socket):
                    size = server._broadcast_queue
                    why = f"{size} broadcast messages queued"
                    self._drop_slow(connection, why, f"broadcast_queue={size}")
                    return
                wake_at = min(since + timeout, now + _RECHECK)
            else:
                wake_at = since + timeout
            connection.alarm = trio.Event()
            connection.watch_until = wake_at
            with trio.move_on_at(wake_at):
                await connection.alarm.wait()

    def _drop_slow(self, connection: _Connection, why: str, setting: str) -> None:
        """Close a client that does not keep up with its broadcasts with 1008 (once).

        ``why`` is also the close reason the client reads; ``setting`` names the option.
        """
        if connection.dropped or connection.closing or self.stopping:
            # Being closed already; once stopping, the goodbye closes it by its deadline.
            return
        connection.dropped = True
        self.registry.pop(connection.ws, None)
        # Broadcasts waiting for room give up, and nothing more is sent but the close.
        connection.queued.close()
        log(
            logging.WARNING,
            "WebSocket client %s is too slow: %s (%s); closing it with 1008 policy violation",
            connection.peer,
            why,
            setting,
            path=self._path,
            kind="WEBSOCKET_SLOW_CONSUMER",
            to=logger,
        )
        connection.nursery.start_soon(self._close_dropped, connection, f"too slow: {why}")

    async def _close_dropped(self, connection: _Connection, reason: str) -> None:
        deadline = trio.current_time() + self._server._close_timeout
        await self._close(connection, POLICY_VIOLATION, reason, deadline)
        # A handler that does not touch its connection would never learn it is closed.
        connection.handler_scope.cancel(reason="its WebSocket client was dropped as too slow")


async def _queue_when_room(
    connection: _Connection, message: str, counted: list[_Connection]
) -> None:
    connection.alarm.set()  # its watchdog looks whether it is the client that is behind
    try:
        # The channel hands freed room to waiting senders first, in order.
        await connection.outbox.send(message)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return  # dropped, closed, or stopping
    counted.append(connection)


def _has_room(sock: trio.socket.SocketType) -> bool:
    """True if the kernel reports ``sock`` writable: its send buffer has room to spare
    (TCP: a third of it free). As trio's ``is_readable()``, for writing."""
    if sys.platform == "win32":
        _, writable, _ = select.select([], [sock], [], 0)
        return bool(writable)
    poll = select.poll()
    poll.register(sock, select.POLLOUT)
    return bool(poll.poll(0))


def _describe(stream: trio.SocketStream) -> str:
    try:
        address = stream.socket.getpeername()
    except OSError:  # the client is already gone (ENOTCONN)
        return "(disconnected client)"
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return str(address) or "(unnamed socket)"


def _tree_shutting_down() -> bool:
    try:
        return current_tree().shutting_down
    except RuntimeError:
        return False


# The registry shown before the first start; never written to.
_NO_CONNECTIONS: Final[dict[WebSocketConnection, _Connection]] = {}


@final
class WebSocketServer:
    """A supervised WebSocket server on one path, with a registry of its connections.

    Each accepted connection is greeted with ``greeting`` (if given) and handed to
    ``handler(conn)``, which runs as long as it likes (typically reading messages until
    ``ConnectionClosed``). When it returns, the connection is closed normally (1000).

    Args:
      handler: ``async (conn: trio_websocket.WebSocketConnection) -> None``, run once per
        connection.
      host: the interface to bind; ``"0.0.0.0"`` or ``"::"`` for all.
      port: the TCP port; ``0`` picks a free one (read it from ``port`` once started).
      path: the URL path served (the query string is ignored); handshakes for any other
        path are refused with 404.
      drain: a ``DrainDelay`` whose end ``shutdown_hook()`` waits for before refusing new
        handshakes.
      notice: the text message sent to every client at shutdown before the close;
        ``None`` sends none.
      close_timeout: seconds the shutdown gives the notices and the close handshakes, all
        connections at once; connections still open then are aborted and logged. A slow
        consumer's close handshake has as long.
      greeting: a text message sent to each client right after its handshake, before
        ``handler`` starts and before any broadcast.
      broadcast_queue: how many broadcast messages may wait for one client (an int >= 1);
        a client with that many waiting and a full socket buffer is dropped as a slow
        consumer.
      broadcast_timeout: seconds one broadcast message (or the greeting) may take to be
        written to a client's socket; past it, the client is dropped as a slow consumer.

    Raises:
      SpecError: for a handler that is not an async function or a value out of range.

    Slow consumers:
      ``broadcast()`` never waits for a client, so a client that does not read cannot
      hold up the broadcaster (an HTTP request handler, say) or the other clients. Each
      connection has a queue of at most ``broadcast_queue`` messages and its own task,
      which writes them to the socket one at a time, in order. A client is dropped as a
      slow consumer when a message has not been written within ``broadcast_timeout`` (it
      does not read, or reads slower than the broadcasts come), or when its queue is full
      and its socket buffer is (nearly) full as well: it is then ``broadcast_queue``
      messages plus a socket buffer behind. A full queue whose socket still has room only
      means that a burst of broadcasts outran the connection's task, which needs a few
      scheduling rounds per message: ``broadcast()`` then waits for that task (the
      server's own work, never the client) rather than drop a client that reads. So a
      loop of broadcasts goes at the pace of the server's sends, and memory is bounded.

      A dropped client leaves ``connections`` at once, one warning is logged (kind
      ``WEBSOCKET_SLOW_CONSUMER``, naming the client and the option), and it is closed
      with code 1008 "policy violation" and a reason such as ``"too slow: 32 broadcast
      messages queued"``; the messages still queued for it are not sent. The close frame
      follows the message being written, which is never cut in the middle: a client that
      reads again within ``close_timeout`` reads what was written, then the close. One
      that does not has its TCP stream closed then. Its handler sees ``ConnectionClosed``
      on its next call on the connection, as for any close, and once the close is done
      it is cancelled (one that never touches the connection would otherwise run until
      the server stops). The handler's own
      ``send_message()`` calls are not queued: they wait for the client, as
      trio-websocket's do. Size ``broadcast_queue`` for the bursts a client should ride
      out beyond its socket buffer; a queued message is shared by all connections (the
      same ``str``).

    Handler errors:
      An exception from ``handler`` (other than ``ConnectionClosed``, alone or in an
      exception group, which means the client went away) is logged with its traceback
      and closes that connection with 1011 "internal error"; the server and the other
      connections go on. A bug in one connection's code should not disconnect every
      client, so it is not a crash of the child. A crash of the server itself (its accept
      loop failing) drops every connection at once, as a crashed OTP process breaks its
      links; the supervisor then starts a fresh run with an empty registry.

    Shutdown:
      ``shutdown_hook()`` (band ``STOP_ACCEPTING``) waits for ``drain``, then refuses new
      handshakes with 503. When the supervisor stops the child (band ``DRAIN``), ``stop()``
      refuses handshakes too, sends each open connection the broadcasts still queued for
      it, then ``notice``, and closes it with 1001 "going away", every connection
      concurrently and all within ``close_timeout``; past it, the stragglers' TCP streams
      are closed and they are logged (a warning, kind ``WEBSOCKET_CLOSE_TIMEOUT``), so a
      client that does not read holds the stop no longer. A handshake accepted just as
      the stop began gets the notice and 1001 too, without its handler running. Then the
      handlers still running are cancelled, the listener closes and the child exits
      cleanly. The same happens when the child alone is stopped or restarted
      (``terminate_child``, ``restart_child``, a sibling's restart under ``ONE_FOR_ALL``).
    """

    def __init__(
        self,
        handler: ConnectionHandler,
        *,
        host: str = "127.0.0.1",
        port: int = 8001,
        path: str = "/ws",
        drain: DrainDelay | None = None,
        notice: str | None = '{"type": "server_shutdown"}',
        close_timeout: float = 5.0,
        greeting: str | None = None,
        broadcast_queue: int = 32,
        broadcast_timeout: float = 10.0,
    ) -> None:
        owner = "WebSocketServer"
        _checks.async_function(owner, "handler", handler, error=SpecError)
        if not isinstance(host, str) or not host:
            raise SpecError(
                f"WebSocketServer: host must be a non-empty str (got {host!r});"
                " use '0.0.0.0' or '::' to listen on every interface"
            )
        _checks.integer(
            owner, "port", port, at_least=0, at_most=65535, error=SpecError, hint=_PORT_HINT
        )
        _check_path(path)
        if drain is not None and not isinstance(drain, DrainDelay):
            raise SpecError(f"WebSocketServer: drain must be a DrainDelay or None (got {drain!r})")
        _check_optional_str("notice", notice)
        _check_optional_str("greeting", greeting)
        _checks.number(
            owner,
            "close_timeout",
            close_timeout,
            above=0,
            finite=True,
            error=SpecError,
            hint="; it bounds the close handshakes at shutdown",
        )
        _checks.integer(
            owner,
            "broadcast_queue",
            broadcast_queue,
            at_least=1,
            error=SpecError,
            hint="; it is how many broadcast messages may wait for one client",
        )
        _checks.number(
            owner,
            "broadcast_timeout",
            broadcast_timeout,
            above=0,
            finite=True,
            error=SpecError,
            hint="; it is how long one broadcast message may take to reach a client's socket",
        )
        self._handler = handler
        self._host = host
        self._port = port
        self._ws_path = path
        self._drain = drain
        self._notice = notice
        self._close_timeout = float(close_timeout)
        self._greeting = greeting
        self._broadcast_queue = broadcast_queue
        self._broadcast_timeout = float(broadcast_timeout)
        # Set by shutdown_hook(): refuse handshakes from now on, also in a run restarted
        # during the shutdown. Cleared when a run starts outside a shutdown.
        self._refusing = False
        # The latest run; None before the first start.
        self._run: _ServerRun | None = None
        # The port the latest run bound; None before the first one listened.
        self._bound_port: int | None = None

    def __repr__(self) -> str:
        port = self._port if self._bound_port is None else self._bound_port
        return (
            f"<WebSocketServer ws://{self._host}:{port}{self._ws_path}"
            f" {len(self.connections)} connection(s)>"
        )

    # ------------------------------------------------------------------------ supervision

    def child_spec(
        self, name: str = "websocket", *, shutdown_timeout: float | None = None
    ) -> ChildSpec:
        """The service child that runs this server.

        ``run()`` binds the listener and reports started (``task_status.started()``) once
        it accepts, so the next sibling starts only then. ``stop()`` is described in the
        class docstring ("Shutdown").

        Args:
          name: the child's name.
          shutdown_timeout: seconds the whole stop may take. ``None`` (the default) sets no
            limit of its own, as ``stop()`` bounds itself by ``close_timeout`` (the
            shutdown's deadline still applies). A number must exceed ``close_timeout``.

        Raises:
          SpecError: for a bad name or a ``shutdown_timeout`` not above ``close_timeout``.
        """
        # Other bad values are ChildSpec's to refuse, with its message.
        if _checks.is_number(shutdown_timeout) and not shutdown_timeout > self._close_timeout:
            raise SpecError(
                f"WebSocketServer child {name!r}: shutdown_timeout must be > close_timeout"
                f" ({self._close_timeout:g}) or None (got {shutdown_timeout!r}); a shorter"
                " one cuts the close handshakes short and clients see 1006, not 1001"
            )
        return ChildSpec.service(name, self._new_run, shutdown_timeout=shutdown_timeout)

    def shutdown_hook(self, name: str = "websocket: stop accepting") -> ShutdownHook:
        """A hook for band ``STOP_ACCEPTING`` that refuses new handshakes (503).

        It first waits for ``drain`` (if given), so that handshakes still succeed during
        the drain delay. Open connections go on until the supervisor stops the child in
        band ``DRAIN``.

        Raises:
          SpecError: for an empty name.
        """

        async def stop_accepting() -> None:
            if self._drain is not None:
                await self._drain.wait()
            self._refusing = True
            if self._run is None:
                raise NothingToDo("the WebSocket server never started")
            log(
                logging.INFO,
                "WebSocket server refuses new handshakes (503) from now on",
                path=self._run._path if self._run is not None else "",
                kind="WEBSOCKET_STOP_ACCEPTING",
                to=logger,
            )

        return ShutdownHook(name, stop_accepting, priority=Band.STOP_ACCEPTING)

    def _new_run(self) -> _ServerRun:
        self._run = _ServerRun(self)
        return self._run

    # ------------------------------------------------------------------------------ state

    @property
    def connections(self) -> KeysView[WebSocketConnection]:
        """The open connections of the current run, in accept order (a live read-only view).

        A connection is in it from its accepted handshake until its handler has returned
        and its close is done, until ``broadcast()`` or its writer finds it closed by the
        client or broken, or until it is dropped as a slow consumer. A restart starts a new
        registry: read this property again.
        """
        if self._run is None:
            return _NO_CONNECTIONS.keys()
        return self._run.registry.keys()

    @property
    def port(self) -> int:
        """The TCP port the server listens (or last listened) on; with ``port=0``, the free
        port the system picked (a new one on every start).

        Raises:
          RuntimeError: it has not listened yet.
        """
        if self._bound_port is None:
            raise RuntimeError(
                f"WebSocketServer for {self._host}:{self._port} has not listened yet; its port"
                " is known once its child has started"
            )
        return self._bound_port

    @property
    def accepting(self) -> bool:
        """True while the server is listening and accepts handshakes (not yet refusing)."""
        return self._run is not None and self._run.accepting and not self._run._done.is_set()

    async def broadcast(self, message: str) -> int:
        """Queue ``message`` for every open connection; return how many it was queued for.

        It never waits for a client: each connection has a queue of at most
        ``broadcast_queue`` messages, which its own task sends after the greeting, in the
        order they were queued. A connection that is closed or broken is skipped (and
        leaves the registry); one whose client does not keep up is dropped as a slow
        consumer and not counted (see "Slow consumers" in the class docstring). When a
        burst of broadcasts has filled a queue whose client still reads, this waits for
        that connection's task to make room (a few scheduling rounds, never the client).
        The messages of one task reach every connection in the order it broadcast them;
        those of tasks broadcasting at the same time may interleave differently on
        different connections. It never raises for a client. Once the server is stopping
        nothing is queued (the shutdown notice is the last message a client gets), and 0
        is returned. Before the first start, 0.

        Cancellation:
          A checkpoint, as Trio's own calls: called in a cancelled scope it raises
          ``trio.Cancelled`` and queues nothing. Once it began to queue, it finishes
          (a wait for a connection's task is shielded: it is bounded by that task's
          ``broadcast_timeout``) and returns; what it queued is sent even if the caller
          is cancelled afterwards.

        Raises:
          TypeError: ``message`` is not a str.
        """
        if not isinstance(message, str):
            raise TypeError(
                f"WebSocketServer.broadcast: message must be a str (got {type(message).__name__})"
            )
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._run is None:
            queued = 0
        else:
            queued = await self._run.broadcast(message)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return queued
