"""``trio-supervise demo --workers N``: HTTP worker processes on one shared port (issue 11)."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from test_demo import FAIL_SAFE, HOST, Demo, demo_command, http_client, report_rows
from trio_websocket import open_websocket_url

from trio_supervise._demo_workers import worker_deadline


@attrs.define(eq=False)
class Workers:
    """A running multi-process demo: the parent and its URLs."""

    demo: Demo
    base: str
    ws: str
    admin: str


@asynccontextmanager
async def run_workers_demo(tmp_path: Path, *extra: str) -> AsyncIterator[Workers]:
    """Start ``demo --workers 2`` on SQLite; kill it (and its group) at the end if it runs."""
    stderr_path = tmp_path / f"demo-{uuid.uuid4().hex[:8]}.log"
    command = demo_command(str(tmp_path / "notes.db"), "--admin-port", "0", *extra)
    with stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=stderr)
    demo = Demo(process, stderr_path)
    try:
        with trio.fail_after(FAIL_SAFE):
            line = await demo.readline()
        words = dict(word.split("=", 1) for word in line.split()[1:])
        assert line.startswith("ready "), line
        assert words["http"].startswith(f"http://{HOST}:"), line
        yield Workers(demo, words["http"], words["ws"], words["admin"])
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


async def worker_nodes(client: httpx.AsyncClient, admin: str) -> dict[str, dict[str, Any]]:
    """The worker process children in the parent's ``/tree``, by name."""
    tree = (await client.get(f"{admin}/tree")).json()["tree"]
    [http] = [node for node in tree["children"] if node["name"] == "http"]
    return {node["name"]: node for node in http["children"]}


async def worker_pids(client: httpx.AsyncClient, admin: str) -> dict[str, int | None]:
    return {name: node.get("pid") for name, node in (await worker_nodes(client, admin)).items()}


async def stop(workers: Workers) -> tuple[float, dict[str, str]]:
    """SIGTERM the parent: seconds until it exited 0, and its report's hook statuses."""
    demo = workers.demo
    start = time.monotonic()
    demo.process.send_signal(signal.SIGTERM)
    with trio.fail_after(FAIL_SAFE):
        out = await demo.read_rest()
        await demo.process.wait()
    took = time.monotonic() - start
    assert demo.process.returncode == 0, demo.stderr()
    _, rows = report_rows(out)
    return took, rows


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_two_workers_serve_one_port_and_the_parent_shows_them(tmp_path: Path) -> None:
    async with run_workers_demo(tmp_path, "--workers", "2", "--drain-delay", "0") as workers:
        async with http_client() as client:
            pids = await worker_pids(client, workers.admin)
            assert sorted(pids) == ["w1", "w2"]
            assert all(pid is not None and alive(pid) for pid in pids.values())
            # A worker computing a CPU-bound answer cannot accept: the other one does.
            served: set[int] = set()

            async def cpu() -> None:
                response = await client.get(f"{workers.base}/cpu?n=300000")
                served.add(response.json()["pid"])

            with trio.fail_after(FAIL_SAFE):
                while len(served) < 2:
                    async with trio.open_nursery() as nursery:
                        for _ in range(4):
                            nursery.start_soon(cpu)
            assert served == set(pids.values())
            tree = (await client.get(f"{workers.base}/tree")).json()
            assert tree["tree"]["name"] == "demo-worker"
            metrics = (await client.get(f"{workers.admin}/metrics")).text
            assert 'trio_supervise_child_up{path="http/w1"} 1.0' in metrics
            assert (await client.get(f"{workers.base}/health/ready")).status_code == 200
            assert (await client.get(f"{workers.admin}/health/ready")).status_code == 200
        _, rows = await stop(workers)
    assert set(rows.values()) == {"ok"}, rows
    assert "admin: stop accepting" in rows
    assert not any(alive(pid) for pid in pids.values() if pid is not None)


async def test_notes_posted_to_any_worker_reach_the_websocket_clients(tmp_path: Path) -> None:
    async with run_workers_demo(tmp_path, "--workers", "2", "--drain-delay", "0") as workers:
        async with (
            open_websocket_url(workers.ws) as ws,
            http_client() as client,
        ):
            assert json.loads(await ws.get_message()) == {"type": "hello"}
            ids = [
                (await client.post(f"{workers.base}/notes", json={"text": f"n{i}"})).json()["id"]
                for i in range(10)
            ]
            seen: list[int] = []
            with trio.fail_after(FAIL_SAFE):
                while len(seen) < len(ids):
                    message = json.loads(await ws.get_message())
                    assert message["type"] == "note"
                    seen.append(message["id"])
            assert seen == ids
        await stop(workers)


@attrs.define(eq=False)
class Writer:
    """A client posting notes, one connection per request, and what it got."""

    acked: dict[int, str] = attrs.Factory(dict)
    failures: list[tuple[float, str]] = attrs.Factory(list)
    acked_at: list[float] = attrs.Factory(list)
    sent: int = 0
    # Set to end after the request in flight: a cancelled httpx request leaves its body's
    # async generator to the garbage collector (a ResourceWarning).
    stopping: bool = False

    async def write(self, base: str) -> None:
        async with http_client() as client:
            while not self.stopping:
                text = f"note {self.sent}"
                self.sent += 1
                try:
                    response = await client.post(f"{base}/notes", json={"text": text})
                except httpx.TransportError as exc:  # in flight on the killed worker
                    self.failures.append((time.monotonic(), repr(exc)))
                    continue
                assert response.status_code == 201, response.text
                self.acked[response.json()["id"]] = text
                self.acked_at.append(time.monotonic())


# A request cut by the SIGKILL leaves httpx's request-body generator to the garbage
# collector, which reports it as unraisable; that is the client's, not the demo's.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator object ByteStream.__aiter__"
    ":pytest.PytestUnraisableExceptionWarning"
)
async def test_a_killed_worker_is_back_within_its_backoff_while_the_other_serves(
    tmp_path: Path,
) -> None:
    async with run_workers_demo(tmp_path, "--workers", "2", "--drain-delay", "0") as workers:
        writers = [Writer() for _ in range(4)]
        async with http_client() as client, trio.open_nursery() as nursery:
            for writer in writers:
                nursery.start_soon(writer.write, workers.base)
            with trio.fail_after(FAIL_SAFE):
                while sum(len(w.acked) for w in writers) < 100:  # noqa: ASYNC110 - in a process
                    await trio.sleep(0.01)
            pids = await worker_pids(client, workers.admin)
            killed = pids["w1"]
            assert killed is not None
            killed_at = time.monotonic()
            os.kill(killed, signal.SIGKILL)
            with trio.fail_after(FAIL_SAFE):
                while True:
                    w1 = (await worker_nodes(client, workers.admin))["w1"]
                    if w1["state"] == "running" and w1.get("pid") not in (None, killed):
                        break
                    await trio.sleep(0.01)
            back_after = time.monotonic() - killed_at
            await trio.sleep(0.5)  # both serve again
            for writer in writers:
                writer.stopping = True
        took, _ = await stop(workers)
    acked = {k: v for w in writers for k, v in w.acked.items()}
    failures = [failure for w in writers for failure in w.failures]
    # Only requests in flight on the killed worker fail: at most one per client.
    assert len(failures) <= len(writers), failures
    # The other worker kept serving: no writer went 0.5 s without an acknowledgement.
    for writer in writers:
        gaps = [b - a for a, b in zip(writer.acked_at, writer.acked_at[1:], strict=False)]
        assert max(gaps) < 0.5, max(gaps)
    assert back_after < 2.0, back_after  # 0.1 s backoff + the worker's start
    with sqlite3.connect(tmp_path / "notes.db") as db:
        stored = dict(db.execute("SELECT id, text FROM notes").fetchall())
    assert {k: stored.get(k) for k in acked} == acked  # nothing acknowledged is lost
    print(
        f"\nkilled worker back after {back_after:.2f}s; {len(acked)} notes acknowledged and"
        f" stored, {len(failures)} request(s) cut on the killed worker; SIGTERM → exit"
        f" {took:.2f}s"
    )


async def test_sigterm_drains_every_worker_at_once_within_one_deadline(tmp_path: Path) -> None:
    drain = 1.0
    async with run_workers_demo(tmp_path, "--workers", "3", "--drain-delay", str(drain)) as workers:
        async with http_client() as client:
            start = time.monotonic()
            workers.demo.process.send_signal(signal.SIGTERM)
            statuses: set[int] = set()
            with trio.fail_after(FAIL_SAFE):
                while time.monotonic() - start < drain * 0.8:
                    response = await client.get(f"{workers.base}/health/ready")
                    statuses.add(response.status_code)
                    assert (await client.get(f"{workers.base}/notes")).status_code == 200
                    await trio.sleep(0.05)
        demo = workers.demo
        with trio.fail_after(FAIL_SAFE):
            out = await demo.read_rest()
            await demo.process.wait()
        took = time.monotonic() - start
    assert demo.process.returncode == 0, demo.stderr()
    assert 503 in statuses  # the workers said not ready while still serving
    # One drain delay for all three, not one each.
    assert drain <= took < 2 * drain, took
    _, rows = report_rows(out)
    assert set(rows.values()) == {"ok"}, rows


def test_a_worker_deadline_leaves_the_parent_time_after_it() -> None:
    assert worker_deadline(20.0, 5.0) == 17.0
    assert worker_deadline(4.0, 3.0) == 3.5  # never at or below the drain delay


async def test_the_http_port_taken_stops_the_start_with_the_reason(tmp_path: Path) -> None:
    with socket.create_server((HOST, 0)) as taken:
        port = taken.getsockname()[1]
        command = demo_command(str(tmp_path / "n.db"), "--workers", "2", "--admin-port", "0")
        command[command.index("--port") + 1] = str(port)
        result = await trio.run_process(command, capture_stdout=True, capture_stderr=True,
                                        check=False)  # fmt: skip
    assert result.returncode == 1
    assert f"--port: cannot listen on {HOST}:{port}" in result.stderr.decode()


@pytest.mark.parametrize("bad", ["0", "65", "two"])
async def test_bad_worker_counts_are_refused(tmp_path: Path, bad: str) -> None:
    command = demo_command(str(tmp_path / "n.db"), "--workers", bad)
    result = await trio.run_process(command, capture_stderr=True, check=False)
    assert result.returncode == 2
    assert "--workers" in result.stderr.decode()
