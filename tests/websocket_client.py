"""The trio-websocket client of the tests that talk to real WebSocket servers."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio_websocket
from trio_websocket import WebSocketConnection

HOST = "127.0.0.1"


@asynccontextmanager
async def open_client(
    port: int, path: str = "/ws", *, close_within: float = 30.0
) -> AsyncIterator[WebSocketConnection]:
    """A client on ``HOST:port`` that owns its TCP stream and closes it.

    ``open_websocket()`` leaves its socket open after a close begun by the server or a
    refused handshake (a ResourceWarning when it is collected), so the stream is opened
    here and wrapped with trio-websocket's ``wrap_client_stream``. A refused handshake
    raises ``ExceptionGroup([ConnectionRejected])`` (from the reader task's nursery).
    """
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream, trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(nursery, stream, f"{HOST}:{port}", path)
        try:
            yield ws
        finally:
            with trio.move_on_after(close_within, shield=True):
                await ws.aclose()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_unread_client(
    port: int, *, receive_buffer: int = 4096
) -> AsyncIterator[WebSocketConnection]:
    """A client that reads nothing until the caller calls ``get_message()``.

    Its socket's receive buffer is ``receive_buffer`` bytes (set before the connect, so
    that the TCP window is small from the start), and trio-websocket's reader holds a
    single message (``message_queue_size=0``) and then stops reading the socket: the
    server's writes soon wait, as they would for a client that has hung or been paused.
    """
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    try:
        await sock.connect((HOST, port))
    except BaseException:
        sock.close()
        raise
    async with trio.SocketStream(sock) as stream, trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(
            nursery, stream, f"{HOST}:{port}", "/ws", message_queue_size=0
        )
        try:
            yield ws
        finally:
            nursery.cancel_scope.cancel()
