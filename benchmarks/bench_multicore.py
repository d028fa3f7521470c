"""(j) multi-core: the demo's CPU-bound ``GET /cpu`` with ``--workers 2`` against ``--workers 1``.

Both demos run as real processes (SQLite in a temporary directory), one after the other, each
loaded by ``wrk`` (a compiled load generator, so that the client is not what limits the rate)
with one thread and 16 connections. ``--workers 1`` serves HTTP in the demo's own process,
``--workers 2`` in two worker processes sharing one listening socket. Target (issue 11): on
this 2-core machine, ``--workers 2`` serves at least 1.5× the requests per second.

wrk comes from Debian's package (``.ci/install-wrk``); without it the benchmark says so and
measures nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

from benchmarks._common import Config, Reporter, median, ratio, stop_process

#: The work of one request: about 10 ms of pure Python on this machine.
CPU_N: Final = 100_000
#: wrk's connections (one thread: it needs far less CPU than the servers).
CONNECTIONS: Final = 16
TARGET: Final = 1.5
_RATE: Final = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.MULTILINE)
_NON_2XX: Final = re.compile(r"Non-2xx or 3xx responses:\s+([0-9]+)")
_ERRORS: Final = re.compile(r"Socket errors: (.*)")


def _start_demo(workers: int, directory: Path) -> tuple[subprocess.Popen[str], str]:
    command = [
        sys.executable, "-m", "trio_supervise", "demo", "--workers", str(workers),
        "--port", "0", "--ws-port", "0", "--admin-port", "0", "--drain-delay", "0",
        "--db", str(directory / f"notes-{workers}.db"), "--log-level", "WARNING",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"http=(\S+)", line)
    if match is None:
        process.kill()
        process.wait()
        raise RuntimeError(f"the demo with --workers {workers} did not start: {line!r}")
    return process, match.group(1)


def _wrk(url: str, seconds: float) -> float:
    """Requests per second wrk measured; every response must be a 200."""
    result = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s", url],
        capture_output=True,
        text=True,
        check=True,
    )
    rate = _RATE.search(result.stdout)
    if rate is None:
        raise RuntimeError(f"wrk printed no rate:\n{result.stdout}")
    for pattern, what in ((_NON_2XX, "non-2xx responses"), (_ERRORS, "socket errors")):
        found = pattern.search(result.stdout)
        if found is not None:
            raise RuntimeError(f"wrk saw {what}: {found.group(0)}")
    return float(rate.group(1))


def measure(workers: int, seconds: float, reps: int, directory: Path) -> float:
    """The median requests/s of ``reps`` wrk runs against one demo with ``workers``."""
    process, base = _start_demo(workers, directory)
    try:
        url = f"{base}/cpu?n={CPU_N}"
        _wrk(url, 1)  # warm-up: connections, caches
        return median([_wrk(url, seconds) for _ in range(reps)])
    finally:
        stop_process(process)


def run(config: Config, reporter: Reporter) -> None:
    r = reporter
    r.comment(f"(j) multi-core: GET /cpu?n={CPU_N} under wrk -t1 -c{CONNECTIONS}")
    if shutil.which("wrk") is None:
        r.comment("multicore: wrk not found (install it with .ci/install-wrk); skipped")
        return
    quick = config.reps < 3
    seconds, reps = (1.0, 1) if quick else (5.0, 5)
    with tempfile.TemporaryDirectory(prefix="bench-multicore-") as directory:
        one = measure(1, seconds, reps, Path(directory))
        two = measure(2, seconds, reps, Path(directory))
    r.metric("multicore_cpu_workers_1_rps_median", one, "req/s", 0)
    r.metric("multicore_cpu_workers_2_rps_median", two, "req/s", 0)
    r.metric("multicore_cpu_workers_2_over_1_ratio_median", ratio(two, one), "x")
    # The reporter's targets are upper bounds: ">= 1.5x the rate" is "<= 1/1.5 the time".
    r.metric("multicore_cpu_time_per_request_2_over_1_ratio_median", ratio(one, two), "x", 4)
    r.target("multicore_cpu_time_per_request_2_over_1_ratio_median", round(1 / TARGET, 5))
