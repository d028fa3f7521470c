"""``trio-supervise tree URL``: a running service's tree from its observer, in a terminal."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import trio
from test_observer import crash_on, observed

from trio_supervise import ChildSpec, SupervisorSpec
from trio_supervise._cli_tree import render
from trio_supervise.testing import sleeper

FAIL_SAFE = 15.0


def tree_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "trio_supervise", "tree", *args]


async def test_it_prints_the_tree_with_states_restarts_health_and_errors() -> None:
    crash = trio.Event()
    children: list[ChildSpec | SupervisorSpec] = [
        ChildSpec("flaky", crash_on(crash)),
        SupervisorSpec("db", [ChildSpec("pool", sleeper())]),
    ]
    async with observed(children) as (tree, client):
        crash.set()
        while tree.info("flaky").restarts == 0:  # noqa: ASYNC110 - the tree's own state
            await trio.sleep(0.01)
        result = await trio.run_process(
            tree_command(str(client.base_url)), capture_stdout=True, capture_stderr=True
        )
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "app (supervisor, running, degraded)"
    assert lines[1].startswith("  flaky (worker, restarting in ")
    assert lines[1].endswith(", restarts=1, degraded)  last error: Boom: on purpose")
    assert lines[2:] == [
        "  db (supervisor, running, restarts=0, healthy)",
        "    pool (worker, running, restarts=0, healthy)",
        "  observer (worker, running, restarts=0, healthy)",
    ]
    assert result.stderr == b""


async def test_watch_redraws_on_every_event_until_ctrl_c() -> None:
    crash = trio.Event()
    async with observed([ChildSpec("w", crash_on(crash))]) as (_, client):
        process = await trio.lowlevel.open_process(
            tree_command(str(client.base_url), "--watch"), stdout=subprocess.PIPE
        )
        assert process.stdout is not None
        seen = b""
        with trio.fail_after(FAIL_SAFE):
            while b"w (worker, running, restarts=0" not in seen:
                seen += await process.stdout.receive_some()
            crash.set()  # it crashes at every start from now on
            while not re.search(rb"w \(worker, restarting in [0-9.]+ s, restarts=[1-9]", seen):
                seen += await process.stdout.receive_some()
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
        await process.stdout.aclose()
    assert b"\x1b[2J" in seen  # each drawing clears the screen first


async def test_an_unreachable_observer_is_one_line_and_exit_1() -> None:
    result = await trio.run_process(
        tree_command("http://127.0.0.1:1"), capture_stderr=True, check=False
    )
    assert result.returncode == 1
    [line] = result.stderr.decode().splitlines()
    assert line.startswith("trio-supervise tree: cannot reach http://127.0.0.1:1/api/info:")


async def test_a_url_that_is_not_one_is_a_usage_error() -> None:
    result = await trio.run_process(tree_command("ftp://x"), capture_stderr=True, check=False)
    assert result.returncode == 2
    assert "not an http:// or https:// URL: 'ftp://x'" in result.stderr.decode()


def test_render_shows_pids_and_lock_holders() -> None:
    node = {
        "path": "",
        "name": "app",
        "kind": "supervisor",
        "state": "running",
        "restarts": 0,
        "health": "healthy",
        "children": [
            {
                "path": "p",
                "name": "p",
                "kind": "worker",
                "state": "running",
                "restarts": 2,
                "health": "healthy",
                "pid": 4242,
                "children": [],
            },
            {
                "path": "s",
                "name": "s",
                "kind": "worker",
                "state": "starting",
                "restarts": 0,
                "health": "healthy",
                "lock_holder": "web-2:17",
                "children": [],
            },
        ],
    }
    assert render(node).splitlines()[1:] == [
        "  p (worker, running, restarts=2, healthy, pid=4242)",
        "  s (worker, starting, restarts=0, healthy, lock held by web-2:17)",
    ]
