"""The observer's streams end when their server stops, and the page sees the tree as a
shutdown left it: against a real server (hypercorn on 127.0.0.1) and a raw HTTP/1.0 client
(not httpx: leaving one of its streams early leaves async generators to the GC)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import trio

from trio_supervise import Backoff, ChildSpec, SupervisorSpec, supervisor_tree
from trio_supervise.integrations.http import HTTPServer
from trio_supervise.integrations.observer import observer_app
from trio_supervise.testing import crash_after, sleeper

FAIL_SAFE = 10.0


class SSE:
    """Server-sent events read from a raw connection (HTTP/1.0: the body ends at its close)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def _fill(self) -> bool:
        chunk = await self.stream.receive_some(65536)
        self.buffer += chunk
        return bool(chunk)

    async def status(self) -> int:
        while b"\r\n\r\n" not in self.buffer:
            assert await self._fill(), "the server closed the connection before its head"
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return int(head.split(b" ", 2)[1])

    async def message(self) -> tuple[str, Any] | None:
        """The next event's name and JSON data; None once the server ended the stream."""
        while True:
            block, found, rest = self.buffer.partition(b"\n\n")
            if not found:
                if not await self._fill():
                    return None
                continue
            self.buffer = rest
            name, data = "message", None
            for line in block.decode().split("\n"):
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = json.loads(line.removeprefix("data: "))
            if data is not None:
                return name, data


@asynccontextmanager
async def sse(url: str) -> AsyncIterator[SSE]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    async with await trio.open_tcp_stream(parts.hostname, parts.port) as stream:
        request = f"GET {parts.path} HTTP/1.0\r\nHost: {parts.netloc}\r\n\r\n"
        await stream.send_all(request.encode())
        reader = SSE(stream)
        assert await reader.status() == 200
        yield reader


async def test_an_open_page_does_not_hold_the_shutdown() -> None:
    # The observer's server waits for the requests in flight, and a stream never ends by
    # itself: without an end when its child is asked to stop, the shutdown ran into its
    # deadline.
    server = HTTPServer(observer_app(), host="127.0.0.1", port=0)
    spec = SupervisorSpec("app", [server.child_spec("observer"), ChildSpec("w", sleeper())])
    ended = {"page": trio.Event(), "events": trio.Event()}

    async def read(stream: SSE, name: str) -> None:
        while await stream.message() is not None:
            pass
        ended[name].set()

    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery:
            async with supervisor_tree(spec, shutdown_deadline=20.0) as tree:
                base = server.bound[0]
                page = await nursery.start(_open, base + "/api/stream")
                events = await nursery.start(_open, base + "/api/events/stream")
                first = await page.message()
                assert first is not None
                assert first[0] == "snapshot"
                nursery.start_soon(read, page, "page")
                nursery.start_soon(read, events, "events")
                started = trio.current_time()
            report = tree.shutdown_report
            assert report is not None
            assert not report.deadline_exceeded, report.format()
            assert trio.current_time() - started < 5.0, report.format()
            for event in ended.values():  # the server ended both streams
                await event.wait()
            nursery.cancel_scope.cancel()


async def _open(url: str, task_status: trio.TaskStatus[SSE] = trio.TASK_STATUS_IGNORED) -> None:
    """Open the stream at ``url``, hand it over and keep it open until its task is done."""
    async with sse(url) as stream:
        task_status.started(stream)
        await trio.sleep_forever()


async def test_the_page_gets_a_snapshot_after_a_shutdown() -> None:
    # A child waiting out a backoff is stopped by the shutdown without an event of its own:
    # the snapshot after the report shows it stopped, not restarting forever.
    spec = SupervisorSpec(
        "shop",
        [ChildSpec("flaky", crash_after(0.0)), ChildSpec("w", sleeper())],
        backoff=Backoff(initial=30.0, maximum=30.0),
    )

    async def run_tree(task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        async with supervisor_tree(spec) as tree:
            task_status.started(tree)
            await trio.sleep_forever()

    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery:
            tree = await nursery.start(run_tree)
            server = HTTPServer(observer_app(tree), host="127.0.0.1", port=0)
            web = SupervisorSpec("web", [server.child_spec("observer")])
            async with supervisor_tree(web), sse(server.bound[0] + "/api/stream") as stream:
                message = await stream.message()
                assert message is not None
                assert message[0] == "snapshot"
                while tree.info("flaky").restart_at is None:
                    message = await stream.message()
                    assert message is not None
                tree.shutdown()
                names: list[str] = []
                while (message := await stream.message()) is not None:
                    names.append(message[0])
                    if message[0] == "snapshot":
                        break
                assert names[-2:] == ["shutdown", "snapshot"]
                assert message is not None
                _name, snapshot = message
                assert snapshot["shutdown"] is not None
                states = {child["path"]: child["state"] for child in snapshot["tree"]["children"]}
                assert states == {"flaky": "stopped", "w": "stopped"}
