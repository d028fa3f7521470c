"""Fixtures shared by the test suite."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# ------------------------------------------------------------------ PostgreSQL test server

POSTGRES_INSTALL_HINT = (
    "install the PostgreSQL server with `.ci/install-postgres` (on Debian or Ubuntu:"
    " `apt-get install postgresql`), or put a directory holding initdb and pg_ctl on PATH"
)

#: The database the ``postgres_dsn`` fixture creates for the tests.
POSTGRES_TEST_DATABASE = "trio_supervise_test"

# The server refuses to run as root, so as root it runs as this user.
_POSTGRES_USER = "postgres"


def _version_key(bindir: str) -> tuple[int, ...]:
    """``/usr/lib/postgresql/15/bin`` -> ``(15,)``, for picking the newest install."""
    version = Path(bindir).parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def _postgres_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: from PATH, else the newest Debian one.

    ``PG_LIB_DIR`` replaces ``/usr/lib/postgresql`` (as for ``.ci/install-postgres``).
    """
    initdb = shutil.which("initdb")
    if initdb is not None:
        # Debian links them into PATH by hand at most; the real directory holds both.
        bindir = Path(os.path.realpath(initdb)).parent
        if (bindir / "pg_ctl").exists():
            return bindir
    lib_dir = os.environ.get("PG_LIB_DIR", "/usr/lib/postgresql")
    found = sorted(
        (os.path.dirname(path) for path in glob.glob(os.path.join(lib_dir, "*/bin/initdb"))),
        key=_version_key,
    )
    for directory in reversed(found):
        if os.path.exists(os.path.join(directory, "pg_ctl")):
            return Path(directory)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


def _describe(result: subprocess.CompletedProcess[str], log: Path | None = None) -> str:
    text = (
        f"{' '.join(result.args)} exited with {result.returncode}\n{result.stdout}{result.stderr}"
    )
    if log is not None and log.exists():
        text += f"\nserver log:\n{log.read_text(errors='replace')}"
    return text


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A DSN for a fresh database on a real PostgreSQL server started for this session.

    The server runs from the installed binaries (``initdb``/``pg_ctl`` on PATH or in
    ``/usr/lib/postgresql/*/bin``) in a temporary directory, as the ``postgres`` user when
    the tests run as root, listening on 127.0.0.1 at a free port with its Unix socket in that
    directory, with trust authentication and ``fsync`` off (the tests need no crash safety
    from the server). It is stopped (``pg_ctl stop -m fast``) and its directory removed at
    the end of the session. Without the binaries the tests that use it are skipped, with
    the reason saying how to install them; once they exist, a server that fails to start
    is an error, not a skip.
    """
    bindir = _postgres_bindir()
    if bindir is None:
        pytest.skip(
            f"PostgreSQL server binaries (initdb, pg_ctl) not found; {POSTGRES_INSTALL_HINT}"
        )
    prefix: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(_POSTGRES_USER)
        except KeyError:
            pytest.skip(
                f"the tests run as root and PostgreSQL refuses to; there is no {_POSTGRES_USER!r}"
                f" user to run it as; {POSTGRES_INSTALL_HINT} (the package creates the user)"
            )
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip(
                "the tests run as root and `runuser` (util-linux) is missing to run"
                f" PostgreSQL as {_POSTGRES_USER!r}; install util-linux"
            )
        prefix = [runuser, "-u", _POSTGRES_USER, "--"]
    psycopg = pytest.importorskip(
        "psycopg", reason="psycopg is missing; install it with `pip install -e '.[test]'`"
    )

    # Not pytest's tmp_path: its parents are private to root, and the server's user must
    # reach its data directory.
    root = Path(tempfile.mkdtemp(prefix="trio-supervise-postgres-"))
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    data = root / "data"
    log = root / "server.log"
    pg_ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data)]
    started = False
    try:
        initdb = _run(
            [
                *prefix,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            root,
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {_describe(initdb)}")
        # The port is free when picked but could be taken before the server binds it.
        for _attempt in range(3):
            port = _free_port()
            options = f"-h 127.0.0.1 -p {port} -k {root} -F"
            start = _run([*pg_ctl, "-l", str(log), "-w", "-t", "60", "-o", options, "start"], root)
            if start.returncode == 0:
                started = True
                break
            if "could not bind" not in log.read_text(errors="replace"):
                raise RuntimeError(f"PostgreSQL did not start: {_describe(start, log)}")
        else:
            raise RuntimeError(f"PostgreSQL found no free port: {_describe(start, log)}")
        server = f"postgresql://postgres@127.0.0.1:{port}"
        with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {POSTGRES_TEST_DATABASE}")
        yield f"{server}/{POSTGRES_TEST_DATABASE}"
    finally:
        if started:
            stop = _run([*pg_ctl, "-m", "fast", "-w", "-t", "60", "stop"], root)
            if stop.returncode != 0:
                _run([*pg_ctl, "-m", "immediate", "-w", "stop"], root)
        shutil.rmtree(root, ignore_errors=True)
