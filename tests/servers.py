"""Real servers for the tests and the benchmarks: PostgreSQL and an etcd cluster on 127.0.0.1.

Both run from the installed binaries (``.ci/install-postgres``, ``.ci/install-etcd``); where
they are missing, ``Unavailable`` says why and how to install them (``conftest`` skips then).
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import attrs
import httpx


class Unavailable(Exception):
    """A server cannot be run here; the message says why and how to install it."""


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
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


@attrs.define(eq=False)
class PostgresServer:
    """A real PostgreSQL server in a temporary directory, which a test may stop and start.

    It listens on 127.0.0.1 at ``port`` (the same after a restart) with its Unix socket in
    ``root``, trust authentication and ``fsync`` off: the tests need no crash safety.
    """

    bindir: Path
    # runuser -u postgres -- when the tests run as root: the server refuses to run as root.
    prefix: list[str]
    root: Path
    port: int = 0
    running: bool = False

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def url(self) -> str:
        """The server's URL without a database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run(
            [*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args], self.root
        )

    def init(self) -> None:
        initdb = _run(
            [
                *self.prefix,
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            self.root,
        )
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed: {_describe(initdb)}")
        # The port is free when picked but could be taken before the server binds it.
        for _attempt in range(3):
            self.port = free_port()
            started = self._start()
            if self.running:
                return
            if "could not bind" not in self.log.read_text(errors="replace"):
                break
        raise RuntimeError(f"PostgreSQL did not start: {_describe(started, self.log)}")

    def _start(self) -> subprocess.CompletedProcess[str]:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -F"
        started = self._pg_ctl("-l", str(self.log), "-w", "-t", "60", "-o", options, "start")
        self.running = started.returncode == 0
        return started

    def start(self) -> None:
        """Start the server again on its port; return once it takes connections."""
        started = self._start()
        if not self.running:
            raise RuntimeError(f"PostgreSQL did not start: {_describe(started, self.log)}")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m mode``: ``fast`` ends every session and refuses new ones."""
        stop = self._pg_ctl("-m", mode, "-w", "-t", "60", "stop")
        if stop.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not stop: {_describe(stop, self.log)}")
        self.running = False

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its DSN."""
        import psycopg

        with psycopg.connect(f"{self.url}/postgres", autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return f"{self.url}/{name}"


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A fresh, started ``PostgresServer``, stopped and removed at the end.

    The server runs from the installed binaries (``initdb``/``pg_ctl`` on PATH or in
    ``/usr/lib/postgresql/*/bin``), as the ``postgres`` user when the tests run as root.
    Without the binaries it raises ``Unavailable``, saying how to install them (the tests
    skip then); once they exist, a server that fails to start is an error.
    """
    bindir = _postgres_bindir()
    if bindir is None:
        raise Unavailable(
            f"PostgreSQL server binaries (initdb, pg_ctl) not found; {POSTGRES_INSTALL_HINT}"
        )
    prefix: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(_POSTGRES_USER)
        except KeyError:
            raise Unavailable(
                f"the tests run as root and PostgreSQL refuses to; there is no {_POSTGRES_USER!r}"
                f" user to run it as; {POSTGRES_INSTALL_HINT} (the package creates the user)"
            ) from None
        runuser = shutil.which("runuser")
        if runuser is None:
            raise Unavailable(
                "the tests run as root and `runuser` (util-linux) is missing to run"
                f" PostgreSQL as {_POSTGRES_USER!r}; install util-linux"
            )
        prefix = [runuser, "-u", _POSTGRES_USER, "--"]
    if importlib.util.find_spec("psycopg") is None:
        raise Unavailable("psycopg is missing; install it with `pip install -e '.[test]'`")
    # Not pytest's tmp_path: its parents are private to root, and the server's user must
    # reach its data directory.
    root = Path(tempfile.mkdtemp(prefix="trio-supervise-postgres-"))
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    server = PostgresServer(bindir, prefix, root)
    try:
        server.init()
        yield server
    finally:
        if server.running:
            try:
                server.stop()
            except RuntimeError:
                server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


# ----------------------------------------------------------------- etcd test cluster

#: Seconds the members may take to become healthy.
ETCD_START_TIMEOUT = 20.0


@attrs.define(eq=False)
class EtcdMember:
    name: str
    client_url: str
    process: subprocess.Popen[bytes]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextlib.contextmanager
def etcd_cluster(root: Path, size: int = 3) -> Iterator[list[EtcdMember]]:
    """``size`` etcd members on 127.0.0.1 (Debian's etcd-server, from .ci/install-etcd).

    Raises:
      Unavailable: etcd is not installed.
    """
    binary = shutil.which("etcd")
    if binary is None:
        raise Unavailable(
            "etcd is not installed here (.ci/install-etcd installs Debian's etcd-server)"
        )
    ports = _free_ports(2 * size)
    names = [f"m{i + 1}" for i in range(size)]
    peers = {name: f"http://127.0.0.1:{ports[size + i]}" for i, name in enumerate(names)}
    cluster = ",".join(f"{name}={url}" for name, url in peers.items())
    members: list[EtcdMember] = []
    logs: list[BinaryIO] = []
    try:
        for i, name in enumerate(names):
            client = f"http://127.0.0.1:{ports[i]}"
            log = (root / f"{name}.log").open("wb")
            logs.append(log)
            process = subprocess.Popen(
                [
                    binary,
                    "--name",
                    name,
                    "--data-dir",
                    str(root / name),
                    "--listen-client-urls",
                    client,
                    "--advertise-client-urls",
                    client,
                    "--listen-peer-urls",
                    peers[name],
                    "--initial-advertise-peer-urls",
                    peers[name],
                    "--initial-cluster",
                    cluster,
                    "--initial-cluster-state",
                    "new",
                    "--initial-cluster-token",
                    "trio-supervise-tests",
                ],
                stdout=log,
                stderr=log,
            )
            members.append(EtcdMember(name, client, process))
        deadline = time.monotonic() + ETCD_START_TIMEOUT
        for member in members:
            while True:
                try:
                    if (
                        httpx.get(f"{member.client_url}/health", trust_env=False)
                        .json()
                        .get("health")
                        == "true"
                    ):
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd member {member.name} never became healthy")
                time.sleep(0.05)
        yield members
    finally:
        for member in members:
            member.process.send_signal(signal.SIGCONT)
            member.process.kill()
            member.process.wait()
        for opened in logs:
            opened.close()
