"""The observer's API, streams and actions, served by a real HTTPServer on 127.0.0.1.

The page itself is tested in a real browser (``test_observer_page.py``).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import pytest
import trio

from trio_supervise import (
    Backoff,
    ChildSpec,
    ChildState,
    Restart,
    SupervisorSpec,
    SupervisorTree,
    supervisor_tree,
)
from trio_supervise.integrations.http import HTTPServer
from trio_supervise.integrations.observer import observer_app
from trio_supervise.integrations.observer._streams import EVENT_BUFFER
from trio_supervise.testing import sleeper, wait_state

FAIL_SAFE = 10.0
TOKEN = "s3cret-token"


class Boom(Exception):
    pass


def crash_on(event: trio.Event) -> Any:
    async def crashes() -> None:
        await event.wait()
        raise Boom("on purpose")

    return crashes


@asynccontextmanager
async def observed(
    children: Sequence[ChildSpec | SupervisorSpec], *, token: str | None = TOKEN
) -> AsyncIterator[tuple[SupervisorTree, httpx.AsyncClient]]:
    """A tree of ``children`` and its observer (served by the tree itself), and a client."""
    server = HTTPServer(observer_app(token=token), host="127.0.0.1", port=0)
    spec = SupervisorSpec(
        "app",
        [*children, server.child_spec("observer")],
        backoff=Backoff(initial=0.5, jitter=0.0),
        max_restarts=100,
    )
    with trio.fail_after(FAIL_SAFE):
        async with (
            supervisor_tree(spec) as tree,
            httpx.AsyncClient(base_url=server.bound[0], trust_env=False) as client,
        ):
            yield tree, client


def paths(node: dict[str, Any]) -> list[str]:
    return [node["path"], *(p for child in node["children"] for p in paths(child))]


@attrs.define(eq=False)
class SSEClient:
    """A server-sent events reader over a raw HTTP/1.0 connection (the body ends at close).

    Not httpx: leaving one of its streams early leaves async generators to the garbage
    collector, which Trio reports as a ResourceWarning.
    """

    stream: trio.SocketStream
    status: int = 0
    headers: dict[str, str] = attrs.Factory(dict)
    _buffer: bytes = b""

    async def _line(self) -> str:
        while b"\n" not in self._buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("the server closed the stream")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode("utf-8").rstrip("\r")

    async def head(self) -> None:
        self.status = int((await self._line()).split()[1])
        while line := await self._line():
            key, _, value = line.partition(":")
            self.headers[key.strip().lower()] = value.strip()

    async def message(self) -> tuple[str | None, Any]:
        """The next ``(event name, JSON data)``; comments and ``retry:`` are skipped."""
        name: str | None = None
        while True:
            line = await self._line()
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                await self._line()  # the blank line that ends the event
                return name, data


@asynccontextmanager
async def sse(client: httpx.AsyncClient, path: str, **headers: str) -> AsyncIterator[SSEClient]:
    url = client.base_url
    assert url.host is not None
    assert url.port is not None
    stream = await trio.open_tcp_stream(url.host, url.port)
    async with stream:
        lines = [f"GET {path} HTTP/1.0", f"Host: {url.host}:{url.port}"]
        lines += [f"{key.replace('_', '-')}: {value}" for key, value in headers.items()]
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        reader = SSEClient(stream)
        await reader.head()
        yield reader


# ---------------------------------------------------------------------------- the API


async def test_the_tree_as_json_with_the_contracts_fields() -> None:
    children: list[ChildSpec | SupervisorSpec] = [
        ChildSpec("worker", sleeper()),
        SupervisorSpec("db", [ChildSpec("pool", sleeper())]),
    ]
    async with observed(children) as (tree, client):
        body = (await client.get("/api/tree")).json()
        assert paths(body) == ["", "worker", "db", "db/pool", "observer"]
        pool = body["children"][1]["children"][0]
        for field in ("path", "name", "kind", "state", "restarts", "health", "last_error"):
            assert field in pool
        assert {field: pool[field] for field in ("name", "kind", "state", "restarts")} == {
            "name": "pool",
            "kind": "worker",
            "state": "running",
            "restarts": 0,
        }
        assert pool["health"] == "healthy"
        assert pool["pid"] is None
        assert pool["started_at"] == tree.info("db/pool").started_at
        assert body["kind"] == "supervisor"
        info = (await client.get("/api/info")).json()
        assert info.pop("now") > 0
        assert info == {"name": "app", "actions": True}


async def test_events_oldest_first_and_a_crash_with_its_traceback() -> None:
    crash = trio.Event()
    async with observed([ChildSpec("w", crash_on(crash), restart=Restart.TRANSIENT)]) as (
        tree,
        client,
    ):
        crash.set()
        await wait_state(tree, "w", ChildState.RESTARTING)
        events = (await client.get("/api/events")).json()
        assert [e["kind"] for e in events if e["path"] == "w"][:3] == [
            "started",
            "crashed",
            "restart_scheduled",
        ]
        crashed = next(e for e in events if e["kind"] == "crashed")
        assert crashed["error"] == "Boom: on purpose"
        assert set(crashed) == {"kind", "path", "time", "restarts", "error", "detail"}
        assert [e["time"] for e in events] == sorted(e["time"] for e in events)
        node = (await client.get("/api/tree")).json()["children"][0]
        assert node["last_error"] == "Boom: on purpose"
        assert node["restart_at"] == pytest.approx(crashed["time"] + 0.5)
        trace = (await client.get("/api/children/w/error")).json()["traceback"]
        assert "Traceback (most recent call last)" in trace
        assert "raise Boom" in trace


async def test_unknown_paths_and_assets_are_404_naming_them() -> None:
    async with observed([ChildSpec("w", sleeper())]) as (_, client):
        response = await client.get("/api/children/nope/error")
        assert response.status_code == 404
        assert "nope" in response.json()["error"]
        assert (await client.get("/static/../_app.py")).status_code == 404
        assert (await client.get("/static/secret.txt")).status_code == 404
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert (await client.get("/static/observer.js")).status_code == 200


async def test_no_secret_of_a_spec_is_shown() -> None:
    # A process child's command and environment, a target's arguments: never in the API.
    password = "hunter2-very-secret"
    children = [
        ChildSpec("with-args", sleeper_with_args, (f"postgresql://app:{password}@db/app",)),
        ChildSpec.process(
            "proc",
            [sys.executable, "-c", "import time; time.sleep(60)"],
            env={"PGPASSWORD": password},
        ),
    ]
    async with observed(children) as (_, client):
        for url in ("/api/tree", "/api/events", "/api/shutdown", "/api/info", "/"):
            assert password not in (await client.get(url)).text, url


async def sleeper_with_args(dsn: str) -> None:
    await trio.sleep_forever()


# ----------------------------------------------------------------------------- actions


async def test_actions_need_the_token_and_show_as_their_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with observed([ChildSpec("w", sleeper())]) as (tree, client):
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        missing = await client.post("/api/children/w/terminate")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = await client.post(
            "/api/children/w/terminate", headers={"Authorization": "Bearer x"}
        )
        assert wrong.status_code == 401
        basic = await client.post(
            "/api/children/w/terminate", headers={"Authorization": f"Basic {TOKEN}"}
        )
        assert basic.status_code == 401
        assert tree.info("w").state.value == "running"  # none of them did anything

        with caplog.at_level(logging.INFO, logger="trio_supervise"):
            done = await client.post("/api/children/w/terminate", headers=bearer)
        assert (done.status_code, done.json()) == (
            200,
            {"path": "w", "action": "terminate", "state": "stopped"},
        )
        [record] = [r for r in caplog.records if getattr(r, "kind", "") == "OBSERVER_ACTION"]
        assert record.name == "trio_supervise.observer"
        assert "terminate w" in record.getMessage()
        assert [e.kind.value for e in tree.history if e.path == "w"][-1] == "terminated"

        again = await client.post("/api/children/w/terminate", headers=bearer)
        assert again.status_code == 200  # terminating a stopped child is harmless
        started = await client.post("/api/children/w/start", headers=bearer)
        assert started.json()["state"] == "running"
        busy = await client.post("/api/children/w/start", headers=bearer)
        assert busy.status_code == 409
        assert "not stopped" in busy.json()["error"]
        restarted = await client.post("/api/children/w/restart", headers=bearer)
        assert restarted.status_code == 200
        assert tree.info("w").restarts == 2  # start and restart both count, as restart_child
        assert (await client.post("/api/children/w/explode", headers=bearer)).status_code == 404
        assert (await client.post("/api/children/ghost/restart", headers=bearer)).status_code == 404
        root = await client.post("/api/children//restart", headers=bearer)
        assert root.status_code in (400, 404)


async def test_without_a_token_the_observer_is_read_only() -> None:
    async with observed([ChildSpec("w", sleeper())], token=None) as (tree, client):
        response = await client.post(
            "/api/children/w/terminate", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert response.status_code == 403
        assert "read-only" in response.json()["error"]
        assert (await client.get("/api/info")).json()["actions"] is False
        assert tree.info("w").state.value == "running"


async def test_other_origins_are_refused_streams_and_actions() -> None:
    async with observed([ChildSpec("w", sleeper())]) as (tree, client):
        evil = {"Origin": "http://evil.example", "Authorization": f"Bearer {TOKEN}"}
        assert (await client.get("/api/events/stream", headers=evil)).status_code == 403
        assert (await client.get("/api/stream", headers=evil)).status_code == 403
        assert (await client.post("/api/children/w/terminate", headers=evil)).status_code == 403
        assert tree.info("w").state.value == "running"
        own = {"Origin": str(client.base_url).rstrip("/"), "Authorization": f"Bearer {TOKEN}"}
        assert (await client.post("/api/children/w/terminate", headers=own)).status_code == 200


@pytest.mark.parametrize(
    ("token", "error"),
    [("", ValueError), ("   ", ValueError), (b"bytes", TypeError), (12, TypeError)],
)
def test_bad_tokens_are_refused(token: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="observer_app: token"):
        observer_app(token=token)


def test_a_tree_that_is_not_one_is_refused() -> None:
    with pytest.raises(TypeError, match="observer_app: tree must be the handle"):
        observer_app("tree")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- streams


async def test_the_event_stream_sends_each_event_as_one_json_data_line() -> None:
    crash = trio.Event()
    async with (
        observed([ChildSpec("w", crash_on(crash), restart=Restart.TRANSIENT)]) as (_, client),
        sse(client, "/api/events/stream") as stream,
    ):
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        crash.set()
        received = [await stream.message(), await stream.message()]
        assert [(name, data["kind"]) for name, data in received] == [
            (None, "crashed"),
            (None, "restart_scheduled"),
        ]
        assert received[0][1]["error"] == "Boom: on purpose"


async def test_the_page_stream_sends_a_snapshot_then_coalesced_changes() -> None:
    crash = trio.Event()
    children: list[ChildSpec | SupervisorSpec] = [
        ChildSpec("w", crash_on(crash)),
        SupervisorSpec("pool", []),
    ]
    async with observed(children) as (tree, client), sse(client, "/api/stream") as stream:
        name, snapshot = await stream.message()
        assert name == "snapshot"
        assert paths(snapshot["tree"]) == ["", "w", "pool", "observer"]
        assert snapshot["shutdown"] is None
        assert {"now", "events"} <= snapshot.keys()
        crash.set()
        name, changes = await stream.message()
        assert name == "changes"
        # The crash and the restart decision came together: one delta of the child.
        assert [e["kind"] for e in changes["events"]] == ["crashed", "restart_scheduled"]
        [node] = changes["nodes"]
        assert (node["path"], node["state"], node["restarts"]) == ("w", "restarting", 1)
        assert "children" not in node
        # A child added at run time arrives with its place among its siblings.
        await tree.start_child(ChildSpec("b", sleeper()), under="pool")
        await tree.start_child(ChildSpec("a", sleeper()), under="pool")
        seen: dict[str, Any] = {}
        orders: dict[str, list[str]] = {}
        while "pool/a" not in seen:
            name, changes = await stream.message()
            seen.update({n["path"]: n for n in changes["nodes"]})
            orders.update(changes["order"])
        assert orders == {"pool": ["b", "a"]}
        await tree.terminate_child("pool/b")
        tree.delete_child("pool/b")
        removed: list[str] = []
        while not removed:
            name, changes = await stream.message()
            removed = changes["removed"]
        assert removed == ["pool/b"]


async def test_a_client_that_falls_behind_costs_a_bounded_buffer() -> None:
    # The listener of a stalled client keeps at most EVENT_BUFFER events, then drops them
    # and tells the client so (it would otherwise grow without a bound).
    from trio_supervise.integrations.observer._streams import _Feed

    feed = _Feed(limit=3)
    for _ in range(10):
        feed(object())  # type: ignore[arg-type]
    assert feed.overflowed
    assert len(feed.events) <= 3
    assert EVENT_BUFFER == 10_000


async def test_a_process_childs_new_output_reaches_the_page_without_an_event() -> None:
    script = (
        "import time\nfor i in range(100):\n    print(f'line {i}', flush=True)\n"
        "    time.sleep(0.2)\n"
    )
    children = [ChildSpec.process("proc", [sys.executable, "-c", script])]
    async with observed(children) as (_, client), sse(client, "/api/stream") as stream:
        assert (await stream.message())[0] == "snapshot"
        with trio.fail_after(5):
            while True:
                _, changes = await stream.message()
                if not changes["events"] and changes["nodes"]:
                    break
        [node] = changes["nodes"]
        assert node["path"] == "proc"
        assert node["pid"] is not None
        assert node["output_tail"][-1].startswith("line ")


async def test_it_mounts_under_a_prefix_beside_health_app() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from trio_supervise.integrations.http import health_app

    app = health_app(Starlette(routes=[Mount("/observer", app=observer_app(token=TOKEN))]))
    server = HTTPServer(app, host="127.0.0.1", port=0)
    spec = SupervisorSpec("app", [ChildSpec("w", sleeper()), server.child_spec("web")])
    with trio.fail_after(FAIL_SAFE):
        async with (
            supervisor_tree(spec),
            httpx.AsyncClient(base_url=server.bound[0], trust_env=False) as client,
        ):
            assert (await client.get("/health/live")).json() == {"live": True}
            page = await client.get("/observer/")
            assert page.status_code == 200
            # The page's links are relative: under the prefix they stay under it.
            assert 'src="static/observer.js"' in page.text
            assert (await client.get("/observer/static/observer.js")).status_code == 200
            tree = (await client.get("/observer/api/tree")).json()
            assert paths(tree) == ["", "w", "web"]
