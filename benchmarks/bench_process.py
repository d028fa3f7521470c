"""(i) Process children (issue 11): trio_supervise against supervisord, circus and the floor.

Four supervising processes, each run as a process of its own, supervise the same N = 20
programs (``_process_program.py``, 20 copies of a small Python script run as ``python -I -S``)
and are measured side by side in one run:

* ``floor``: a bare Python parent that ``subprocess.Popen``s the programs, restarts one as
  soon as ``os.waitid`` says it exited, and on SIGTERM forwards it and SIGKILLs what is left
  after the kill timeout (``_process_parents.py floor``): what any Python supervisor costs.
* ``supervise``: ``trio_supervise.run`` of a root of N ``ChildSpec.process`` children,
  ``backoff=None``, ``concurrent_stop=True`` (``_process_parents.py supervise``).
* ``supervisord`` and ``circus``: installed from PyPI into a virtual environment of the
  benchmark's own, ``benchmarks/.peers-venv`` (made on the first run, reused after; git
  ignores it), at their fastest honest settings: supervisord ``startsecs=0``,
  ``autorestart=true``, ``stopwaitsecs`` = the kill timeout, ``stopasgroup`` and
  ``killasgroup``, all programs in one ``[group:]``, a unix socket for supervisorctl,
  ``nodaemon``; circus one watcher per program, ``check_delay=0.01``, ``warmup_delay=0``,
  ``graceful_timeout`` = the kill timeout, ``stop_children``, ``copy_env``, ipc endpoints.
  When they cannot be installed (no network) a ``#`` line says so and only their columns
  are missing. ``--quick`` skips them.

Every program reports ``NAME PID`` on a FIFO that the benchmark reads (``poll``) as its first
action, so "running" means "has executed its first line". A program's death is seen through a
pidfd that the benchmark opens on it (readable once it has exited, reaped or not). Metrics,
each for every supervisor, with ``supervise`` over ``floor`` as the ratio:

1. ``process_crash_to_running_*``: SIGKILL one program from outside; until a new pid of it
   has reported (target ratio <= 1.5);
2. ``process_start_N_*``: from spawning the supervising process until all N have reported
   (target ratio <= 1.5);
3. ``process_sigterm_N_*``: SIGTERM to the supervising process; until all N are dead
   (target ratio <= 1.5);
4. ``process_sigterm_ignored_N_*``: the same with programs that ignore SIGTERM and a kill
   timeout of 1 s (target ratio <= 1.05);
5. ``process_survivors_2N_*``: programs that each spawned one grandchild ``sleep``; SIGKILL
   to the supervising process; how many of the 2N are still alive 1.5 s later (target 0);
6. ``process_idle_cpu_N_*``: CPU of the supervising process (utime + stime from
   ``/proc/PID/stat``) over 3 s with the N running, in % of one core (target <= 1);
7. ``process_uss_N_*``: its memory, USS (``Private_Clean + Private_Dirty`` of
   ``/proc/PID/smaps_rollup``). For ours also its guardian process, and what it is made of:
   processes that stop at each stage (an interpreter, + ``trio``, + ``trio_supervise``, a
   running tree without children), and the rest per child.

For information, the stages also give how long our supervising process takes to get to each
(``process_launch_stage_*``), hence ``process_start_N_less_imports_ratio_median``: our start
less the import of trio and trio_supervise, over the floor's. trio_supervise's modules are
compiled to bytecode before anything is measured, as pip does when it installs a package.

Each repetition runs, for every supervisor in turn (the order rotates), three lifetimes:
``plain`` programs (1, 2, 6, 7 and 3), ``ignore`` (4), ``grandchild`` (5). Every value is the
median over the repetitions (5; 1 with ``--quick``, with 5 programs, 0.2 s of idle CPU, a
0.2 s kill timeout, survivors counted after 0.5 s). Nothing is left behind: every process
started carries a marker in its environment, and after each lifetime, and on any failure,
every process with the marker is killed; the benchmark makes itself a child subreaper so that
the orphans (the floor's and the peers' survivors) are reaped by it.
"""

from __future__ import annotations

import compileall
import contextlib
import ctypes
import math
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import trio_supervise
from benchmarks._common import Config, Reporter, median, ratio
from benchmarks._process_parents import program_commands

HERE: Final = Path(__file__).resolve().parent
PARENTS: Final = str(HERE / "_process_parents.py")
PEERS_VENV: Final = HERE / ".peers-venv"
PEER_PACKAGES: Final = ("supervisor", "circus")
MARKER: Final = "TRIO_SUPERVISE_BENCH_PROCESS"
#: Longest wait for a start, a restart or a stop before the benchmark gives up.
PATIENCE: Final = 30.0
PR_SET_CHILD_SUBREAPER: Final = 36
#: After a supervising process has exited, how long what it started may take to be gone
#: before it counts as left behind (ours: the guardian exits when its pipe closes).
LEFT_BEHIND_GRACE: Final = 1.0

FLOOR: Final = "floor"
SUPERVISE: Final = "supervise"
SUPERVISORD: Final = "supervisord"
CIRCUS: Final = "circus"
ORDER: Final = (FLOOR, SUPERVISE, SUPERVISORD, CIRCUS)
STAGES: Final = ("python", "trio", "trio_supervise", "tree0")


@dataclass(frozen=True)
class Sizes:
    programs: int = 20
    reps: int = 5
    idle_seconds: float = 3.0
    kill_timeout: float = 1.0
    survivor_wait: float = 1.5
    #: Pause after a start or a restart before the next measurement.
    settle: float = 0.3
    peers: bool = True


FULL_SIZES: Final = Sizes()
QUICK_SIZES: Final = Sizes(
    programs=5,
    reps=1,
    idle_seconds=0.2,
    kill_timeout=0.2,
    survivor_wait=0.5,
    settle=0.05,
    peers=False,
)


def sizes_for(config: Config) -> Sizes:
    """``FULL_SIZES`` at the default number of children or more, else ``QUICK_SIZES``."""
    return FULL_SIZES if config.children >= Config().children else QUICK_SIZES


# --------------------------------------------------------------------------- processes


def make_subreaper() -> None:
    """Orphans of the supervisors we start become our children, so that we can reap them."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def reap_orphans() -> None:
    """Reap every exited child (only called when none of our own ``Popen``s is alive)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def marked(needle: bytes) -> list[int]:
    """The live processes whose environment holds ``needle`` (``NAME=VALUE``)."""
    found = []
    own = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == own:
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry))
    return found


def sweep(token: str) -> int:
    """SIGKILL every process started with our marker until none is left; how many there were."""
    needle = f"{MARKER}={token}".encode()
    killed: set[int] = set()
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        pids = marked(needle)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(OSError):
                fd = os.pidfd_open(pid)
                try:
                    signal.pidfd_send_signal(fd, signal.SIGKILL)
                    killed.add(pid)
                finally:
                    os.close(fd)
        time.sleep(0.01)
        reap_orphans()
    reap_orphans()
    return len(killed)


@contextlib.contextmanager
def exit_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``SystemExit`` (as SIGINT raises ``KeyboardInterrupt``), so
    that the ``finally`` blocks kill whatever we started; restored after."""

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def is_dead(pidfd: int) -> bool:
    return bool(select.select([pidfd], [], [], 0)[0])


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (``/proc/PID/stat``), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def uss_mib(pid: int) -> float:
    """Private_Clean + Private_Dirty of ``pid`` (``/proc/PID/smaps_rollup``), in MiB."""
    kib = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Private_Clean", "Private_Dirty"):
            kib += int(value.split()[0])
    return kib / 1024


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            found.extend(int(child) for child in text.split())
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# ------------------------------------------------------------------------------ reports


class Reports:
    """The benchmark's end of the FIFO: one line ``NAME PID [GRANDCHILD]`` per report."""

    def __init__(self, path: str) -> None:
        os.mkfifo(path)
        self.path = path
        # Read-write: never at end of file when no program has it open.
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        self._pending = b""

    def close(self) -> None:
        os.close(self.fd)

    def drain(self) -> None:
        """Forget whatever was reported so far."""
        while select.select([self.fd], [], [], 0)[0]:
            os.read(self.fd, 65536)
        self._pending = b""

    def until(self, done: Callable[[list[str]], bool], what: str) -> float:
        """Read reports until ``done(fields)`` is true for one; its arrival time."""
        deadline = time.perf_counter() + PATIENCE
        while True:
            *lines, self._pending = self._pending.split(b"\n")
            for index, line in enumerate(lines):
                if done(line.decode().split()):
                    self._pending = b"\n".join([*lines[index + 1 :], self._pending])
                    return time.perf_counter()
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(f"no report within {PATIENCE:g}s: {what}")
            if select.select([self.fd], [], [], remaining)[0]:
                self._pending += os.read(self.fd, 65536)


# -------------------------------------------------------------------------- supervisors


@dataclass
class Bench:
    """What every lifetime shares: the directory, the FIFO, the marker, the peers' binaries."""

    sizes: Sizes
    tmp: str
    reports: Reports
    token: str
    peers_bin: Path | None
    programs_python: str = sys.executable

    @property
    def needle(self) -> bytes:
        return f"{MARKER}={self.token}".encode()

    def env(self) -> dict[str, str]:
        return {**os.environ, MARKER: self.token}

    def commands(self, mode: str) -> dict[str, list[str]]:
        return program_commands(self.reports.path, mode, self.sizes.programs)

    def launch(self, who: str, mode: str) -> list[str]:
        """The command of supervising process ``who`` over programs of ``mode``."""
        n, timeout = str(self.sizes.programs), str(self.sizes.kill_timeout)
        if who in (FLOOR, SUPERVISE):
            return [sys.executable, PARENTS, who, self.reports.path, mode, n, timeout]
        assert self.peers_bin is not None
        if who == SUPERVISORD:
            conf = self._supervisord_conf(mode)
            return [str(self.peers_bin / "supervisord"), "-n", "-c", conf]
        if who == CIRCUS:
            return [str(self.peers_bin / "circusd"), self._circus_conf(mode)]
        raise ValueError(who)

    def _supervisord_conf(self, mode: str) -> str:
        d = self.tmp
        commands = self.commands(mode)
        lines = [
            "[unix_http_server]",
            f"file={d}/supervisord.sock",
            "[supervisord]",
            "nodaemon=true",
            f"logfile={d}/supervisord.log",
            f"pidfile={d}/supervisord.pid",
            f"childlogdir={d}",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "[supervisorctl]",
            f"serverurl=unix://{d}/supervisord.sock",
        ]
        for name, command in commands.items():
            lines += [
                f"[program:{name}]",
                f"command={shlex.join(command)}",
                "startsecs=0",
                "autorestart=true",
                f"stopwaitsecs={self.sizes.kill_timeout:g}",
                "stopasgroup=true",
                "killasgroup=true",
            ]
        lines += ["[group:bench]", f"programs={','.join(commands)}"]
        path = f"{d}/supervisord-{mode}.conf"
        Path(path).write_text("\n".join(lines) + "\n")
        return path

    def _circus_conf(self, mode: str) -> str:
        d = self.tmp
        lines = [
            "[circus]",
            "check_delay = 0.01",
            "warmup_delay = 0",
            f"endpoint = ipc://{d}/circus-control.sock",
            f"pubsub_endpoint = ipc://{d}/circus-pubsub.sock",
            f"logoutput = {d}/circusd.log",
        ]
        for name, command in self.commands(mode).items():
            lines += [
                f"[watcher:{name}]",
                f"cmd = {shlex.join(command)}",
                "warmup_delay = 0",
                f"graceful_timeout = {self.sizes.kill_timeout:g}",
                "stop_children = true",
                "copy_env = true",
            ]
        path = f"{d}/circus-{mode}.ini"
        Path(path).write_text("\n".join(lines) + "\n")
        return path


@dataclass
class Lifetime:
    """One supervising process over N programs, from its start to its end."""

    bench: Bench
    who: str
    mode: str
    popen: subprocess.Popen[bytes] | None = None
    #: The pid of each program's current run, and its grandchild's in ``grandchild`` mode.
    pids: dict[str, int] = field(default_factory=dict)
    grandchildren: dict[str, int] = field(default_factory=dict)
    #: A pidfd on every program and grandchild ever reported (-1: it was already gone).
    pidfds: dict[int, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def _watch(self, pid: int) -> None:
        try:
            self.pidfds[pid] = os.pidfd_open(pid)
        except ProcessLookupError:
            self.pidfds[pid] = -1

    def _record(self, fields: list[str]) -> None:
        name, pid = fields[0], int(fields[1])
        self.pids[name] = pid
        self._watch(pid)
        if len(fields) > 2:
            self.grandchildren[name] = int(fields[2])
            self._watch(int(fields[2]))

    def start(self) -> float:
        """Spawn the supervising process; seconds until every program has reported."""
        n = self.bench.sizes.programs
        self.bench.reports.drain()
        log = open(f"{self.bench.tmp}/{self.who}-{self.mode}.log", "ab")  # noqa: SIM115
        with log:
            started = time.perf_counter()
            self.popen = subprocess.Popen(
                self.bench.launch(self.who, self.mode),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.bench.env(),
                cwd=self.bench.tmp,
            )

        def all_reported(fields: list[str]) -> bool:
            self._record(fields)
            return len(self.pids) == n

        return self.bench.reports.until(all_reported, f"{self.who}: {n} programs") - started

    def crash(self, name: str) -> float:
        """SIGKILL program ``name``; seconds until its replacement has reported."""
        old = self.pids[name]
        fd = self.pidfds[old]
        started = time.perf_counter()
        signal.pidfd_send_signal(fd, signal.SIGKILL)

        def replaced(fields: list[str]) -> bool:
            self._record(fields)
            return fields[0] == name and int(fields[1]) != old

        return self.bench.reports.until(replaced, f"{self.who}: a new {name}") - started

    def idle_cpu_percent(self, seconds: float) -> float:
        before, wall = cpu_seconds(self.pid), time.perf_counter()
        time.sleep(seconds)
        after, wall_after = cpu_seconds(self.pid), time.perf_counter()
        return 100 * (after - before) / (wall_after - wall)

    def guardian(self) -> int | None:
        for child in children_of(self.pid):
            if "_guardian.py" in cmdline(child):
                return child
        return None

    def _current_fds(self) -> list[int]:
        pids = [*self.pids.values(), *self.grandchildren.values()]
        return [self.pidfds[pid] for pid in pids if self.pidfds[pid] >= 0]

    def sigterm(self) -> tuple[float, float]:
        """SIGTERM to the supervising process; seconds until the first and every program died."""
        fds = self._current_fds()
        assert self.popen is not None
        poller = select.poll()
        for fd in fds:
            poller.register(fd, select.POLLIN)
        pending = set(fds)
        first = math.nan
        started = time.perf_counter()
        self.popen.send_signal(signal.SIGTERM)
        deadline = started + PATIENCE
        while pending:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(f"{self.who}: {len(pending)} programs alive after SIGTERM")
            for fd, _ in poller.poll(remaining * 1000):
                poller.unregister(fd)
                pending.discard(fd)
            if math.isnan(first):
                first = time.perf_counter() - started
        elapsed = time.perf_counter() - started
        self.popen.wait(PATIENCE)
        return first, elapsed

    def survivors_of_sigkill(self, wait: float) -> int:
        """SIGKILL to the supervising process; programs and grandchildren alive ``wait`` s on."""
        fds = self._current_fds()
        assert self.popen is not None
        self.popen.kill()
        self.popen.wait(PATIENCE)
        time.sleep(wait)
        return sum(not is_dead(fd) for fd in fds)

    def left_behind(self) -> int:
        """After the supervising process has exited: how many of its processes are alive."""
        deadline = time.monotonic() + LEFT_BEHIND_GRACE
        while (left := len(marked(self.bench.needle))) and time.monotonic() < deadline:
            time.sleep(0.01)
        return left

    def close(self) -> None:
        """Kill whatever is left: the supervising process first, then all that it started."""
        if self.popen is not None:
            if self.popen.poll() is None:
                self.popen.kill()
            self.popen.wait()
        sweep(self.bench.token)
        for fd in self.pidfds.values():
            if fd >= 0:
                os.close(fd)
        self.pidfds.clear()


@contextlib.contextmanager
def lifetime(bench: Bench, who: str, mode: str) -> Iterator[Lifetime]:
    life = Lifetime(bench, who, mode)
    try:
        yield life
    finally:
        life.close()


# -------------------------------------------------------------------------------- peers


def peers_bin(reporter: Reporter) -> Path | None:
    """The ``bin`` of the peers' virtual environment, made on first use; None if it cannot be."""
    bin_dir = PEERS_VENV / "bin"
    if (bin_dir / "supervisord").exists() and (bin_dir / "circusd").exists():
        return bin_dir
    reporter.comment(f"installing {' and '.join(PEER_PACKAGES)} into {PEERS_VENV}")
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", "--clear", str(PEERS_VENV)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        subprocess.run(
            [str(bin_dir / "python"), "-m", "pip", "install", "-q", *PEER_PACKAGES],
            check=True,
            capture_output=True,
            timeout=900,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        last = detail.decode(errors="replace").strip().splitlines()[-1:] or [str(exc)]
        reporter.comment(
            f"could not install {' and '.join(PEER_PACKAGES)} ({last[0]}): their columns are"
            " skipped"
        )
        shutil.rmtree(PEERS_VENV, ignore_errors=True)
        return None
    return bin_dir


def peer_versions(bin_dir: Path) -> str:
    code = (
        "import importlib.metadata as m;"
        f"print(', '.join(p + ' ' + m.version(p) for p in {PEER_PACKAGES!r}))"
    )
    result = subprocess.run(
        [str(bin_dir / "python"), "-c", code], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or "versions unknown"


# ---------------------------------------------------------------------------- the bench


@dataclass
class Samples:
    crash: list[float] = field(default_factory=list)
    start: list[float] = field(default_factory=list)
    sigterm: list[float] = field(default_factory=list)
    sigterm_first: list[float] = field(default_factory=list)
    ignored: list[float] = field(default_factory=list)
    survivors: list[float] = field(default_factory=list)
    idle_cpu: list[float] = field(default_factory=list)
    uss: list[float] = field(default_factory=list)
    guardian_uss: list[float] = field(default_factory=list)
    left_behind: int = 0


def one_repetition(bench: Bench, who: str, rep: int, samples: Samples) -> None:
    sizes = bench.sizes
    settle = sizes.settle
    with lifetime(bench, who, "plain") as life:
        samples.start.append(life.start())
        time.sleep(settle)
        samples.crash.append(life.crash(f"p{rep % sizes.programs:02d}"))
        time.sleep(settle)
        samples.idle_cpu.append(life.idle_cpu_percent(sizes.idle_seconds))
        samples.uss.append(uss_mib(life.pid))
        guardian = life.guardian()
        if guardian is not None:
            samples.guardian_uss.append(uss_mib(guardian))
        first, every = life.sigterm()
        samples.sigterm_first.append(first)
        samples.sigterm.append(every)
        samples.left_behind += life.left_behind()
    with lifetime(bench, who, "ignore") as life:
        life.start()
        time.sleep(settle)
        samples.ignored.append(life.sigterm()[1])
        samples.left_behind += life.left_behind()
    with lifetime(bench, who, "grandchild") as life:
        life.start()
        time.sleep(settle)
        # The survivors are killed when the lifetime ends: expected, not "left behind".
        samples.survivors.append(life.survivors_of_sigkill(sizes.survivor_wait))


@dataclass
class Stage:
    """Our supervising process stopped at one stage: its USS and how long it took to get there."""

    uss: list[float] = field(default_factory=list)
    start: list[float] = field(default_factory=list)


def measure_stages(bench: Bench, reps: int) -> dict[str, Stage]:
    """Each stage of ``_process_parents.py stage``, ``reps`` times."""
    found = {stage: Stage() for stage in STAGES}
    for _ in range(reps):
        for stage in STAGES:
            bench.reports.drain()
            started = time.perf_counter()
            popen = subprocess.Popen(
                [sys.executable, PARENTS, "stage", stage, bench.reports.path],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=bench.env(),
            )
            try:
                reported = bench.reports.until(
                    lambda fields: fields[:1] == ["stage"], f"stage {stage}"
                )
                found[stage].start.append(reported - started)
                time.sleep(0.05)
                found[stage].uss.append(uss_mib(popen.pid))
            finally:
                popen.kill()
                popen.wait()
    return found


def run(config: Config, reporter: Reporter) -> None:
    """(i) process children against supervisord, circus and the floor; six targets."""
    sizes = sizes_for(config)
    reps = max(1, min(config.reps, sizes.reps))
    r = reporter
    make_subreaper()
    # As pip does when it installs a package (and as the peers' were): without the bytecode,
    # every start of our supervising process would compile trio_supervise anew (about 40 ms
    # here, where PYTHONDONTWRITEBYTECODE is set and an editable install never writes it).
    compileall.compile_dir(str(Path(trio_supervise.__file__).parent), quiet=1)
    peers = peers_bin(r) if sizes.peers else None
    if not sizes.peers:
        r.comment("process: --quick runs the floor and trio_supervise only (no peers)")
    elif peers is not None:
        r.comment(f"process: peers from {PEERS_VENV}: {peer_versions(peers)}")
    who_all = [who for who in ORDER if peers is not None or who in (FLOOR, SUPERVISE)]
    token = uuid.uuid4().hex
    samples = {who: Samples() for who in who_all}
    with exit_on_signals(), tempfile.TemporaryDirectory(prefix="bench-process-") as tmp:
        reports = Reports(f"{tmp}/reports")
        bench = Bench(sizes, tmp, reports, token, peers)
        try:
            for rep in range(reps):
                order = who_all[rep % len(who_all) :] + who_all[: rep % len(who_all)]
                for who in order:
                    if who not in samples:
                        continue
                    try:
                        one_repetition(bench, who, rep, samples[who])
                    except (OSError, TimeoutError, subprocess.SubprocessError) as exc:
                        if who in (FLOOR, SUPERVISE):
                            raise
                        r.comment(f"process: {who} failed ({exc}); its column is skipped")
                        del samples[who]
            stages = measure_stages(bench, reps)
        finally:
            sweep(token)
            reports.close()
    report(r, sizes, samples, stages)


def report(
    r: Reporter, sizes: Sizes, samples: dict[str, Samples], stages: dict[str, Stage]
) -> None:
    n = sizes.programs
    ms = 1000.0

    def column(metric: str, attr: str, unit: str, scale: float = 1.0, digits: int = 2) -> None:
        for who, s in samples.items():
            values: list[float] = getattr(s, attr)
            r.metric(f"{metric}_{who}_{unit}_median", median(values) * scale, unit, digits)

    def ours_over_floor(metric: str, attr: str, unit: str, target: float) -> None:
        ours: list[float] = getattr(samples[SUPERVISE], attr)
        floor: list[float] = getattr(samples[FLOOR], attr)
        r.metric(f"{metric}_ratio_median", ratio(median(ours), median(floor)), "x")
        r.target(f"{metric}_ratio_median", target)

    column("process_crash_to_running", "crash", "ms", ms)
    ours_over_floor("process_crash_to_running", "crash", "ms", 1.5)
    column(f"process_start_{n}", "start", "ms", ms)
    ours_over_floor(f"process_start_{n}", "start", "ms", 1.5)
    column(f"process_sigterm_{n}", "sigterm", "ms", ms)
    ours_over_floor(f"process_sigterm_{n}", "sigterm", "ms", 1.5)
    # Information: until the first program is dead (the supervisor's reaction to the signal).
    column(f"process_sigterm_{n}_first_dead", "sigterm_first", "ms", ms)
    column(f"process_sigterm_ignored_{n}", "ignored", "ms", ms)
    ours_over_floor(f"process_sigterm_ignored_{n}", "ignored", "ms", 1.05)
    column(f"process_survivors_{2 * n}", "survivors", "count", digits=0)
    r.target(f"process_survivors_{2 * n}_{SUPERVISE}_count_median", 0)
    column(f"process_idle_cpu_{n}", "idle_cpu", "percent")
    r.target(f"process_idle_cpu_{n}_{SUPERVISE}_percent_median", 1)
    column(f"process_uss_{n}", "uss", "MiB")
    ours = samples[SUPERVISE]
    if ours.guardian_uss:
        r.metric(f"process_uss_{n}_guardian_MiB_median", median(ours.guardian_uss), "MiB")
    uss = {stage: median(values.uss) for stage, values in stages.items()}
    for stage, value in uss.items():
        r.metric(f"process_uss_stage_{stage}_MiB_median", value, "MiB")
    per_child = (median(ours.uss) - uss["tree0"]) / n
    r.metric("process_uss_per_child_KiB_median", per_child * 1024, "KiB", digits=1)
    r.comment(
        f"process: our supervising process's USS, {median(ours.uss):.1f} MiB with {n} programs ="
        f" {uss['python']:.1f} MiB of the interpreter (with subprocess) +"
        f" {uss['trio'] - uss['python']:.1f} of trio + {uss['trio_supervise'] - uss['trio']:.1f}"
        f" of trio_supervise's modules + {uss['tree0'] - uss['trio_supervise']:.1f} of a running"
        f" tree (no children) + {per_child * 1024:.0f} KiB per process child; its guardian"
        f" process {median(ours.guardian_uss) if ours.guardian_uss else math.nan:.1f} MiB more"
    )
    # Why our start is slower than the floor's: the supervising process's own imports.
    launch = {stage: median(values.start) for stage, values in stages.items()}
    for stage, value in launch.items():
        r.metric(f"process_launch_stage_{stage}_ms_median", value * ms, "ms")
    imports = launch["trio_supervise"] - launch["python"]
    r.metric("process_launch_imports_ms_median", imports * ms, "ms")
    without = median(ours.start) - imports
    r.metric(f"process_start_{n}_{SUPERVISE}_less_imports_ms_median", without * ms, "ms")
    r.metric(
        f"process_start_{n}_less_imports_ratio_median",
        ratio(without, median(samples[FLOOR].start)),
        "x",
    )
    for who, s in samples.items():
        r.metric(f"process_left_after_sigterm_{who}_count", s.left_behind, "count", digits=0)
