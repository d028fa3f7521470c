"""(k) ``trio-supervise run``: spawn to ready, against a plain ``trio.run`` program.

Both are real processes started the same way and report ready the same way, with
``READY=1`` on a notify socket the benchmark listens on: ``trio-supervise run svc:spec``
(its tree of 10 sleeping children) and a plain program that imports trio, starts 10
sleeping tasks in a nursery and sends ``READY=1`` itself. The difference is what the command
line, the spec and the tree add to a service's start. Information only (issue 12 asks for
the figure, with no target).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Final

from benchmarks._common import Config, Reporter, median, ratio, stop_process

CHILDREN: Final = 10

SERVICE: Final = f"""
import trio
from trio_supervise import ChildSpec, SupervisorSpec

async def sleeper():
    await trio.sleep_forever()

spec = SupervisorSpec("svc", [ChildSpec(f"c{{i}}", sleeper) for i in range({CHILDREN})])
"""

PLAIN: Final = f"""
import os, socket, trio

async def main():
    async with trio.open_nursery() as nursery:
        for _ in range({CHILDREN}):
            nursery.start_soon(trio.sleep_forever)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
        await trio.sleep_forever()

trio.run(main)
"""


def _spawn_to_ready(command: list[str], directory: Path) -> float:
    """Seconds from spawning ``command`` to its ``READY=1``; the process is then stopped."""
    path = str(directory / f"notify-{time.monotonic_ns()}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(path)
        notify.settimeout(30)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_SUPERVISE_")}
        env["NOTIFY_SOCKET"] = path
        start = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=directory, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            while b"READY=1" not in notify.recv(4096).split(b"\n"):
                pass
            return time.perf_counter() - start
        finally:
            stop_process(process)


def run(config: Config, reporter: Reporter) -> None:
    r = reporter
    reps = 2 if config.reps < 3 else 9
    r.comment(f"(k) trio-supervise run: spawn to READY=1, {CHILDREN} sleeping children")
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as name:
        directory = Path(name)
        (directory / "svc.py").write_text(textwrap.dedent(SERVICE))
        ours = [sys.executable, "-m", "trio_supervise", "run", "svc:spec"]
        plain = [sys.executable, "-c", textwrap.dedent(PLAIN)]
        _spawn_to_ready(ours, directory)  # warm-up: the file system cache, bytecode
        _spawn_to_ready(plain, directory)
        ours_s, plain_s = [], []
        for _ in range(reps):  # interleaved, so that a slow moment hits both
            ours_s.append(_spawn_to_ready(ours, directory))
            plain_s.append(_spawn_to_ready(plain, directory))
    supervise, bare = median(ours_s), median(plain_s)
    r.metric("cli_run_spawn_to_ready_supervise_ms_median", supervise * 1000, "ms")
    r.metric("cli_run_spawn_to_ready_plain_trio_ms_median", bare * 1000, "ms")
    r.metric("cli_run_spawn_to_ready_extra_ms_median", (supervise - bare) * 1000, "ms")
    r.metric("cli_run_spawn_to_ready_ratio_median", ratio(supervise, bare), "x")
