"""The command line: argument checking in process, and the demo as a real process stopped by
a real Ctrl+C (SIGINT). The demo's service itself is tested end to end in ``test_demo.py``.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import signal_storm
from servers import free_port

import trio_supervise
from trio_supervise._cli import main

#: A fail-safe only: the demo starts and stops in about a second.
FAIL_SAFE = 30.0


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """``main()`` configures logging, as an application does: undo it after the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)


def test_cli_needs_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main([])
    assert excinfo.value.code == 2
    assert "the following arguments are required: command" in capsys.readouterr().err


def test_demo_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["demo", "--help"])
    assert excinfo.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "--host",
        "--port",
        "--ws-port",
        "--db",
        "--drain-delay",
        "--shutdown-deadline",
        "--log-level",
        "--log-format",
    ):
        assert option in out
    assert "default 127.0.0.1" in out
    assert "ready http=http://HOST:PORT ws=ws://HOST:PORT/ws" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["--version"])
    assert excinfo.value.code == 0
    assert capsys.readouterr().out == f"trio-supervise {trio_supervise.__version__}\n"


def test_the_demo_defaults_fit_kubernetes_default_grace_period(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The README's budget: shutdown_deadline + HARD_EXIT_GRACE < terminationGracePeriodSeconds
    # (30 by default); the demo's 30 s default did not fit.
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    deadline = re.search(
        r"seconds the whole shutdown may take \(default (\d+)", capsys.readouterr().out
    )
    assert deadline is not None
    assert float(deadline[1]) + trio_supervise.HARD_EXIT_GRACE < 30


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "70000"], "argument --port: must be in [0, 65535] (got 70000); 0 picks"),
        (["--ws-port", "web"], "argument --ws-port: not a port number: 'web'"),
        (
            ["--drain-delay", "-1"],
            "argument --drain-delay: must be a finite number >= 0 (got '-1')",
        ),
        (["--shutdown-deadline", "inf"], "argument --shutdown-deadline: must be a finite number"),
        # One rule, one message: "-3" said ">= 0", then "0" was refused as "must be > 0".
        (
            ["--shutdown-deadline", "-3"],
            "argument --shutdown-deadline: must be a finite number > 0 (got '-3')",
        ),
        (
            ["--shutdown-deadline", "0"],
            "argument --shutdown-deadline: must be a finite number > 0 (got '0')",
        ),
        (["--flaky-period", "0"], "argument --flaky-period: must be a finite number > 0 (got '0')"),
        (["--host", ""], "error: --host must be a host name or IP address (got '')"),
        (
            ["--drain-delay", "5", "--shutdown-deadline", "4"],
            "error: --shutdown-deadline (4) must be longer than --drain-delay (5): the shutdown"
            " has to drain",
        ),
        (["--log-level", "loud"], "argument --log-level: invalid choice: 'LOUD'"),
    ],
)
def test_demo_rejects_bad_options(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["demo", *argv])
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: trio-supervise demo ")
    assert message in err


def test_demo_without_its_extras_says_what_to_install(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes the import fail as a missing dependency would.
    monkeypatch.setitem(sys.modules, "trio_supervise._demo", None)
    assert main(["demo", "--port", "0", "--ws-port", "0", "--db", ":memory:"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "trio-supervise demo: the demo needs the http, websocket and metrics extras: pip install"
        " 'trio-supervise[http,websocket,metrics]'"
    )


@pytest.mark.usefixtures("restore_logging")
def test_demo_with_a_database_it_cannot_open_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-dir" / "demo.db"
    assert main(["demo", "--port", "0", "--ws-port", "0", "--db", str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"trio-supervise demo: --db: cannot open SQLite database {str(missing)!r}" in err
    assert "does not exist; create it first" in err
    # Nothing was listening: the database is opened first.
    assert "ready" not in capsys.readouterr().out


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("where", ["--db-file", "DATABASE_URL"])
def test_the_dsn_can_stay_off_the_command_line(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    # Issue 10, item 10: a password in --db is visible to every user through ps.
    dsn = f"postgresql://notes:s3cret@127.0.0.1:{free_port()}/notes"
    options = ["demo", "--port", "0", "--ws-port", "0"]
    if where == "--db-file":
        secret = tmp_path / "dsn"
        secret.write_text(dsn + "\n")
        options += ["--db-file", str(secret)]
    else:
        monkeypatch.setenv("DATABASE_URL", dsn)
    assert main(options) == 1  # nothing listens there: it was the database that was tried
    err = capsys.readouterr().err
    assert "cannot connect to PostgreSQL at 'postgresql://notes:***@127.0.0.1:" in err
    assert "s3cret" not in err


def test_the_command_line_wins_over_the_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@127.0.0.1:1/x")
    missing = tmp_path / "no-such-dir" / "demo.db"
    assert main(["demo", "--port", "0", "--ws-port", "0", "--db", str(missing)]) == 1
    assert f"cannot open SQLite database {str(missing)!r}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, r"cannot read '.+': \[Errno 2\]"), ("  \n", r"is empty; write the SQLite path")],
)
def test_a_bad_db_file_is_refused_naming_the_option(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | None, message: str
) -> None:
    secret = tmp_path / "dsn"
    if content is not None:
        secret.write_text(content)
    with pytest.raises(SystemExit) as excinfo:
        main(["demo", "--db-file", str(secret)])
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert "argument --db-file: " in err
    assert re.search(message, err), err


def test_db_and_db_file_exclude_each_other(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    secret = tmp_path / "dsn"
    secret.write_text("demo.db")
    with pytest.raises(SystemExit):
        main(["demo", "--db", "a.db", "--db-file", str(secret)])
    assert "not allowed with argument --db" in capsys.readouterr().err


@pytest.mark.usefixtures("restore_logging")
def test_a_port_in_use_exits_1_without_waiting_out_the_drain_delay(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Issue 10, item 3: it waited the whole 5 s drain delay for a server that never ran,
    # and reported that server's "stop accepting" hook ok.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        options = ["--port", port, "--ws-port", "0", "--db", str(tmp_path / "d.db")]
        assert main(["demo", *options, "--drain-delay", "5"]) == 1
    out, err = capsys.readouterr()
    assert "Address already in use" in err
    rows = [re.fullmatch(r"\s*\d+  (.+?)\s+(\w+)\s+[\d.]+", line) for line in out.splitlines()[2:]]
    statuses = {row[1]: row[2] for row in rows if row is not None}
    assert statuses["drain-delay"] == "skipped"
    assert statuses["http: stop accepting"] == "skipped"
    assert statuses["database: close"] == "ok"  # what was opened is still closed


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_while_the_database_does_not_answer_stops_the_start() -> None:
    # A "PostgreSQL server" that accepts the connection and never says a word.
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        dsn = f"postgresql://demo@127.0.0.1:{port}/demo"
        process = subprocess.Popen(
            [sys.executable, "-m", "trio_supervise", "demo", "--port", "0", "--db", dsn],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            server.settimeout(FAIL_SAFE)
            connection, _ = server.accept()  # the demo is now waiting for the server
            with connection:
                process.send_signal(signal.SIGINT)
                out, err = process.communicate(timeout=FAIL_SAFE)
        finally:
            if process.returncode is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0, err
    assert out == ""
    assert err.endswith(
        ' level=WARNING logger=trio_supervise.demo kind=SIGNAL path="" msg="received SIGINT'
        ' while opening the database: not starting"\n'
    )


def test_the_console_script_is_main() -> None:
    scripts = importlib.metadata.entry_points(group="console_scripts", name="trio-supervise")
    assert [script.value for script in scripts] == ["trio_supervise._cli:main"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("how", ["python -m trio_supervise", "trio-supervise"])
def test_ctrl_c_shuts_the_demo_down_gracefully(tmp_path: Path, how: str) -> None:
    if how == "trio-supervise":
        # Installed next to the interpreter by `pip install -e .`.
        command = [str(Path(sys.executable).with_name("trio-supervise"))]
    else:
        command = [sys.executable, "-m", "trio_supervise"]
    db = tmp_path / "demo.db"
    options = ["--port", "0", "--ws-port", "0", "--db", str(db), "--drain-delay", "0.2"]
    process = subprocess.Popen(
        [*command, "demo", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready.startswith("ready http=http://127.0.0.1:"), ready
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=FAIL_SAFE)
    finally:
        if process.returncode is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("shutdown (signal SIGINT) took ")
    assert [line.split()[0] for line in lines[2:]] == ["0", "0", "0", "10", "20", "30"]
    assert all(" ok " in line for line in lines[2:])
    # The logs: one line per event on stderr, the signal among them.
    assert 'kind=SIGNAL path="" msg="received SIGINT: shutting down' in err
    assert all(line.startswith("time=") for line in err.splitlines())
    # The database was made and closed cleanly.
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT count(*) FROM notes").fetchone() == (0,)
    connection.close()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_storm_of_sigterms_forces_one_shutdown_and_never_kills_the_exit(
    tmp_path: Path,
) -> None:
    # 20 SIGTERMs 10 ms apart (issue 10): the first starts the shutdown, the second forces
    # it, the rest are dropped, before and after run_demo returned (it died of SIGTERM, 143,
    # in 3 of 3 runs before).
    db = tmp_path / "demo.db"
    options = ["--port", "0", "--ws-port", "0", "--db", str(db), "--drain-delay", "0.5"]
    process = subprocess.Popen(
        [sys.executable, "-m", "trio_supervise", "demo", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        assert ready.startswith("ready http=http://127.0.0.1:"), ready
        signal_storm(process)
        out, err = process.communicate(timeout=FAIL_SAFE)
    finally:
        if process.returncode is None:
            process.kill()
            process.communicate()
    assert process.returncode == 1, err  # a forced shutdown, reported as such
    assert out.splitlines()[0].endswith(", forced")
    assert err.count("forcing the shutdown") == 1
