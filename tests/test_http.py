"""The HTTP integration: hypercorn under a supervision tree, its graceful stop, health endpoints.

These tests run a real hypercorn server on 127.0.0.1 (port 0) and talk to it with a real
client (httpx, or raw Trio sockets where the test needs to see a refused connection), so
they run in real time; every wait is on a condition, with ``trio.fail_after`` as a
fail-safe only.
"""

from __future__ import annotations

import errno
import inspect
import json
import logging
import math
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import pytest
import trio
import trio.testing
from hypercorn.config import Config
from processes import import_message_without
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from trio_supervise import (
    Band,
    ChildSpec,
    ChildStartError,
    DrainDelay,
    EventKind,
    ShutdownHook,
    SpecError,
    Strategy,
    SupervisorSpec,
    SupervisorTree,
    current_child,
    current_tree,
    serve,
    supervisor_tree,
)
from trio_supervise.integrations.http import HTTPServer, health_app
from trio_supervise.testing import EventRecorder

# Generous fail-safes; each test finishes well under a second.
FAIL_SAFE = 10.0

Message = MutableMapping[str, Any]


@attrs.define(eq=False)
class SlowApp:
    """A plain ASGI app: ``/slow`` waits for ``release``; anything else answers at once.

    It records its lifespan messages and whether a request was cancelled.
    """

    arrived: trio.Event = attrs.field(factory=trio.Event)
    release: trio.Event = attrs.field(factory=trio.Event)
    cancelled: trio.Event = attrs.field(factory=trio.Event)
    lifespan: list[str] = attrs.field(factory=list)

    async def __call__(
        self,
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                step = message["type"].removeprefix("lifespan.")
                self.lifespan.append(step)
                await send({"type": f"lifespan.{step}.complete"})
                if step == "shutdown":
                    return
        assert scope["type"] == "http"
        body = b"fast"
        if scope["path"] == "/slow":
            self.arrived.set()
            try:
                await self.release.wait()
            except trio.Cancelled:
                self.cancelled.set()
                raise
            body = b"slow done"
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@attrs.frozen
class FakeMetrics:
    body: bytes = b"# HELP up 1 when up\nup 1\n"
    content_type: str = "text/plain; version=0.0.4; charset=utf-8"

    def exposition(self) -> tuple[bytes, str]:
        return self.body, self.content_type


class BrokenMetrics:
    def exposition(self) -> tuple[bytes, str]:
        raise RuntimeError("registry is gone")


@asynccontextmanager
async def open_client() -> AsyncIterator[httpx.AsyncClient]:
    # No keep-alive: every request opens a new connection, so a request that gets through
    # proves the listener still accepts. trust_env=False: no proxy from the environment.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(trust_env=False, limits=limits, timeout=FAIL_SAFE) as client:
        yield client


async def get_json(client: httpx.AsyncClient, url: str, method: str = "GET") -> tuple[int, Any]:
    response = await client.request(method, url)
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    return response.status_code, response.json()


async def fetch(client: httpx.AsyncClient, url: str, results: dict[str, object], key: str) -> None:
    """GET ``url`` and store ``(status, text)``, or the exception, under ``key``."""
    try:
        response = await client.get(url)
    except httpx.HTTPError as exc:
        results[key] = exc
    else:
        results[key] = (response.status_code, response.text)


async def refused(port: int) -> bool:
    """Whether a TCP connection to 127.0.0.1:port is refused (False: it was accepted)."""
    with trio.socket.socket() as sock:
        try:
            await sock.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


def hook_statuses(tree: SupervisorTree) -> dict[str, str]:
    report = tree.shutdown_report
    assert report is not None
    return {hook.name: hook.status for hook in report.hooks}


def http_kinds(tree: SupervisorTree, path: str = "http") -> list[EventKind]:
    return [event.kind for event in tree.history if event.path == path]


# ------------------------------------------------------------------- graceful shutdown


async def test_in_flight_request_finishes_and_listeners_close_after_the_drain_delay() -> None:
    app = SlowApp()
    drain = DrainDelay(0.4)
    server = HTTPServer(health_app(app, drain=drain), port=0, drain=drain)
    spec = SupervisorSpec("app", [server.child_spec()])
    results: dict[str, object] = {}
    during: dict[str, object] = {}

    async def during_shutdown(
        client: httpx.AsyncClient, recorder: EventRecorder, base: str, port: int
    ) -> None:
        await recorder.wait_for(EventKind.SHUTDOWN_STARTED)
        await trio.testing.wait_all_tasks_blocked()  # the drain delay has started
        during["ready"] = await get_json(client, base + "/health/ready")
        during["live"] = await get_json(client, base + "/health/live")
        during["fast"] = (await client.get(base + "/fast")).status_code
        during["listening"] = server.listening
        await recorder.wait_for(EventKind.HOOK_FINISHED, "http: stop accepting")
        during["listening after hook"] = server.listening
        during["refused"] = await refused(port)
        during["in flight"] = server.in_flight
        app.release.set()

    with trio.fail_after(FAIL_SAFE):
        async with (
            open_client() as client,
            trio.open_nursery() as nursery,
            supervisor_tree(
                spec, hooks=[drain.hook, server.shutdown_hook()], shutdown_deadline=5.0
            ) as tree,
        ):
            recorder = EventRecorder(tree)
            base, port = server.bound[0], server.port
            assert base == f"http://127.0.0.1:{port}"
            nursery.start_soon(fetch, client, base + "/slow", results, "slow")
            await app.arrived.wait()
            assert server.in_flight == 1
            nursery.start_soon(during_shutdown, client, recorder, base, port)

    assert results["slow"] == (200, "slow done")
    ready = during["ready"]
    assert isinstance(ready, tuple)
    status, body = ready
    assert status == 503
    assert set(body) == {"ready", "reason"}
    assert body["ready"] is False
    match = re.fullmatch(r"shutting down: drain delay, (\d+\.\d) s left", body["reason"])
    assert match is not None, body
    assert 0 < float(match[1]) <= 0.4
    assert during["live"] == (200, {"live": True})
    assert during["fast"] == 200  # new connections are still served during the delay
    assert during["listening"] is True
    assert during["listening after hook"] is False
    assert during["refused"] is True
    assert during["in flight"] == 1  # the listeners closed with the request still running
    assert server.in_flight == 0
    # serve() returned by itself: hypercorn ran the app's lifespan shutdown, which a
    # cancelled serve() never reaches.
    assert app.lifespan == ["startup", "shutdown"]
    report = tree.shutdown_report
    assert report is not None
    assert report.ok
    assert hook_statuses(tree) == {
        "supervisor": "ok",
        "drain-delay": "ok",
        "http: stop accepting": "ok",
    }
    hook = next(h for h in report.hooks if h.name == "http: stop accepting")
    assert hook.priority == Band.STOP_ACCEPTING
    assert hook.duration >= 0.4  # it waited for the drain delay before closing
    # Drained by the hook, the child stayed up (no restart) until the supervisor stopped it.
    assert http_kinds(tree) == [EventKind.STARTED, EventKind.TERMINATED]


async def read_response(stream: trio.SocketStream) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """Read one HTTP/1.1 response with a Content-Length: its status line, headers, body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some()
        assert chunk, f"the connection closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (h.partition(b":") for h in lines)}
    while len(body) < int(headers[b"content-length"]):
        body += await stream.receive_some()
    return status, headers, body


async def test_a_keep_alive_request_sent_as_the_last_one_finishes_does_not_stall_the_shutdown() -> (
    None
):
    # The keep-alive race of hypercorn's HTTP/1.1 reader: the client sends its next request
    # as soon as it has the whole body (Content-Length), before hypercorn has ended the
    # response (it takes a few scheduler turns; here the app holds its last, empty, body
    # message). The reader then waits for the connection to be recycled. If the shutdown
    # begins in between, hypercorn closes the socket instead of recycling it, but its reader
    # went on waiting until the graceful timeout (5 s here).
    responded, finish = trio.Event(), trio.Event()
    paths: list[str] = []

    async def app(scope: Message, receive: Any, send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return
        paths.append(scope["path"])
        headers = [(b"content-length", b"5")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        responded.set()
        await finish.wait()
        await send({"type": "http.response.body", "body": b""})

    server = HTTPServer(app, port=0, graceful_timeout=5.0)
    spec = SupervisorSpec("app", [server.child_spec()])

    async def finish_once_closed() -> None:
        while server.listening:
            await trio.testing.wait_all_tasks_blocked()
        finish.set()

    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery:
            async with supervisor_tree(
                spec, hooks=[server.shutdown_hook()], shutdown_deadline=8.0
            ) as tree:
                stream = await trio.open_tcp_stream("127.0.0.1", server.port)
                await stream.send_all(b"GET /first HTTP/1.1\r\nhost: t\r\n\r\n")
                status, headers, body = await read_response(stream)
                assert (status, body) == (b"HTTP/1.1 200 ", b"first")
                assert b"connection" not in headers  # sent before the shutdown: kept alive
                await stream.send_all(b"GET /next HTTP/1.1\r\nhost: t\r\n\r\n")
                # Real time for the server to read it (the bytes are on a real socket): its
                # reader then waits for the first response to end.
                await trio.sleep(0.2)
                nursery.start_soon(finish_once_closed)
            # The next request never ran, and the connection is closed, not left open.
            assert await stream.receive_some() == b""
            await stream.aclose()

    assert paths == ["/first"]
    report = tree.shutdown_report
    assert report is not None
    assert report.ok
    assert report.duration < 1.0


async def test_a_response_started_during_the_drain_says_connection_close() -> None:
    app = SlowApp()
    server = HTTPServer(app, port=0)
    spec = SupervisorSpec("app", [server.child_spec()])

    async def release_once_closed() -> None:
        while server.listening:
            await trio.testing.wait_all_tasks_blocked()
        app.release.set()

    with trio.fail_after(FAIL_SAFE):
        async with trio.open_nursery() as nursery:
            async with supervisor_tree(spec, hooks=[server.shutdown_hook()]) as tree:
                stream = await trio.open_tcp_stream("127.0.0.1", server.port)
                await stream.send_all(b"GET /fast HTTP/1.1\r\nhost: t\r\n\r\n")
                _, before, _ = await read_response(stream)
                await stream.send_all(b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n")
                await app.arrived.wait()
                nursery.start_soon(release_once_closed)
            status, during, body = await read_response(stream)
            await stream.aclose()

    assert b"connection" not in before
    assert (status, body) == (b"HTTP/1.1 200 ", b"slow done")
    # The client learns to open a new connection (refused, or another replica's).
    assert during[b"connection"] == b"close"
    assert tree.shutdown_report is not None
    assert tree.shutdown_report.ok


# --------------------------------------------------------------------- slow clients


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


def starlette_echo(seen: list[str]) -> Starlette:
    async def echo(request: Request) -> PlainTextResponse:
        try:
            body = await request.body()
        except Exception as exc:
            seen.append(type(exc).__name__)
            raise
        return PlainTextResponse(body.decode())

    return Starlette(routes=[Route("/echo", echo, methods=["POST"])])


async def test_a_stalled_request_body_gets_408_at_the_body_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Content-Length 1000, 10 bytes, then nothing: the request was held (in flight)
    # until the client gave up. Starlette's ClientDisconnect is the app's answer to the
    # disconnect; it must not become a 500 or an ERROR line with a traceback.
    seen: list[str] = []
    server = HTTPServer(starlette_echo(seen), port=0, body_timeout=0.5)
    spec = SupervisorSpec("app", [server.child_spec()])
    with trio.fail_after(FAIL_SAFE):
        async with supervisor_tree(spec, hooks=[server.shutdown_hook()]):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            head = b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-length: 1000\r\n\r\n"
            await stream.send_all(head + b"0123456789")
            sent = trio.current_time()
            response = await read_until_closed(stream)
            took = trio.current_time() - sent
            await stream.aclose()
            in_flight = server.in_flight

    status_line, _, rest = response.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 "
    assert b"\r\nconnection: close\r\n" in rest
    assert rest.endswith(b'{"error":"the request body did not arrive within 0.5s"}')
    assert 0.5 <= took < 1.5
    assert in_flight == 0
    assert seen == ["ClientDisconnect"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_body_that_arrives_in_time_and_a_long_request_are_not_cut() -> None:
    # The bound is on the body only: a request whose body came quickly may take longer
    # than body_timeout to answer, while its client waits quietly (what hypercorn's
    # read_timeout would have cut).
    app = SlowApp()
    seen: list[str] = []
    echo = starlette_echo(seen)

    async def both(scope: Message, receive: Any, send: Any) -> None:
        await (app if scope.get("path") != "/echo" else echo)(scope, receive, send)

    server = HTTPServer(both, port=0, body_timeout=0.3)
    spec = SupervisorSpec("app", [server.child_spec()])
    with trio.fail_after(FAIL_SAFE):
        async with open_client() as client, supervisor_tree(spec):
            base = server.bound[0]
            async with trio.open_nursery() as nursery:
                results: dict[str, object] = {}
                nursery.start_soon(fetch, client, base + "/slow", results, "slow")
                await app.arrived.wait()
                await trio.sleep(0.6)  # real time: twice the body timeout
                app.release.set()
            echoed = await client.post(base + "/echo", content=b"x" * 100_000)

    assert results["slow"] == (200, "slow done")
    assert (echoed.status_code, len(echoed.text)) == (200, 100_000)
    assert seen == []


async def test_a_request_head_sent_byte_by_byte_is_cut_at_the_keep_alive_timeout() -> None:
    # Hypercorn counts a connection as idle until a whole head has arrived: bytes that
    # trickle in do not renew its keep_alive_timeout, so a slow head is bounded.
    config = Config()
    config.keep_alive_timeout = 0.5
    server = HTTPServer(SlowApp(), port=0, config=config)
    spec = SupervisorSpec("app", [server.child_spec()])
    with trio.fail_after(FAIL_SAFE):
        async with supervisor_tree(spec):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            opened = trio.current_time()
            head = b"GET /fast HTTP/1.1\r\nhost: t\r\nx-padding: " + b"a" * 100
            try:
                for byte in head:
                    await stream.send_all(bytes([byte]))
                    await trio.sleep(0.05)  # real time: a client trickling its head
            except trio.BrokenResourceError:
                pass
            await read_until_closed(stream)
            closed = trio.current_time() - opened
            await stream.aclose()
            assert server.in_flight == 0

    assert 0.5 <= closed < 1.5


async def test_a_request_reaching_the_app_once_the_listeners_close_gets_503_unrun() -> None:
    # Hypercorn closes a new connection as idle when its shutdown trigger fires; a request
    # that arrived on it at that moment can still be handed to the app, and its answer is
    # then lost. The exact timing cannot be staged through a socket, so the request is
    # handed to the server's ASGI entry (what hypercorn calls) once the trigger has fired.
    app = SlowApp()
    server = HTTPServer(app, port=0)
    spec = SupervisorSpec("app", [server.child_spec()])
    sent: list[Message] = []
    in_flight: list[int] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)
        in_flight.append(server.in_flight)

    async def late_request(recorder: EventRecorder) -> None:
        await recorder.wait_for(EventKind.HOOK_FINISHED, "http: stop accepting")
        scope = {"type": "http", "method": "GET", "path": "/slow", "headers": []}
        run = server._current
        assert run is not None
        await server._asgi(run, scope, receive, send)

    with trio.fail_after(FAIL_SAFE):
        async with (
            trio.open_nursery() as nursery,
            supervisor_tree(spec, hooks=[server.shutdown_hook()]) as tree,
        ):
            nursery.start_soon(late_request, EventRecorder(tree))
            # Served as usual before the shutdown (the same entry, through a socket).
            async with open_client() as client:
                response = await client.get(server.bound[0] + "/fast")
                assert (response.status_code, response.text) == (200, "fast")

    assert not app.arrived.is_set()  # the app never saw it
    start, body = sent
    assert start["status"] == 503
    assert dict(start["headers"])[b"connection"] == b"close"
    assert json.loads(body["body"]) == {"error": "shutting down"}
    assert in_flight == [0, 0]
    assert tree.shutdown_report is not None
    assert tree.shutdown_report.ok


async def test_request_longer_than_the_deadline_is_cut_at_the_deadline() -> None:
    # Without graceful_timeout only the tree bounds the drain: at shutdown_deadline the
    # tree cancels serve(); the request is cancelled, its client sees the connection close
    # without a response, the lifespan shutdown never runs and the report says so.
    app = SlowApp()
    server = HTTPServer(health_app(app), port=0)
    spec = SupervisorSpec("app", [server.child_spec()])
    results: dict[str, object] = {}
    with trio.fail_after(FAIL_SAFE):
        async with (
            open_client() as client,
            trio.open_nursery() as nursery,
            supervisor_tree(spec, hooks=[server.shutdown_hook()], shutdown_deadline=0.3) as tree,
        ):
            nursery.start_soon(fetch, client, server.bound[0] + "/slow", results, "slow")
            await app.arrived.wait()

    error = results["slow"]
    assert isinstance(error, httpx.RemoteProtocolError)
    assert str(error) == "Server disconnected without sending a response."
    assert app.cancelled.is_set()
    assert app.lifespan == ["startup"]
    report = tree.shutdown_report
    assert report is not None
    assert report.deadline_exceeded
    assert not report.ok
    assert 0.3 <= report.duration < 0.6
    # The listeners closed at once; the supervisor's drain of the child was cut short.
    assert hook_statuses(tree) == {"supervisor": "cancelled", "http: stop accepting": "ok"}
    assert server.in_flight == 0


async def test_graceful_timeout_cancels_slow_requests_and_the_report_says_so() -> None:
    # With graceful_timeout hypercorn cancels what is still running that long after the
    # listeners closed, and serve() returns by itself well before the deadline.
    app = SlowApp()
    server = HTTPServer(health_app(app), port=0, graceful_timeout=0.1)
    spec = SupervisorSpec("app", [server.child_spec()])
    results: dict[str, object] = {}
    with trio.fail_after(FAIL_SAFE):
        async with (
            open_client() as client,
            trio.open_nursery() as nursery,
            supervisor_tree(spec, hooks=[server.shutdown_hook()], shutdown_deadline=5.0) as tree,
        ):
            nursery.start_soon(fetch, client, server.bound[0] + "/slow", results, "slow")
            await app.arrived.wait()

    assert isinstance(results["slow"], httpx.RemoteProtocolError)
    assert app.cancelled.is_set()
    assert app.lifespan == ["startup", "shutdown"]
    report = tree.shutdown_report
    assert report is not None
    # The cut request is in the report: the stop timed out, the shutdown is not ok.
    assert not report.ok
    (supervisor,) = [hook for hook in report.hooks if hook.name == "supervisor"]
    assert supervisor.status == "timed_out"
    assert str(supervisor.error) == (
        "cut at a timeout: http (graceful_timeout (0.1s) cut 1 request(s) still in flight)"
    )
    assert 0.1 <= report.duration < 1.0


async def test_stop_without_the_hook_drains_in_band_drain() -> None:
    # Without the hook, the supervisor's stop() fires the trigger: the request in flight
    # still gets its answer before the child exits.
    app = SlowApp()
    server = HTTPServer(health_app(app), port=0)
    spec = SupervisorSpec("app", [server.child_spec()])
    results: dict[str, object] = {}

    async def release_once_closed(port: int) -> None:
        while server.listening:
            await trio.testing.wait_all_tasks_blocked()
        assert await refused(port)
        app.release.set()

    with trio.fail_after(FAIL_SAFE):
        async with (
            open_client() as client,
            trio.open_nursery() as nursery,
            supervisor_tree(spec, shutdown_deadline=5.0) as tree,
        ):
            nursery.start_soon(fetch, client, server.bound[0] + "/slow", results, "slow")
            await app.arrived.wait()
            nursery.start_soon(release_once_closed, server.port)

    assert results["slow"] == (200, "slow done")
    assert app.lifespan == ["startup", "shutdown"]
    assert hook_statuses(tree) == {"supervisor": "ok"}


# ------------------------------------------------------------------------------ restarts


async def test_restart_child_drains_the_old_run_and_serves_again() -> None:
    app = SlowApp()
    server = HTTPServer(health_app(app), port=0)
    spec = SupervisorSpec("app", [server.child_spec()])
    results: dict[str, object] = {}
    with trio.fail_after(FAIL_SAFE):
        async with open_client() as client, supervisor_tree(spec, shutdown_deadline=5.0) as tree:
            first_port = server.port
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch, client, server.bound[0] + "/slow", results, "slow")
                await app.arrived.wait()
                nursery.start_soon(tree.restart_child, "http")
                # The old run stopped accepting; its request is still being served.
                while server.listening:
                    await trio.testing.wait_all_tasks_blocked()
                assert server.in_flight == 1
                assert await refused(first_port)
                app.release.set()
            assert results["slow"] == (200, "slow done")
            # A fresh run with a fresh trigger: it listens (on a new free port) and serves.
            assert server.listening
            assert tree.info("http").restarts == 1
            response = await client.get(server.bound[0] + "/fast")
            assert (response.status_code, response.text) == (200, "fast")
            assert app.lifespan == ["startup", "shutdown", "startup"]
    assert app.lifespan == ["startup", "shutdown", "startup", "shutdown"]


class Boom(Exception):
    pass


async def test_one_for_all_restart_after_a_sibling_crash_serves_again() -> None:
    app = SlowApp()
    server = HTTPServer(health_app(app), port=0)
    crash = trio.Event()

    async def worker() -> None:
        if current_child().restarts == 0:
            await crash.wait()
            raise Boom("worker crashed")
        await trio.sleep_forever()

    spec = SupervisorSpec(
        "app",
        [server.child_spec(), ChildSpec("worker", worker)],
        strategy=Strategy.ONE_FOR_ALL,
        backoff=None,
    )
    with trio.fail_after(FAIL_SAFE):
        async with open_client() as client, supervisor_tree(spec) as tree:
            recorder = EventRecorder(tree)
            crash.set()
            await recorder.wait_for(EventKind.RESTARTED, "worker")
            assert tree.info("http").restarts == 1
            assert server.listening
            response = await client.get(server.bound[0] + "/fast")
            assert (response.status_code, response.text) == (200, "fast")
    recorder.assert_sequence(
        (EventKind.CRASHED, "worker"),
        (EventKind.EXITED, "http"),
        (EventKind.RESTARTED, "http"),
        (EventKind.RESTARTED, "worker"),
    )
    assert app.lifespan == ["startup", "shutdown", "startup", "shutdown"]


async def test_a_restart_after_the_hook_closed_the_listeners_stays_closed() -> None:
    # Crash-restarts can happen during the shutdown's STOP_ACCEPTING band; the restarted
    # run must not open the listeners the hook has just closed.
    app = SlowApp()
    server = HTTPServer(health_app(app), port=0)
    spec = SupervisorSpec("app", [server.child_spec()], backoff=None)
    restarted: dict[str, object] = {}

    async def restart_after_close() -> None:
        restarted["info"] = await current_tree().restart_child("http")
        restarted["listening"] = server.listening

    with trio.fail_after(FAIL_SAFE):
        async with supervisor_tree(
            spec,
            hooks=[
                server.shutdown_hook(),
                ShutdownHook("restart", restart_after_close, priority=Band.STOP_ACCEPTING + 1),
            ],
        ) as tree:
            port = server.port
    assert restarted["listening"] is False
    assert await refused(port)
    assert app.lifespan == ["startup", "shutdown"]  # the second run never served
    assert hook_statuses(tree) == {
        "supervisor": "ok",
        "http: stop accepting": "ok",
        "restart": "ok",
    }


# ------------------------------------------------------------------------ health endpoints


async def test_readiness_while_starting_when_ready_and_while_shutting_down() -> None:
    server = HTTPServer(health_app(), port=0)
    gate = trio.Event()
    done = trio.Event()
    body_running = trio.Event()
    in_shutdown: list[tuple[int, Any]] = []

    async def slow_sibling(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await gate.wait()
        task_status.started()
        await trio.sleep_forever()

    spec = SupervisorSpec("app", [server.child_spec(), ChildSpec("slow", slow_sibling)])

    with trio.fail_after(FAIL_SAFE):
        async with open_client() as client:

            async def probe() -> None:
                in_shutdown.append(await get_json(client, server.bound[0] + "/health/ready"))
                in_shutdown.append(await get_json(client, server.bound[0] + "/health/live"))

            async def run_tree() -> None:
                hooks = [ShutdownHook("probe", probe, priority=Band.STOP_ACCEPTING)]
                async with supervisor_tree(spec, hooks=hooks):
                    body_running.set()
                    await done.wait()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_tree)
                (base,) = await server.wait_listening()  # HTTP is up, "slow" is not yet
                assert await get_json(client, base + "/health/ready") == (
                    503,
                    {"ready": False, "reason": "starting"},
                )
                assert await get_json(client, base + "/health/live") == (200, {"live": True})
                gate.set()
                await body_running.wait()
                assert await get_json(client, base + "/health/ready") == (200, {"ready": True})
                done.set()
    assert in_shutdown == [
        (503, {"ready": False, "reason": "shutting down"}),
        (200, {"live": True}),
    ]


async def test_health_methods_head_not_found_and_metrics() -> None:
    with_metrics = HTTPServer(health_app(metrics=FakeMetrics()), port=0)
    without = HTTPServer(health_app(), port=0)
    broken = HTTPServer(health_app(metrics=BrokenMetrics()), port=0)
    spec = SupervisorSpec(
        "app",
        [
            with_metrics.child_spec("metrics"),
            without.child_spec("plain"),
            broken.child_spec("broken"),
        ],
    )
    with trio.fail_after(FAIL_SAFE):
        async with open_client() as client, supervisor_tree(spec):
            base = with_metrics.bound[0]
            response = await client.get(base + "/metrics")
            assert response.status_code == 200
            assert response.content == FakeMetrics().body
            assert response.headers["content-type"] == FakeMetrics().content_type

            for path in ("/health/live", "/health/ready", "/metrics"):
                for method in ("POST", "PUT", "DELETE"):
                    response = await client.request(method, base + path)
                    assert response.status_code == 405
                    assert response.headers["allow"] == "GET, HEAD"
                    # One format with the app's own errors (issue 10, item 12).
                    assert response.json() == {
                        "error": f"method {method} not allowed on {path}; use GET, HEAD"
                    }

            response = await client.head(base + "/health/ready")
            assert response.status_code == 200
            assert response.content == b""
            assert response.headers["content-length"] == str(len(b'{"ready":true}'))

            assert await get_json(client, base + "/nope") == (
                404,
                {"error": "no such endpoint: GET /nope"},
            )
            assert await get_json(client, base + "/health") == (
                404,
                {"error": "no such endpoint: GET /health"},
            )
            assert await get_json(client, without.bound[0] + "/metrics") == (
                404,
                {"error": "no metrics source configured"},
            )
            assert await get_json(client, broken.bound[0] + "/metrics") == (
                500,
                {"error": "metrics exposition failed: RuntimeError"},
            )


async def test_health_app_passes_everything_else_to_a_starlette_app() -> None:
    steps: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        steps.append("startup")
        yield
        steps.append("shutdown")

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"hello {request.method}")

    starlette = Starlette(
        routes=[Route("/hello", hello, methods=["GET", "POST"])], lifespan=lifespan
    )
    server = HTTPServer(health_app(starlette), port=0)
    spec = SupervisorSpec("app", [server.child_spec()])
    with trio.fail_after(FAIL_SAFE):
        async with open_client() as client, supervisor_tree(spec):
            assert steps == ["startup"]
            base = server.bound[0]
            response = await client.post(base + "/hello")
            assert (response.status_code, response.text) == (200, "hello POST")
            assert await get_json(client, base + "/health/ready") == (200, {"ready": True})
            response = await client.get(base + "/missing")
            assert (response.status_code, response.text) == (404, "Not Found")
    assert steps == ["startup", "shutdown"]


async def raw_exchange(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send ``request`` on a new connection; the status line and body, once it closes."""
    received = b""
    with trio.fail_after(FAIL_SAFE):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(request)
            while chunk := await stream.receive_some():
                received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], body


async def test_absolute_form_is_routed_by_path_and_ambiguous_framing_is_refused() -> None:
    # RFC 9112, 3.2.2: "a server MUST accept the absolute-form"; hypercorn handed the whole
    # URL on as the path. 6.3: both Content-Length and Transfer-Encoding may be smuggling;
    # hypercorn read the body by Transfer-Encoding and kept the connection for more.
    seen: list[tuple[str, bytes, bytes]] = []

    async def app(
        scope: Message, receive: object, send: Callable[[Message], Awaitable[None]]
    ) -> None:
        if scope["type"] == "http":
            seen.append((scope["path"], scope["raw_path"], scope["query_string"]))
            headers = [(b"content-length", b"6")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"routed"})

    server = HTTPServer(app, port=0)
    spec = SupervisorSpec("app", [server.child_spec()])
    async with supervisor_tree(spec):
        port = server.port
        for target in (b"http://example.com/a%20b?x=1", b"HTTPS://example.com", b"/plain"):
            request = b"GET " + target + b" HTTP/1.1\r\nHost: other\r\nConnection: close\r\n\r\n"
            assert await raw_exchange(port, request) == (b"HTTP/1.1 200 ", b"routed")
        assert seen == [("/a b", b"/a%20b", b"x=1"), ("/", b"/", b""), ("/plain", b"/plain", b"")]
        # No "Connection: close": the server closes it (else raw_exchange would wait).
        request = (
            b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        status, body = await raw_exchange(port, request)
        assert (status, json.loads(body)) == (
            b"HTTP/1.1 400 ",
            {
                "error": "request has both Content-Length and Transfer-Encoding: ambiguous"
                " framing; send one"
            },
        )
        assert len(seen) == 3  # the app never saw it


async def test_an_app_that_ignores_the_lifespan_is_served() -> None:
    # Plain ASGI apps often just return for scopes they do not handle; hypercorn would
    # fail on a closed channel, so the server answers the lifespan for them.
    async def minimal(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    server = HTTPServer(minimal, port=0)
    spec = SupervisorSpec("app", [server.child_spec()])
    with trio.fail_after(FAIL_SAFE):
        async with open_client() as client, supervisor_tree(spec) as tree:
            response = await client.get(server.bound[0] + "/")
            assert response.status_code == 204
    assert hook_statuses(tree) == {"supervisor": "ok"}


async def call_asgi(app: Callable[..., Awaitable[None]], scope: dict[str, Any]) -> list[Message]:
    """Call an ASGI app in-process with a request without body; return what it sent."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def http_scope(path: str, method: str = "GET") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": []}


async def test_health_app_outside_a_tree_is_neither_live_nor_ready() -> None:
    app = health_app()
    for path, key in (("/health/live", "live"), ("/health/ready", "ready")):
        start, body = await call_asgi(app, http_scope(path))
        assert start["status"] == 503
        assert json.loads(body["body"]) == {
            key: False,
            "reason": "not running in a supervisor tree",
        }


async def test_health_app_without_an_app_answers_the_lifespan_and_refuses_websockets() -> None:
    app = health_app()
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert incoming == []
    sent.clear()
    await app({"type": "websocket", "path": "/ws"}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1000}]


# --------------------------------------------------------------------- start and config


async def test_a_port_in_use_fails_the_start_with_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HTTPServer(health_app(), port=port)
        spec = SupervisorSpec("app", [server.child_spec()])
        with pytest.raises(ChildStartError) as info:
            async with supervisor_tree(spec):
                pytest.fail("the tree must not start")  # pragma: no cover
    cause = info.value.__cause__
    assert isinstance(cause, OSError)
    assert cause.errno == errno.EADDRINUSE
    assert str(info.value) == (
        f"child 'http' failed to start: it raised OSError: [Errno {errno.EADDRINUSE}]"
        f" HTTPServer cannot bind 127.0.0.1:{port}: Address already in use"
    )
    with pytest.raises(RuntimeError, match=r"^HTTPServer for 127\.0\.0\.1:\d+ has not listened"):
        server.bound  # noqa: B018


async def test_a_server_that_never_listened_skips_its_hooks_and_the_drain_delay(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_supervise")
    # Issue 10, item 3: the port taken, the start failed, and then the shutdown waited out
    # a 5 s drain delay and reported the never-started server's hook "ok".
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        drain = DrainDelay(5)
        server = HTTPServer(health_app(), port=taken.getsockname()[1], drain=drain)
        spec = SupervisorSpec("app", [server.child_spec()])
        code = await serve(spec, hooks=[drain.hook, server.shutdown_hook()])
    assert code == 1  # the start failed
    assert trio.current_time() == 0.0
    finished = [r.getMessage() for r in caplog.records if getattr(r, "kind", "") == "HOOK_FINISHED"]
    assert finished == [
        "HOOK_FINISHED drain-delay: skipped in 0.000s: the tree never got ready, so no traffic"
        " came to drain",
        "HOOK_FINISHED http: stop accepting: skipped in 0.000s: the HTTP server never listened",
        "HOOK_FINISHED supervisor: ok in 0.000s",
    ]


async def test_config_is_copied_and_its_graceful_timeout_and_logs_are_honoured(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trio_supervise.http")
    config = Config()
    config.graceful_timeout = 0.1
    app = SlowApp()
    server = HTTPServer(health_app(app), port=0, config=config)
    spec = SupervisorSpec("app", [server.child_spec()])
    results: dict[str, object] = {}
    with trio.fail_after(FAIL_SAFE):
        async with (
            open_client() as client,
            trio.open_nursery() as nursery,
            supervisor_tree(spec, hooks=[server.shutdown_hook()], shutdown_deadline=5.0) as tree,
        ):
            url = server.bound[0]
            nursery.start_soon(fetch, client, url + "/slow", results, "slow")
            await app.arrived.wait()
    assert isinstance(results["slow"], httpx.RemoteProtocolError)  # cut after 0.1 s
    report = tree.shutdown_report
    assert report is not None
    assert not report.ok  # the graceful timeout cut a request
    assert report.duration < 1.0
    assert vars(config) == {"graceful_timeout": 0.1}  # not changed
    # Hypercorn's error log goes to trio_supervise.http; no handler was installed for it.
    records = [r for r in caplog.records if r.name == "trio_supervise.http"]
    messages = [r.getMessage() for r in records]
    assert f"HTTP server listening on {url}" in messages
    # Our own records carry the fields of trio_supervise's records.
    ours = [(r.__dict__.get("kind"), r.__dict__.get("path")) for r in records]
    assert ("HTTP_LISTENING", "http") in ours
    assert ("HTTP_STOPPED_ACCEPTING", "http") in ours
    assert f"Running on {url} (CTRL + C to quit)" in messages
    assert logging.getLogger("hypercorn.error").handlers == []
    assert logging.getLogger("hypercorn.access").handlers == []


async def test_port_and_bound_before_the_first_start() -> None:
    server = HTTPServer(health_app(), port=0)
    assert not server.listening
    assert server.in_flight == 0
    message = (
        "HTTPServer for 127.0.0.1:0 has not listened yet; its address is known once its"
        " child has started (await server.wait_listening())"
    )
    with pytest.raises(RuntimeError, match=f"^{re.escape(message)}$"):
        server.port  # noqa: B018
    assert repr(server) == "<HTTPServer 127.0.0.1:0 in_flight=0>"


def sync_app(scope: object, receive: object, send: object) -> None:
    pass


class AppClass:
    async def __call__(self, scope: object, receive: object, send: object) -> None:
        pass


async def asgi(scope: object, receive: object, send: object) -> None:
    pass


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"app": sync_app},
            "HTTPServer: app must be an ASGI 3 app, an async callable app(scope, receive,"
            " send) (got function 'sync_app'); pass an app instance such as Starlette(...)"
            " or an 'async def' function",
        ),
        (
            {"app": AppClass},
            "HTTPServer: app must be an ASGI 3 app, an async callable app(scope, receive,"
            " send) (got type 'AppClass'); pass an app instance such as Starlette(...) or"
            " an 'async def' function",
        ),
        (
            {"app": None},
            "HTTPServer: app must be an ASGI 3 app, an async callable app(scope, receive,"
            " send) (got NoneType None); pass an app instance such as Starlette(...) or an"
            " 'async def' function",
        ),
        (
            {"host": ""},
            "HTTPServer: host must be a non-empty host name or IP address without spaces"
            " (got ''); e.g. host='127.0.0.1' or host='0.0.0.0'",
        ),
        (
            {"host": 127},
            "HTTPServer: host must be a non-empty host name or IP address without spaces"
            " (got 127); e.g. host='127.0.0.1' or host='0.0.0.0'",
        ),
        (
            {"host": "127.0.0.1:80"},
            "HTTPServer: host must be a host name or IP address without a port"
            " (got '127.0.0.1:80'); pass the port as port=...",
        ),
        (
            {"port": -1},
            "HTTPServer: port must be within [0, 65535] (got -1); 0 picks a free port",
        ),
        (
            {"port": 65536},
            "HTTPServer: port must be within [0, 65535] (got 65536); 0 picks a free port",
        ),
        (
            {"port": "80"},
            "HTTPServer: port must be an int within [0, 65535] (got '80'); 0 picks a free port",
        ),
        (
            {"port": True},
            "HTTPServer: port must be an int within [0, 65535] (got True); 0 picks a free port",
        ),
        ({"drain": 5}, "HTTPServer: drain must be a DrainDelay or None (got 5)"),
        (
            {"config": {"bind": "x"}},
            "HTTPServer: config must be a hypercorn.config.Config or None (got {'bind': 'x'})",
        ),
        (
            {"graceful_timeout": -1},
            "HTTPServer: graceful_timeout must be >= 0 or None (got -1)",
        ),
        (
            {"graceful_timeout": math.nan},
            "HTTPServer: graceful_timeout must be >= 0 or None (got nan)",
        ),
        ({"body_timeout": 0}, "HTTPServer: body_timeout must be > 0 (got 0)"),
        ({"body_timeout": None}, "HTTPServer: body_timeout must be a number > 0 (got None)"),
    ],
)
def test_bad_constructor_inputs(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"app": asgi, **kwargs}
    app = arguments.pop("app")
    with pytest.raises(SpecError, match=f"^{re.escape(message)}$"):
        HTTPServer(app, **arguments)


def test_a_coroutine_object_as_app_is_refused_and_closed() -> None:
    coroutine = asgi({}, None, None)
    with pytest.raises(SpecError, match=r"^HTTPServer: app must be an ASGI app, not a coroutine"):
        HTTPServer(coroutine)  # type: ignore[arg-type]
    assert inspect.getcoroutinestate(coroutine) == "CORO_CLOSED"  # no "never awaited" warning


def config_with(**values: object) -> Config:
    config = Config()
    for name, value in values.items():
        setattr(config, name, value)
    return config


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            config_with(bind=["0.0.0.0:80"]),
            "HTTPServer: config.bind is set (['0.0.0.0:80']), but the server binds host:port"
            " itself; pass host= and port= instead (one HTTPServer per address)",
        ),
        (
            config_with(insecure_bind="0.0.0.0:80"),
            "HTTPServer: config.insecure_bind is set (['0.0.0.0:80']), but the server binds"
            " host:port itself; pass host= and port= instead (one HTTPServer per address)",
        ),
        (
            config_with(quic_bind="0.0.0.0:443"),
            "HTTPServer: config.quic_bind is set (['0.0.0.0:443']); HTTP/3 is not supported"
            " by HTTPServer; leave quic_bind unset",
        ),
        (
            config_with(workers=4),
            "HTTPServer: config.workers must be 1 (got 4); the server runs in this process"
            " as a supervised child; run more processes for more workers",
        ),
        (
            config_with(debug=True),
            "HTTPServer: config.debug has no effect when hypercorn serves under Trio (got"
            " True); leave it False",
        ),
    ],
)
def test_bad_configs(config: Config, message: str) -> None:
    with pytest.raises(SpecError, match=f"^{re.escape(message)}$"):
        HTTPServer(asgi, config=config)


def test_good_hosts_and_the_child_spec() -> None:
    assert HTTPServer(asgi, host="::1").host == "::1"
    assert HTTPServer(asgi, host="[::1]").host == "::1"
    assert HTTPServer(asgi, host="localhost", port=0).host == "localhost"
    server = HTTPServer(asgi)
    spec = server.child_spec("web", shutdown_timeout=2.5)
    assert (spec.name, spec.shutdown_timeout, spec.is_service) == ("web", 2.5, True)
    assert server.child_spec().shutdown_timeout is None
    hook = server.shutdown_hook(timeout=1.0)
    assert (hook.name, hook.priority, hook.timeout) == ("http: stop accepting", 0, 1.0)
    with pytest.raises(SpecError, match=r"^ChildSpec 'web': shutdown_timeout must be >= 0"):
        server.child_spec("web", shutdown_timeout=-1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"app": sync_app},
            "health_app: app must be an ASGI 3 app, an async callable app(scope, receive,"
            " send) (got function 'sync_app'); pass an app instance such as Starlette(...)"
            " or an 'async def' function",
        ),
        (
            {"metrics": object()},
            "health_app: metrics must have an exposition() method returning (body,"
            " content_type) (got <object object at ",
        ),
        ({"drain": 1.0}, "health_app: drain must be a DrainDelay or None (got 1.0)"),
    ],
)
def test_bad_health_app_inputs(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=f"^{re.escape(message)}"):
        health_app(**kwargs)


def test_without_hypercorn_the_import_says_how_to_install_it() -> None:
    assert import_message_without("trio_supervise.integrations.http", "hypercorn") == (
        "trio_supervise.integrations.http needs hypercorn, which is not installed; install the"
        " extra: pip install 'trio-supervise[http]'\n"
    )


# ------------------------------------------------------------------ an inherited socket


async def test_a_server_on_an_inherited_socket_serves_it_and_leaves_it_open() -> None:
    # The multi-core demo: a parent binds one port and passes the socket to its workers.
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"shared"})

    with socket.create_server(("127.0.0.1", 0)) as shared:
        port = shared.getsockname()[1]
        server = HTTPServer(app, fd=shared.fileno())
        spec = SupervisorSpec("root", [server.child_spec()])
        async with open_client() as client:
            with trio.fail_after(FAIL_SAFE):
                async with supervisor_tree(spec, hooks=[server.shutdown_hook()]) as tree:
                    assert server.bound == (f"http://127.0.0.1:{port}",)
                    assert (await client.get(f"http://127.0.0.1:{port}/")).text == "shared"
                    await tree.restart_child("http")
                    assert (await client.get(f"http://127.0.0.1:{port}/")).text == "shared"
        assert shared.fileno() != -1  # the server closed its own copies only
        assert shared.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: (-1, None), "HTTPServer: fd must be >= 0 (got -1)"),
        (lambda: (True, None), "HTTPServer: fd must be an int >= 0 (got True)"),
        (lambda: (10_000, None), "HTTPServer: fd 10000 is not an open socket"),
        (lambda: (None, socket.socket()), "is not a listening TCP socket; call listen()"),
    ],
)
def test_a_bad_inherited_socket_is_refused(make: Any, message: str) -> None:
    fd, sock = make()
    try:
        with pytest.raises(SpecError) as caught:
            HTTPServer(health_app(), fd=sock.fileno() if sock is not None else fd)
        assert message in str(caught.value)
    finally:
        if sock is not None:
            sock.close()
