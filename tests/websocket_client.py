"""The trio-websocket client of the tests that talk to real WebSocket servers."""

from __future__ import annotations

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
