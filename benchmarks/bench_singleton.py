"""(l) Singleton handover: how soon another replica runs the child when its holder stops
(SIGTERM) or dies (SIGKILL), per lock, against the lock's own floor.

The replicas are real processes (``tests/singleton_replica.py``: ``run()`` of a tree with a
singleton that records its runs in a PostgreSQL table, on the server's clock). A graceful
handover is from the holder's child's last moment to the heir's child's first, a SIGKILL
one from the signal to the heir's child's first moment. The floor is a bare client of the
same lock, with no supervisor and no polling, waiting as only the lock itself lets one
wait: PostgreSQL's ``pg_advisory_lock`` and ``flock`` are granted the moment the holder lets
go or dies (``_lock_floor.py``); etcd's is one put-if-absent round trip after a release,
and the lease's ttl after a death (the lease must lapse: no client can do better; what is
left of it at the kill is between two thirds of the ttl and all of it, as it is renewed
every third). The file lock and etcd are polled (``FILE_POLL_EVERY``, ``POLL_EVERY``):
their extra is about half the interval. The
servers are started here as the tests start them (``tests/servers.py``); a backend whose
server is not installed is skipped with the reason. Information only (issue 12 asks for
the figures, with no target).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Final

from benchmarks._common import Config, Reporter, median, ratio

TESTS: Final = Path(__file__).resolve().parent.parent / "tests"
REPLICA: Final = TESTS / "singleton_replica.py"
FLOOR: Final = Path(__file__).with_name("_lock_floor.py")
#: The etcd lease ttl: the shortest etcd allows a lock to be waited out in.
TTL: Final = 2
TIMEOUT: Final = 30.0

sys.path.insert(0, str(TESTS))
import servers  # noqa: E402  (tests/servers.py: the PostgreSQL and etcd the tests use)


def _socket_name(pid: int) -> str:
    import socket

    return f"{socket.gethostname()}:{pid}"


class _Process:
    """A child process whose JSON or word lines are read one at a time."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.process.args!r} ended early")
        return line.strip()

    def expect(self, state: str, holder_pid: int) -> None:
        wanted = {"state": state, "holder": _socket_name(holder_pid)}
        while json.loads(self.line()) != wanted:
            pass

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


def _handovers(
    dsn: str, lock: list[str], reps: int, read_runs: Callable[[], list[tuple[float, float]]]
) -> tuple[list[float], list[float]]:
    """Seconds of ``reps`` graceful and ``reps`` SIGKILL handovers between replicas."""
    graceful: list[float] = []
    killed: list[float] = []
    for _ in range(reps):
        started: list[_Process] = []

        def replica(name: str, started: list[_Process] = started) -> _Process:
            started.append(_Process([sys.executable, str(REPLICA), name, dsn, *lock]))
            return started[-1]

        try:
            a = replica("a")
            a.expect("running", a.process.pid)
            b = replica("b")
            b.expect("starting", a.process.pid)
            time.sleep(0.3)  # b is well into its wait
            a.process.send_signal(signal.SIGTERM)
            b.expect("running", b.process.pid)
            c = replica("c")
            c.expect("starting", b.process.pid)
            time.sleep(0.3)
            b.process.send_signal(signal.SIGKILL)
            killed_at = time.time()
            c.expect("running", c.process.pid)
            c.process.send_signal(signal.SIGTERM)
            c.process.wait(TIMEOUT)
            runs = read_runs()
            assert len(runs) == 3, runs
            graceful.append(runs[1][0] - runs[0][1])
            killed.append(runs[2][0] - killed_at)
        finally:
            for process in started:
                process.stop()
    return graceful, killed


def _floor(backend: str, where: str, reps: int) -> tuple[list[float], list[float]]:
    """Seconds of bare handovers of the same lock: a release, then a SIGKILL."""
    graceful: list[float] = []
    killed: list[float] = []
    for kill in [False] * reps + [True] * reps:
        holder = _Process([sys.executable, str(FLOOR), "hold", backend, where])
        waiter: _Process | None = None
        try:
            assert holder.line() == "holding"
            waiter = _Process([sys.executable, str(FLOOR), "wait", backend, where])
            assert waiter.line() == "waiting"
            time.sleep(0.3)  # blocked in the lock by now
            if kill:
                holder.process.kill()
                let_go = time.time()
            else:
                assert holder.process.stdin is not None
                holder.process.stdin.write("\n")
                holder.process.stdin.flush()
                word, when = holder.line().split()
                let_go = float(when)
            word, when = waiter.line().split()
            assert word == "acquired"
            (killed if kill else graceful).append(float(when) - let_go)
        finally:
            holder.stop()
            if waiter is not None:
                waiter.stop()
    return graceful, killed


def _etcd_round_trip(endpoint: str, reps: int) -> float:
    """Median seconds of one put-if-absent transaction: the floor of a graceful handover."""
    import base64

    import httpx

    key = base64.b64encode(b"benchmark-floor").decode()
    body = {
        "compare": [{"target": "CREATE", "key": key, "createRevision": "0"}],
        "success": [{"requestPut": {"key": key, "value": key}}],
        "failure": [{"requestRange": {"key": key}}],
    }
    times = []
    with httpx.Client(trust_env=False, timeout=TIMEOUT) as client:
        for _ in range(max(reps, 5) * 4):
            start = time.perf_counter()
            client.post(f"{endpoint}/v3/kv/txn", json=body).raise_for_status()
            times.append(time.perf_counter() - start)
    return median(times)


@contextmanager
def _runs_table(dsn: str) -> Iterator[Callable[[], list[tuple[float, float]]]]:
    import psycopg

    table = "singleton_runs"

    def reset() -> None:
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f"DROP TABLE IF EXISTS {table}")
            connection.execute(
                f"CREATE TABLE {table} (id serial PRIMARY KEY, replica text NOT NULL,"
                " started timestamptz NOT NULL, ended timestamptz NOT NULL)"
            )

    def read() -> list[tuple[float, float]]:
        with psycopg.connect(dsn) as connection:
            rows = connection.execute(
                f"SELECT extract(epoch FROM started)::float8, extract(epoch FROM ended)::float8"
                f" FROM {table} ORDER BY started"
            ).fetchall()
        reset()
        return [(float(start), float(end)) for start, end in rows]

    reset()
    yield read


def _report(
    r: Reporter, backend: str, ours: tuple[list[float], list[float]], floor: tuple[Any, Any]
) -> None:
    for kind, values, bare in zip(("graceful", "sigkill"), ours, floor, strict=True):
        supervise = median(values)
        bare_value = bare if isinstance(bare, float) else median(bare)
        r.metric(f"singleton_{backend}_{kind}_handover_ms_median", supervise * 1000, "ms")
        r.metric(f"singleton_{backend}_{kind}_floor_ms_median", bare_value * 1000, "ms")
        r.metric(
            f"singleton_{backend}_{kind}_extra_ms_median", (supervise - bare_value) * 1000, "ms"
        )
        r.metric(f"singleton_{backend}_{kind}_ratio_median", ratio(supervise, bare_value), "x")


def run(config: Config, reporter: Reporter) -> None:
    r = reporter
    reps = 1 if config.reps < 3 else 5
    r.comment(f"(l) singleton handover between replica processes, {reps} of each per lock")
    with ExitStack() as stack:
        try:
            postgres = stack.enter_context(servers.postgres_server())
        except servers.Unavailable as exc:
            r.comment(f"skipped: every lock records its runs in PostgreSQL: {exc}")
            return
        dsn = postgres.create_database("bench_singleton")
        read_runs = stack.enter_context(_runs_table(dsn))
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-lock-")))

        ours = _handovers(dsn, ["postgres"], reps, read_runs)
        _report(r, "postgres", ours, _floor("postgres", dsn, reps))

        path = str(directory / "singleton.lock")
        ours = _handovers(dsn, ["file", path], reps, read_runs)
        _report(r, "file", ours, _floor("file", str(directory / "floor.lock"), reps))

        (directory / "etcd").mkdir()
        try:
            members = stack.enter_context(servers.etcd_cluster(directory / "etcd"))
        except servers.Unavailable as exc:
            r.comment(f"etcd skipped: {exc}")
            return
        endpoints = [member.client_url for member in members]
        ours = _handovers(dsn, ["etcd", str(TTL), *endpoints], reps, read_runs)
        _report(r, "etcd", ours, (_etcd_round_trip(endpoints[0], reps), float(TTL)))
