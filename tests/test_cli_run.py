"""``trio-supervise run`` and ``check`` (contract §8): real processes, signals and sockets."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import free_port

FAIL_SAFE = 20.0

SERVICE = """
import trio
from trio_supervise import ChildSpec, Restart, Strategy, SupervisorSpec

async def worker():
    await trio.sleep_forever()

async def crash():
    raise RuntimeError("on purpose")

spec = SupervisorSpec(
    "svc",
    [
        ChildSpec("w", worker),
        SupervisorSpec("inner", [ChildSpec("x", worker, restart=Restart.TRANSIENT)],
                       strategy=Strategy.ONE_FOR_ALL, backoff=None),
    ],
)

def make():
    return spec

def needs(arg):
    return spec

def not_a_spec():
    return 42

def bad_spec():
    return SupervisorSpec("bad", [ChildSpec("a", worker), ChildSpec("a", worker)])

failing = SupervisorSpec("failing", [ChildSpec("c", crash)], max_restarts=0)
number = 3
"""


@pytest.fixture
def service_dir(tmp_path: Path) -> Path:
    (tmp_path / "svc.py").write_text(textwrap.dedent(SERVICE))
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    return tmp_path


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_SUPERVISE_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "trio_supervise", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=FAIL_SAFE,
        check=False,
    )


def test_check_prints_the_tree_of_a_spec_or_of_a_function_returning_one(
    service_dir: Path,
) -> None:
    expected = (
        "svc (supervisor, one_for_one, 3 restarts / 5 s, backoff 0.1-30 s)\n"
        "  w (worker, permanent, shutdown_timeout 5 s)\n"
        "  inner (supervisor, one_for_all, 3 restarts / 5 s)\n"
        "    x (worker, transient, shutdown_timeout 5 s)\n"
    )
    for target in ("svc:spec", "svc:make"):
        result = cli("check", target, cwd=service_dir)
        assert (result.returncode, result.stdout, result.stderr) == (0, expected, "")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("check", "svc"), {}, "MODULE:ATTR: expected a module and a name such as"),
        (("check", "nosuch:spec"), {}, "MODULE:ATTR: no module named 'nosuch'"),
        (("check", "broken:spec"), {}, "importing 'broken' raised RuntimeError: boom at import"),
        (("check", "svc:missing"), {}, "module 'svc' has no attribute 'missing'"),
        (("check", "svc:number"), {}, "svc:number is int 3, not a SupervisorSpec"),
        (("check", "svc:not_a_spec"), {}, "svc:not_a_spec() is int 42, not a SupervisorSpec"),
        (("check", "svc:needs"), {}, "svc:needs: calling it with no arguments failed"),
        (("check", "svc:bad_spec"), {}, "svc:bad_spec: SupervisorSpec 'bad'"),
        (
            ("run", "svc:spec"),
            {"TRIO_SUPERVISE_BOGUS": "1"},
            "unknown variable TRIO_SUPERVISE_BOGUS",
        ),
        (
            ("run", "svc:spec"),
            {"TRIO_SUPERVISE_DRAIN_DELAY": "-1"},
            "TRIO_SUPERVISE_DRAIN_DELAY: must be a finite number >= 0 (got '-1')",
        ),
        (
            ("run", "svc:spec", "--shutdown-deadline", "0"),
            {},
            "--shutdown-deadline: must be a finite number > 0 (got '0')",
        ),
        (
            ("run", "svc:spec", "--shutdown-deadline", "nan"),
            {},
            "--shutdown-deadline: must be a finite number > 0 (got 'nan')",
        ),
        (("run", "svc:spec", "--health", "x:y"), {}, "--health: must be HOST:PORT or PORT"),
        (("run", "svc:spec", "--health", "70000"), {}, "--health: port must be in [0, 65535]"),
        (("run", "svc:spec", "--log-level", "loud"), {}, "--log-level: must be one of DEBUG"),
        (
            ("run", "svc:spec"),
            {"TRIO_SUPERVISE_LOG_FORMAT": "xml"},
            "TRIO_SUPERVISE_LOG_FORMAT: must be one of text, logfmt, json (got 'xml')",
        ),
        (
            ("run", "svc:spec", "--observer", "x:y"),
            {},
            "--observer: must be HOST:PORT or PORT",
        ),
        (
            ("run", "svc:spec", "--observer", "9000"),
            {"TRIO_SUPERVISE_OBSERVER_TOKEN": " "},
            "TRIO_SUPERVISE_OBSERVER_TOKEN is empty; unset it for a read-only observer",
        ),
        (
            ("run", "svc:spec"),
            {"TRIO_SUPERVISE_OBSERVER_TOKEN": "t"},
            "TRIO_SUPERVISE_OBSERVER_TOKEN is set but there is no --observer to use it",
        ),
        (
            ("run", "svc:spec", "--drain-delay", "5", "--shutdown-deadline", "5"),
            {},
            "--drain-delay (5) must be shorter than --shutdown-deadline (5)",
        ),
        (
            ("run", "svc:spec", "--drain-delay", "1"),
            {"TRIO_SUPERVISE_DRAIN_DELAY": "oops"},
            None,  # the command line wins: the bad variable is never read
        ),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_it(
    service_dir: Path, args: tuple[str, ...], env: dict[str, str], message: str | None
) -> None:
    if message is None:
        process = start(service_dir, *args[1:], env=env)
        stop(process)
        return
    result = cli(*args, cwd=service_dir, env=env)
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"trio-supervise {args[0]}: ")
    assert message in lines[0]
    assert "Traceback" not in result.stderr


def start(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``trio-supervise run ARGS``, returned once it told its notify socket READY=1."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_SUPERVISE_")}
    environ.update(env or {})
    path = str(cwd / f"notify-{time.monotonic_ns()}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(path)
        notify.settimeout(FAIL_SAFE)
        environ["NOTIFY_SOCKET"] = path
        process = subprocess.Popen(
            [sys.executable, "-m", "trio_supervise", "run", *args],
            cwd=cwd,
            env=environ,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            while "READY=1" not in notify.recv(4096).decode().splitlines():
                pass
        except TimeoutError:
            process.kill()
            pytest.fail(f"never ready: {process.communicate()[1]}")
    return process


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=FAIL_SAFE)
    assert process.returncode == 0, err
    return err


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + FAIL_SAFE
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    pytest.fail(f"{url} never answered 200")


@pytest.fixture
def running(service_dir: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    process = start(
        service_dir, "svc:spec", "--drain-delay", "0.5", env={"TRIO_SUPERVISE_HEALTH": str(port)}
    )
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_run_serves_health_and_metrics_and_drains_on_sigterm(
    running: tuple[subprocess.Popen[str], str],
) -> None:
    process, base = running
    wait_ready(f"{base}/health/ready")
    assert httpx.get(f"{base}/health/live", trust_env=False).json() == {"live": True}
    metrics = httpx.get(f"{base}/metrics", trust_env=False).text
    assert 'trio_supervise_child_up{path="inner/x"} 1.0' in metrics
    start_at = time.monotonic()
    process.send_signal(signal.SIGTERM)
    draining = httpx.get(f"{base}/health/ready", trust_env=False)
    assert draining.status_code == 503
    assert draining.json()["reason"].startswith("shutting down: drain delay")
    _, err = process.communicate(timeout=FAIL_SAFE)
    took = time.monotonic() - start_at
    assert process.returncode == 0, err
    assert 0.5 <= took < 2.5, took
    assert re.search(r"HOOK_FINISHED drain-delay: ok in 0\.5\d\ds", err), err


def test_run_serves_the_observer_with_actions_for_the_token(service_dir: Path) -> None:
    port = free_port()
    process = start(
        service_dir,
        "svc:spec",
        "--observer",
        str(port),
        env={"TRIO_SUPERVISE_OBSERVER_TOKEN": "let-me-in"},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(f"{base}/api/info")
        tree = httpx.get(f"{base}/api/tree", trust_env=False).json()
        names = [child["name"] for child in tree["children"]]
        assert names[-1] == "trio-supervise-observer"
        assert (
            httpx.get(f"{base}/", trust_env=False).headers["content-type"].startswith("text/html")
        )
        refused = httpx.post(f"{base}/api/children/inner/x/restart", trust_env=False)
        assert refused.status_code == 401
        done = httpx.post(
            f"{base}/api/children/inner/x/restart",
            headers={"Authorization": "Bearer let-me-in"},
            trust_env=False,
        )
        assert done.status_code == 200, done.text
    finally:
        err = stop(process)
    assert "kind=OBSERVER_ACTION" in err
    assert "observer: restart inner/x" in err


def test_the_command_line_wins_over_the_environment(service_dir: Path) -> None:
    process = start(
        service_dir,
        "svc:spec",
        "--drain-delay",
        "0.2",
        "--log-format",
        "json",
        env={"TRIO_SUPERVISE_DRAIN_DELAY": "3", "TRIO_SUPERVISE_LOG_FORMAT": "text"},
    )
    err = stop(process)
    assert re.search(r'"msg": "HOOK_FINISHED drain-delay: ok in 0\.2\d\ds"', err), err


def test_a_failed_tree_exits_1(service_dir: Path) -> None:
    result = cli("run", "svc:failing", "--log-format", "text", cwd=service_dir)
    assert result.returncode == 1
    assert "gave up" in result.stderr


def test_a_process_childs_own_variables_are_not_unknown(service_dir: Path) -> None:
    # A supervisor sets them for its process children, which may run trio-supervise too.
    process = start(
        service_dir,
        "svc:spec",
        env={"TRIO_SUPERVISE_PATH": "outer/svc", "TRIO_SUPERVISE_RESTARTS": "2"},
    )
    stop(process)


def test_run_tells_systemd_it_is_ready(service_dir: Path) -> None:
    stop(start(service_dir, "svc:spec"))  # start() waits for READY=1 on its notify socket


def test_a_sigterm_while_the_module_imports_is_a_shutdown_not_a_death(
    service_dir: Path,
) -> None:
    (service_dir / "slow.py").write_text("import time\ntime.sleep(1.5)\nfrom svc import spec\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_SUPERVISE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "trio_supervise", "run", "slow:spec"],
        cwd=service_dir,
        env=environ,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.8)  # the interpreter is up, the module still imports
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=FAIL_SAFE)
    assert process.returncode == 0, err
    assert "signal SIGTERM during the start" in err
