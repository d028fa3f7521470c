"""A reference model of the supervision contract, for ``test_supervisor_model.py``.

Plain Python with no trio: a discrete-event simulation of what ``/work/shared/design/api.md``
§2, §4 and §5 say a tree does, small enough to be checked by reading. It follows the
contract (and the decisions taken for the runtime rewrite), never the current code:

* Every supervisor is an actor with a FIFO queue: a child's exit, a failed health check, a
  due backoff and a retried restart are messages, handled one at a time.
* A restart is decided when the exit is handled: it counts in OTP's sliding window
  (``now - t <= max_seconds``), stops the strategy group in reverse order (the stopped
  siblings are ``RESTARTING``), increments ``restarts`` of every child of the group, waits
  the backoff and starts the group in order.
* A start that fails (raises before ``task_status.started()``) emits ``START_FAILED`` and is
  a new restart decision of that child (OTP's ``try_again_restart``): it counts in the
  intensity, and without a backoff the next attempt is a message at the end of the queue.
* Starts and stops take no virtual time: the fakes of the test start at their first
  checkpoint and exit when cancelled. So after every step each child is ``RUNNING``,
  ``RESTARTING`` (waiting for a backoff) or ``STOPPED``.

Times are the same floats the runtime computes (``now + delay``, ``now + interval``); the
test moves the clock exactly to each time the model expects something to happen.
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass, field

from trio_supervise import ChildState, Restart, Strategy

#: The backoff of a supervisor drawn with one; no jitter, so delays are exact.
BACKOFF_INITIAL = 0.5
BACKOFF_FACTOR = 2.0
BACKOFF_MAXIMUM = 2.0
BACKOFF_RESET_AFTER = 3.0

#: The health check of the health-checked worker. The interval is not a multiple of any
#: power of two, so that its probes never fall on the same instant as a backoff or a step
#: of the test (all multiples of 1/4): simultaneous timers have no order the contract fixes.
HEALTH_INTERVAL = 0.7 + 1 / 997
HEALTH_TIMEOUT = 0.5
HEALTH_THRESHOLD = 2

#: Event kinds, as the model names them (the test maps them onto ``EventKind``).
STARTED = "STARTED"
RESTARTED = "RESTARTED"
EXITED = "EXITED"
CRASHED = "CRASHED"
START_FAILED = "START_FAILED"
RESTART_SCHEDULED = "RESTART_SCHEDULED"
TERMINATED = "TERMINATED"
REMOVED = "REMOVED"
INTENSITY_EXCEEDED = "INTENSITY_EXCEEDED"
HEALTH_CHANGED = "HEALTH_CHANGED"

#: The exceptions the events carry, by class name.
FAKE_CRASH = "FakeCrash"
START_REFUSED = "StartRefused"
HEALTH_FAILED = "HealthCheckFailed"
GAVE_UP = "RestartIntensityExceeded"
CHILD_START_ERROR = "ChildStartError"


@dataclass(frozen=True)
class WorkerShape:
    """A worker child of the generated tree."""

    name: str
    restart: Restart
    # True: a task_status target (can be told to fail its next starts); False: plain.
    task_status: bool
    health: bool = False


@dataclass(frozen=True)
class SupervisorShape:
    """A supervisor of the generated tree (the root or a nested one)."""

    name: str
    strategy: Strategy
    max_restarts: int
    max_seconds: float
    backoff: bool
    children: tuple[WorkerShape | SupervisorShape, ...]
    restart: Restart = Restart.PERMANENT


Shape = WorkerShape | SupervisorShape


@dataclass(frozen=True)
class ExpectedEvent:
    """An event the tree must emit. ``restarts``/``error`` None: not checked."""

    kind: str
    path: str
    restarts: int | None
    time: float
    error: str | None = None


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def backoff_delay(attempt: int) -> float:
    """§2: ``min(maximum, initial * factor**(n-1))``, no jitter."""
    return min(BACKOFF_MAXIMUM, BACKOFF_INITIAL * BACKOFF_FACTOR ** (attempt - 1))


def restarts_after(policy: Restart, abnormal: bool) -> bool:
    """§2: permanent after any exit, transient after an abnormal one, temporary never."""
    return policy is Restart.PERMANENT or (policy is Restart.TRANSIENT and abnormal)


@dataclass(eq=False)
class MChild:
    name: str
    path: str
    shape: Shape
    owner: MSupervisor
    # Added by start_child: a restarted parent supervisor starts from its spec without it.
    dynamic: bool = False
    state: ChildState = ChildState.STOPPED
    restarts: int = 0
    # The n of the backoff: consecutive restarts since the child last ran reset_after.
    consecutive: int = 0
    started_at: float | None = None
    # A worker's run, or a nested supervisor, is running.
    live: bool = False
    # The running instance of a nested supervisor (the last one once it stopped).
    sup: MSupervisor | None = None
    # The pending restart (backoff) this child waits in, if any.
    pending: Pending | None = None
    run_id: int = 0
    health_status: str = "healthy"
    failures: int = 0
    next_probe: float | None = None

    @property
    def kind(self) -> str:
        return "supervisor" if isinstance(self.shape, SupervisorShape) else "worker"


@dataclass(eq=False)
class Pending:
    due: float
    group: list[MChild]


@dataclass(eq=False)
class MSupervisor:
    path: str
    shape: SupervisorShape
    parent: MChild | None
    children: list[MChild] = field(default_factory=list)
    # Times of the restarts decided within the window, oldest first.
    window: list[float] = field(default_factory=list)
    pendings: list[Pending] = field(default_factory=list)
    queue: deque[tuple[object, ...]] = field(default_factory=deque)
    running: bool = False


class Model:
    """The expected tree. Feed it the test's inputs; read what the tree must show."""

    def __init__(self, shape: SupervisorShape) -> None:
        self.now = 0.0
        #: Events expected since the last check, in the order the model made them.
        self.events: list[ExpectedEvent] = []
        #: Per supervisor path, the workers whose first step ran since the last check.
        self.attempts: dict[str, list[str]] = {}
        #: Per path, how many next starts of a task_status worker fail.
        self.fail_starts: dict[str, int] = {}
        #: Per path, what the health probe of the health-checked worker answers.
        self.healthy: dict[str, bool] = {}
        #: True once the root supervisor gave up: the tree has ended.
        self.finished = False
        self.root = MSupervisor("", shape, None)
        self.root.children = [self._new_child(self.root, s) for s in shape.children]
        if not self._start_children(self.root):  # pragma: no cover - never drawn
            raise AssertionError("the initial start of the generated tree failed")

    def copy(self) -> Model:
        return copy.deepcopy(self)

    # ------------------------------------------------------------------------ queries

    def supervisors(self) -> list[MSupervisor]:
        """The running supervisors, root first, depth first."""
        found: list[MSupervisor] = []

        def visit(sup: MSupervisor) -> None:
            found.append(sup)
            for child in sup.children:
                if child.sup is not None and child.live:
                    visit(child.sup)

        if not self.finished:
            visit(self.root)
        return found

    def children(self) -> list[MChild]:
        """Every child of a running supervisor."""
        return [child for sup in self.supervisors() for child in sup.children]

    def find(self, path: str) -> MChild | None:
        for child in self.children():
            if child.path == path:
                return child
        return None

    def supervisor(self, path: str) -> MSupervisor | None:
        for sup in self.supervisors():
            if sup.path == path:
                return sup
        return None

    def timers(self) -> list[tuple[float, str, str]]:
        """Every timer of the tree: ``(time, "due"|"probe", supervisor or child path)``."""
        found: list[tuple[float, str, str]] = []
        for sup in self.supervisors():
            found += [(p.due, "due", sup.path) for p in sup.pendings]
            found += [
                (c.next_probe, "probe", c.path)
                for c in sup.children
                if c.live and c.next_probe is not None
            ]
        return sorted(found)

    def next_timer(self) -> float | None:
        timers = self.timers()
        return timers[0][0] if timers else None

    # ------------------------------------------------------------------- test inputs

    def child_exits(self, path: str, abnormal: bool) -> None:
        """A running worker raised (``abnormal``) or returned."""
        child = self._get(path)
        assert child.live
        assert child.kind == "worker"
        self._end_run(child)
        if abnormal:
            self._emit(CRASHED, child, error=FAKE_CRASH)
        else:
            self._emit(EXITED, child)
        self._post(child.owner, "exit", child, abnormal)

    def fire_timers(self, order: list[int]) -> None:
        """The timers due now fire, in ``order`` (indexes into the due ones)."""
        due = [timer for timer in self.timers() if timer[0] == self.now]
        for index in order:
            _, what, path = due[index]
            if what == "probe":
                child = self._get(path)
                if child.live and child.next_probe == self.now:
                    self._probe(child)
            else:
                sup = self.supervisor(path)
                if sup is not None:
                    for pending in [p for p in sup.pendings if p.due == self.now]:
                        if pending not in sup.pendings:
                            continue  # handling the one before dropped it (gave up, say)
                        sup.pendings.remove(pending)
                        self._post(sup, "due", pending)
            self._drain()

    def due_count(self) -> int:
        return sum(1 for timer in self.timers() if timer[0] == self.now)

    def terminate_child(self, path: str) -> str | None:
        """``tree.terminate_child``: the error class name it raises, or None."""
        child = self.find(path)
        if child is None:
            return "LookupError"
        self._unpend(child)
        if child.live:
            self._stop(child, TERMINATED)
        child.state = ChildState.STOPPED
        if child.shape.restart is Restart.TEMPORARY:
            self._remove(child)
        return None

    def restart_child(self, path: str) -> str | None:
        child = self.find(path)
        if child is None:
            return "LookupError"
        self._unpend(child)
        if child.live:
            self._stop(child, EXITED)
        child.state = ChildState.STOPPED
        child.consecutive = 0
        child.restarts += 1
        if not self._start(child, restarted=True):
            return CHILD_START_ERROR
        return None

    def delete_child(self, path: str) -> str | None:
        child = self.find(path)
        if child is None:
            return "LookupError"
        if child.state is not ChildState.STOPPED:
            return "SupervisionError"
        self._remove(child)
        return None

    def start_child(self, under: str, shape: Shape) -> str | None:
        sup = self.supervisor(under)
        if sup is None:
            return "LookupError"
        if any(c.name == shape.name for c in sup.children):
            return "SupervisionError"
        child = self._new_child(sup, shape)
        child.dynamic = True
        sup.children.append(child)
        if not self._start(child, restarted=False):
            sup.children.remove(child)  # its spec is not kept
            return CHILD_START_ERROR
        return None

    # ---------------------------------------------------------------------- internals

    def _emit(
        self, kind: str, child: MChild, *, error: str | None = None, counted: bool = True
    ) -> None:
        restarts = child.restarts if counted else None
        self.events.append(ExpectedEvent(kind, child.path, restarts, self.now, error))

    def _get(self, path: str) -> MChild:
        child = self.find(path)
        assert child is not None, path
        return child

    def _new_child(self, sup: MSupervisor, shape: Shape) -> MChild:
        return MChild(shape.name, join(sup.path, shape.name), shape, sup)

    def _post(self, sup: MSupervisor, *message: object) -> None:
        sup.queue.append(message)
        self._drain()

    def _drain(self) -> None:
        # Supervisors are independent actors; they are served deepest first, which only
        # matters for simultaneous messages (see HEALTH_INTERVAL).
        while not self.finished:
            busy = [sup for sup in reversed(self.supervisors()) if sup.queue]
            if not busy:
                return
            sup = busy[0]
            message = sup.queue.popleft()
            self._handle(sup, message)

    def _handle(self, sup: MSupervisor, message: tuple[object, ...]) -> None:
        what = message[0]
        if what == "exit":
            child, abnormal = message[1], message[2]
            assert isinstance(child, MChild)
            assert isinstance(abnormal, bool)
            self._exited(child, abnormal)
        elif what == "health":
            child, run_id = message[1], message[2]
            assert isinstance(child, MChild)
            if child.live and child.run_id == run_id:
                self._end_run(child)
                self._emit(CRASHED, child, error=HEALTH_FAILED)
                self._exited(child, abnormal=True)
        elif what in ("due", "retry"):
            pending = message[1]
            assert isinstance(pending, Pending)
            self._start_group(sup, pending.group)
        else:  # pragma: no cover
            raise AssertionError(message)

    def _exited(self, child: MChild, abnormal: bool) -> None:
        """The policy for a run that ended by itself (or failed its health checks)."""
        child.state = ChildState.STOPPED
        if not restarts_after(child.shape.restart, abnormal):
            self._not_restarted(child)
            return
        sup = child.owner
        assert child.started_at is not None
        if sup.shape.backoff and self.now - child.started_at >= BACKOFF_RESET_AFTER:
            child.consecutive = 0
        self._decide(child, retry=False)

    def _not_restarted(self, child: MChild) -> None:
        child.state = ChildState.STOPPED
        if child.shape.restart is Restart.TEMPORARY:
            self._remove(child)

    def _remove(self, child: MChild) -> None:
        self._unpend(child)
        child.owner.children.remove(child)
        self._emit(REMOVED, child)

    def _unpend(self, child: MChild) -> None:
        pending = child.pending
        if pending is not None:
            pending.group.remove(child)
            if not pending.group and pending in child.owner.pendings:
                child.owner.pendings.remove(pending)
            child.pending = None

    def _decide(self, failed: MChild, *, retry: bool) -> None:
        """A restart of ``failed`` is decided now (§2 intensity, strategy, backoff)."""
        sup = failed.owner
        shape = sup.shape
        now = self.now
        sup.window = [t for t in [*sup.window, now] if now - t <= shape.max_seconds]
        if len(sup.window) > shape.max_restarts:
            self._give_up(sup)
            return
        if shape.strategy is Strategy.ONE_FOR_ONE:
            group = [failed]
        else:
            # Stopped children (terminated, or gone by their policy) stay stopped.
            live = [c for c in sup.children if c is failed or c.state is not ChildState.STOPPED]
            group = live if shape.strategy is Strategy.ONE_FOR_ALL else live[live.index(failed) :]
            for child in group:
                self._unpend(child)
            for child in reversed(group):
                if child is not failed:
                    if child.live:
                        self._stop(child, EXITED)
                    child.state = ChildState.RESTARTING
            for child in list(group):
                if child is not failed and child.shape.restart is Restart.TEMPORARY:
                    self._remove(child)
                    group.remove(child)
        delay = backoff_delay(failed.consecutive + 1) if shape.backoff else 0.0
        failed.consecutive += 1
        for child in group:
            child.state = ChildState.RESTARTING
            child.restarts += 1
        self._emit(RESTART_SCHEDULED, failed)
        pending = Pending(now + delay, group)
        if delay > 0:
            sup.pendings.append(pending)
            for child in group:
                child.pending = pending
        elif retry:
            sup.queue.append(("retry", pending))
        else:
            self._start_group(sup, group)

    def _start_group(self, sup: MSupervisor, group: list[MChild]) -> None:
        for child in list(group):
            if child.state is not ChildState.RESTARTING or child not in sup.children:
                continue  # terminated, restarted by hand or removed meanwhile
            child.pending = None
            if self._start(child, restarted=True):
                continue
            if not restarts_after(child.shape.restart, abnormal=True):
                self._not_restarted(child)
                continue
            self._decide(child, retry=True)
            return

    def _give_up(self, sup: MSupervisor) -> None:
        self.events.append(ExpectedEvent(INTENSITY_EXCEEDED, sup.path, None, self.now, GAVE_UP))
        self._stop_all(sup, EXITED)
        parent = sup.parent
        if parent is None:
            self.finished = True
            return
        self._end_run(parent)
        self._emit(CRASHED, parent, error=GAVE_UP)
        parent.owner.queue.append(("exit", parent, True))

    def _start(self, child: MChild, *, restarted: bool) -> bool:
        """Start one run of ``child``; False if it failed before it started."""
        sup = child.owner
        if isinstance(child.shape, WorkerShape):
            self.attempts.setdefault(sup.path, []).append(child.path)
            if child.shape.task_status and self.fail_starts.get(child.path, 0) > 0:
                self.fail_starts[child.path] -= 1
                child.state = ChildState.STOPPED
                self._emit(START_FAILED, child, error=START_REFUSED)
                return False
        else:
            old = child.sup
            if old is not None:
                # A restarted supervisor starts from its spec: start_child's children go.
                for gone in [c for c in old.children if c.dynamic]:
                    self._emit(REMOVED, gone)
            instance = MSupervisor(child.path, child.shape, child)
            instance.children = [self._new_child(instance, s) for s in child.shape.children]
            child.sup = instance
            if not self._start_children(instance):
                child.state = ChildState.STOPPED
                self._emit(START_FAILED, child, error=CHILD_START_ERROR)
                return False
        child.live = True
        child.run_id += 1
        child.state = ChildState.RUNNING
        child.started_at = self.now
        self._emit(RESTARTED if restarted else STARTED, child)
        if isinstance(child.shape, WorkerShape) and child.shape.health:
            if child.health_status != "healthy":
                child.health_status = "healthy"
                self._emit(HEALTH_CHANGED, child)
            child.failures = 0
            child.next_probe = self.now + HEALTH_INTERVAL
        return True

    def _start_children(self, sup: MSupervisor) -> bool:
        """The first start of a supervisor: its children in order (§2)."""
        for index, child in enumerate(sup.children):
            if not self._start(child, restarted=False):
                for started in reversed(sup.children[:index]):
                    if started.live:
                        self._stop(started, EXITED)
                return False
        sup.running = True
        return True

    def _end_run(self, child: MChild) -> None:
        child.live = False
        child.next_probe = None
        if child.sup is not None:
            child.sup.running = False

    def _stop(self, child: MChild, kind: str) -> None:
        """Stop a running child (§4); a nested supervisor stops its children first."""
        if child.sup is not None and child.sup.running:
            self._stop_all(child.sup, kind)
        self._end_run(child)
        child.state = ChildState.STOPPED
        self._emit(kind, child)

    def _stop_all(self, sup: MSupervisor, kind: str) -> None:
        for pending in sup.pendings:
            for child in pending.group:
                child.pending = None
        sup.pendings.clear()
        sup.queue.clear()
        for child in reversed(sup.children):
            if child.live:
                self._stop(child, kind)
            child.state = ChildState.STOPPED
        sup.running = False

    def _probe(self, child: MChild) -> None:
        """§5: one probe of the health-checked worker."""
        healthy = self.healthy.get(child.path, True)
        status = "healthy" if healthy else "unhealthy"
        if status != child.health_status:
            child.health_status = status
            self._emit(HEALTH_CHANGED, child)
        child.failures = 0 if healthy else child.failures + 1
        if child.failures >= HEALTH_THRESHOLD:
            child.next_probe = None
            child.owner.queue.append(("health", child, child.run_id))
        else:
            child.next_probe = self.now + HEALTH_INTERVAL
