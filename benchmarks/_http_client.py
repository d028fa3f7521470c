"""The load client of ``bench_http``: keep-alive ``GET`` requests for a fixed time.

It runs in its own process (``python benchmarks/_http_client.py ...``), so that it does not
share the event loop, nor the interpreter lock, of the server it measures. Standard library
only: ``connections`` non-blocking sockets in one ``selectors`` loop, each sending one
request, reading its response (the status line and ``Content-Length``, nothing more) and
sending the next one as soon as it is complete; no pipelining. The first ``warmup`` seconds
are not counted; the responses completed in the next ``duration`` seconds are (or until
the first one, if none completed in time). A connection the server closes is opened again
(counted in ``reconnects``).

It prints one JSON line: ``{"requests": n, "seconds": s, "errors": e, "reconnects": r}``,
where ``errors`` counts responses whose status was not 200.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import time
from collections.abc import Sequence

_HEADER_END = b"\r\n\r\n"
#: Seconds past the window the client waits for a first counted response before failing.
_NO_RESPONSE_LIMIT = 30.0
_POLL = 0.01


class _Connection:
    """One keep-alive connection and the bytes of the response it is reading."""

    def __init__(self, address: tuple[str, int], request: bytes) -> None:
        self.address = address
        self.request = request
        self.buffer = b""
        self.sock = self._connect()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(self.address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        return sock

    def reconnect(self) -> None:
        self.sock.close()
        self.buffer = b""
        self.sock = self._connect()

    def send(self) -> None:
        # A request of a few dozen bytes always fits in the send buffer of a socket
        # with no request in flight.
        sent = self.sock.send(self.request)
        if sent != len(self.request):
            raise RuntimeError(f"short send: {sent} of {len(self.request)} bytes")

    def complete(self) -> int | None:
        """The status of the response in the buffer once it is complete (then drop it)."""
        end = self.buffer.find(_HEADER_END)
        if end < 0:
            return None
        head = self.buffer[:end].split(b"\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        total = end + len(_HEADER_END) + length
        if len(self.buffer) < total:
            return None
        self.buffer = self.buffer[total:]
        return int(head[0].split(b" ", 2)[1])


def load(
    host: str, port: int, path: str, connections: int, warmup: float, duration: float
) -> dict[str, float]:
    """Run the load; return the counts of the measured window."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode("ascii")
    selector = selectors.DefaultSelector()
    conns = [_Connection((host, port), request) for _ in range(connections)]
    requests = errors = reconnects = 0
    try:
        for conn in conns:
            selector.register(conn.sock, selectors.EVENT_READ, conn)
            conn.send()
        start = time.perf_counter()
        counting_from = start + warmup
        stop_at = counting_from + duration
        give_up_at = stop_at + _NO_RESPONSE_LIMIT
        now = start
        # On a starved machine a short window may see no response: then count until one.
        while now < stop_at or not requests:
            if now >= give_up_at:
                raise RuntimeError(f"no response in {_NO_RESPONSE_LIMIT:g} s")
            for key, _ in selector.select(timeout=max(stop_at - now, _POLL)):
                conn = key.data
                assert isinstance(conn, _Connection)
                data = conn.sock.recv(65536)
                if not data:  # closed by the server (e.g. its keep-alive request limit)
                    selector.unregister(conn.sock)
                    conn.reconnect()
                    reconnects += 1
                    selector.register(conn.sock, selectors.EVENT_READ, conn)
                    conn.send()
                    continue
                conn.buffer += data
                status = conn.complete()
                if status is None:
                    continue
                if time.perf_counter() >= counting_from:
                    requests += 1
                    errors += status != 200
                conn.send()
            now = time.perf_counter()
        seconds = now - counting_from
    finally:
        for conn in conns:
            conn.sock.close()
        selector.close()
    return {"requests": requests, "seconds": seconds, "errors": errors, "reconnects": reconnects}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="keep-alive GET load for a fixed time")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=0.25)
    parser.add_argument("--duration", type=float, default=1.0)
    args = parser.parse_args(argv)
    result = load(args.host, args.port, args.path, args.connections, args.warmup, args.duration)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
