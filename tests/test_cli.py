"""The demo: in virtual time, and as a real process stopped by a real Ctrl+C."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys

import pytest
import trio
import trio.testing

from trio_supervise._cli import demo_spec, main, run_demo


async def test_demo_shows_restarts_and_rest_for_one(autojump_clock: trio.testing.MockClock) -> None:
    out = io.StringIO()
    code = await run_demo(out, duration=14.0, seed=3, handle_signals=False)
    text = out.getvalue()
    assert code == 0
    lines = text.splitlines()
    assert lines[0] == "demo (supervisor, running)"
    # The flaky worker crashes 3 s after each start and is restarted with backoff.
    assert sum("CRASHED           flaky (DemoCrash" in line for line in lines) == 3
    assert sum("RESTARTED         flaky" in line for line in lines) == 3
    # The connection drops at 12.2 s; rest-for-one restarts the queries after it.
    stop_queries = lines.index(
        next(line for line in lines if "EXITED            db/queries" in line)
    )
    restart_connection = lines.index(
        next(line for line in lines if "RESTARTED         db/connection" in line)
    )
    restart_queries = lines.index(
        next(line for line in lines if "RESTARTED         db/queries" in line)
    )
    assert stop_queries < restart_connection < restart_queries
    assert "  flaky (worker, running, restarts=2)" in lines  # the tree rendered at 10 s
    assert lines[-1] == "done: 4 crashes handled"
    assert "shutdown (--duration 14s passed)" in text


def test_demo_spec_is_valid() -> None:
    spec = demo_spec(1.0)
    assert [child.name for child in spec.children] == ["steady", "flaky", "db"]


def test_cli_needs_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main([])
    assert excinfo.value.code == 2
    assert "the following arguments are required: command" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_shuts_the_demo_down_gracefully() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "trio_supervise", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "demo (supervisor, running)\n"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, err
    assert "shutdown (signal SIGINT)" in out
    assert out.splitlines()[-1].startswith("done: ")
