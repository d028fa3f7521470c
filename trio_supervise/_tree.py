"""``supervisor_tree``: run a tree, and the handle to look at it and change it."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, NoReturn, final

import attrs
import trio

from . import _checks
from ._context import ChildState
from ._errors import (
    ChildNotFoundError,
    ChildStartError,
    RestartIntensityExceeded,
    SpecError,
    SupervisionError,
)
from ._events import Event, EventBus, EventKind, EventStream, log
from ._health import (
    ChildHealth,
    HealthReport,
    child_health,
    health_report,
    passes_down,
    walk,
)
from ._process import ProcessRun
from ._runner import StopCause
from ._shutdown import Band, Shutdown, ShutdownHook, ShutdownReport
from ._signals import SignalControls, watch_signals
from ._singleton import SingletonRun
from ._spec import ChildSpec, SupervisorSpec
from ._supervisor import Child, Supervisor, TreeShared
from ._systemd import SystemdNotifier, TreeNotifications

#: How many events ``tree.history`` keeps by default.
DEFAULT_HISTORY_SIZE = 1000


_current_tree: ContextVar[SupervisorTree] = ContextVar("trio_supervise.current_tree")


def current_tree() -> SupervisorTree:
    """The tree whose body, child or shutdown hook calls this.

    Integrations use it to reach the tree they run in (health endpoints, shutdown hooks).

    Raises:
      RuntimeError: when called outside ``supervisor_tree`` and the tasks it started.
    """
    try:
        return _current_tree.get()
    except LookupError:
        raise RuntimeError(
            "current_tree() was called outside a supervisor tree; call it from the body of"
            " `async with supervisor_tree(...)`, a supervised child or a shutdown hook"
        ) from None


@final
@attrs.frozen
class ChildInfo:
    """A snapshot of one child, from ``tree.info()`` and ``tree.children()``.

    Attributes:
      name, path: the child's name and its path in the tree.
      kind: ``"worker"`` or ``"supervisor"``.
      state: its ``ChildState``.
      restarts: how many times it has been restarted.
      last_error: the exception of its last abnormal exit, or None.
      started_at: ``trio.current_time()`` of its last start, or None before it started.
      pid: a process child's pid while its process runs; None otherwise and for tasks.
      output_tail: a process child's last lines of output (of its current or last run),
        oldest first; empty for tasks.
      status: a ``Ready.notify()`` process child's last ``STATUS=`` text, or None.
      lock_holder: for a ``ChildSpec.singleton`` child, the replica that holds its lock
        (``"<host name>:<pid>"``; this one's while the child runs), as last seen while
        waiting; None for other children, while nobody holds it, and once stopped.
      restart_at: while it waits out a backoff (``RESTARTING``), the ``trio.current_time()``
        its restart is due at; None otherwise.
    """

    name: str
    path: str
    kind: str
    state: ChildState
    restarts: int
    last_error: BaseException | None
    started_at: float | None
    pid: int | None = None
    output_tail: tuple[str, ...] = ()
    status: str | None = None
    lock_holder: str | None = None
    restart_at: float | None = None


@final
@attrs.frozen
class ChildCounts:
    """Counts of a supervisor's children, as OTP's ``count_children``.

    Attributes:
      specs: children the supervisor holds, running or not.
      active: children running now.
      workers, supervisors: children of each kind, running or not.
    """

    specs: int
    active: int
    workers: int
    supervisors: int


def _lock_holder(child: Child) -> str | None:
    run = child.run
    if run is None or run.exited or not isinstance(run.service, SingletonRun):
        return None
    return run.service.holder


def _info(child: Child) -> ChildInfo:
    process = child.run.service if child.run is not None else None
    if isinstance(process, ProcessRun):
        pid, tail, status = process.running_pid, tuple(process.tail), process.status
    else:
        pid, tail, status = None, (), None
    return ChildInfo(
        child.spec.name,
        child.path,
        child.kind,
        child.state,
        child.restarts,
        child.last_error,
        child.started_at,
        pid,
        tail,
        status,
        _lock_holder(child),
        child.restart_due,
    )


class _NoPublicConstructor(type):
    def __call__(cls, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(
            f"{cls.__module__}.{cls.__qualname__} has no public constructor;"
            " get one from 'async with supervisor_tree(spec) as tree'"
        )

    def _create(cls, *args: Any, **kwargs: Any) -> Any:
        return super().__call__(*args, **kwargs)


@final
class SupervisorTree(metaclass=_NoPublicConstructor):
    """The handle of a running tree, from ``async with supervisor_tree(spec) as tree``.

    Paths name children below the root: ``"scanner"``, ``"db/pool"``; ``""`` is the root.
    Unknown paths raise ``ChildNotFoundError`` (a ``LookupError``) naming the nearest
    existing supervisor and its children.
    """

    def __init__(
        self,
        spec: SupervisorSpec,
        hooks: Sequence[ShutdownHook],
        shutdown_deadline: float,
        history_size: int,
        rng: random.Random,
        reload_hooks: Mapping[str, Callable[[], Awaitable[object]]],
    ) -> None:
        self._bus = EventBus(history_size)
        self._reload_hooks: dict[str, Callable[[], Awaitable[object]]] = dict(reload_hooks)
        self._shared = TreeShared(self._bus, rng)
        self._root = Supervisor(spec, "", self._shared)
        self._shutdown = Shutdown(
            [ShutdownHook("supervisor", self._stop_root, priority=Band.DRAIN), *hooks],
            shutdown_deadline,
            self._bus,
        )
        self._body_scope = trio.CancelScope()
        # Shielded: cancelling the code around the tree ends the body and starts the
        # shutdown, which stops the children in order; only the shutdown cancels this.
        self._root_scope = trio.CancelScope(shield=True)
        # Set when the root has started all its children, or has failed to.
        self._root_started = trio.Event()
        # Set when the root supervisor's task has ended, however it ended.
        self._root_done = trio.Event()
        # The root's ChildStartError or RestartIntensityExceeded; None otherwise.
        self._root_error: ChildStartError | RestartIntensityExceeded | None = None

    # ----------------------------------------------------------------------- the runtime

    async def _run_root(self) -> None:
        started = _EventStatus(self._root_started, self._shutdown)
        try:
            with self._root_scope:
                await self._root.run(task_status=started)
        except (ChildStartError, RestartIntensityExceeded) as exc:
            self._root_error = exc
        finally:
            self._root_started.set()
            self._root_done.set()
            if self._root_error is not None:
                self._trigger(f"root supervisor failed: {self._root_error}")
            else:
                self._trigger("root supervisor exited")

    async def _stop_root(self) -> None:
        self._root.request_stop(StopCause.SHUTDOWN, f"shutdown ({self._shutdown.reason})")
        await self._root_done.wait()
        # The tree is down, but a stop that had to be cut, or that raised, is not a clean
        # one: say so in the report (and so in run()'s exit code) rather than "ok".
        shared = self._shared
        if shared.shutdown_overran:
            raise trio.TooSlowError("cut at a timeout: " + ", ".join(shared.shutdown_overran))
        if shared.shutdown_errors:
            raise SupervisionError("raised while stopping: " + "; ".join(shared.shutdown_errors))

    def _trigger(self, reason: str) -> None:
        if self._shutdown.trigger(reason):
            self._body_scope.cancel(reason=f"trio_supervise shutdown: {reason}")
            if not self._root_started.is_set():
                # Cut the start short: the body is entered already cancelled (an async
                # with block cannot be skipped without raising) and ends at its first
                # checkpoint.
                self._root.request_stop(StopCause.SHUTDOWN, f"shutdown ({reason})")

    def _signal_controls(self) -> SignalControls:
        # What the signal watcher (_signals.py, below this module) may do to the tree.
        return SignalControls(
            shutting_down=lambda: self.shutting_down,
            shutdown=self._trigger,
            force_shutdown=self._shutdown.force,
            has_reload_hooks=lambda: bool(self._reload_hooks),
            reload=self.reload,
        )

    # -------------------------------------------------------------------------- lookups

    def _find(self, path: str) -> tuple[Supervisor, Child]:
        if not isinstance(path, str) or not path:
            raise ChildNotFoundError(str(path), "", list(self._root.children))
        supervisor = self._root
        parts = path.split("/")
        last = len(parts) - 1
        for depth, part in enumerate(parts):
            child = supervisor.children.get(part)
            if child is None:
                raise ChildNotFoundError(path, supervisor.path, list(supervisor.children))
            if depth == last:
                return supervisor, child
            nested = child.nested
            if nested is None:
                raise ChildNotFoundError(path, child.path, [])
            supervisor = nested
        raise AssertionError("unreachable")  # pragma: no cover

    def _supervisor(self, path: str) -> Supervisor:
        if path == "":
            return self._root
        _, child = self._find(path)
        if child.kind != "supervisor":
            raise SupervisionError(
                f"{path!r} is a worker, not a supervisor; pass a supervisor path"
            )
        nested = child.nested
        if nested is None:
            raise SupervisionError(f"supervisor {path!r} has not started yet")
        return nested

    # ---------------------------------------------------------------------- introspection

    def children(self, path: str = "") -> list[ChildInfo]:
        """The children of the supervisor at ``path``, in start order."""
        return [_info(child) for child in self._supervisor(path).children.values()]

    def info(self, path: str) -> ChildInfo:
        """A snapshot of the child at ``path`` (``""``: the root supervisor)."""
        if path == "":
            return ChildInfo(
                self._root.spec.name,
                "",
                "supervisor",
                self._root_state(),
                0,
                self._root_error,
                None,
            )
        return _info(self._find(path)[1])

    def _root_state(self) -> ChildState:
        if self._root_done.is_set():
            return ChildState.STOPPED
        if self._shutdown.triggered.is_set():
            return ChildState.STOPPING
        return ChildState.RUNNING if self._root.accepting else ChildState.STARTING

    def count_children(self, path: str = "") -> ChildCounts:
        """Counts of the children of the supervisor at ``path``."""
        children = self._supervisor(path).children.values()
        active = sum(c.active for c in children)
        supervisors = sum(isinstance(c.spec, SupervisorSpec) for c in children)
        return ChildCounts(len(children), active, len(children) - supervisors, supervisors)

    def unstopped(self) -> list[str]:
        """Paths of children that overran their ``shutdown_timeout`` and still run."""
        return sorted(self._shared.unstopped)

    def render(self) -> str:
        """The live tree as indented text: name, kind, state and restarts of each child."""
        lines = [f"{self._root.spec.name} (supervisor, {self._root_state().value})"]
        for child in walk(self._root):
            depth = child.path.count("/") + 1
            holder = _lock_holder(child)
            lines.append(
                f"{'  ' * depth}{child.spec.name} ({child.kind}, {child.state.value},"
                f" restarts={child.restarts}" + (f", lock held by {holder})" if holder else ")")
            )
        return "\n".join(lines)

    async def wait_changed(self) -> None:
        """Wait until any child's state changes (for tests and tools that watch the tree)."""
        shared = self._shared
        shared.watchers += 1
        try:
            await shared.changed.park()
        finally:
            shared.watchers -= 1

    def events(self) -> EventStream:
        """An async iterator of the events from now on (see ``EventStream``)."""
        return self._bus.stream()

    def add_event_listener(self, listener: Callable[[Event], object]) -> Callable[[], None]:
        """Call ``listener(event)`` synchronously for every event from now on.

        For exporters that must see every event without a task of their own (metrics).
        It runs inside the supervisor's bookkeeping: keep it quick and non-blocking. An
        exception it raises is logged and ignored. Returns a function that removes it.
        """
        if not callable(listener):
            raise TypeError(f"add_event_listener takes a callable (got {listener!r})")
        self._bus.listeners.append(listener)

        def remove() -> None:
            if listener in self._bus.listeners:
                self._bus.listeners.remove(listener)

        return remove

    @property
    def history(self) -> list[Event]:
        """The most recent events (at most ``history_size``), oldest first."""
        return list(self._bus.history)

    def _child_health(self, path: str) -> ChildHealth:
        """One child's entry of ``health().children``, without walking the whole tree."""
        _, child = self._find(path)
        down_on_purpose = False
        parts = path.split("/")
        for depth in range(1, len(parts)):  # its supervisors, from the top
            _, above = self._find("/".join(parts[:depth]))
            down_on_purpose = passes_down(
                above, child_health(above, down_on_purpose), down_on_purpose
            )
        return child_health(child, down_on_purpose)

    def health(self) -> HealthReport:
        """The tree's health (see ``HealthReport``)."""
        return health_report(
            self._root,
            started=self._root_started.is_set(),
            exited=self._root_done.is_set(),
            failed=self._root_error is not None or self._root.failure is not None,
            shutting_down=self.shutting_down,
        )

    # ------------------------------------------------------------------------ operations

    async def start_child(self, spec: ChildSpec | SupervisorSpec, under: str = "") -> ChildInfo:
        """Add a child to the supervisor at ``under`` and start it.

        Returns once it has started (for a ``task_status`` target, once it called
        ``started()``), with its info.

        Raises:
          SupervisionError: the name is taken, the supervisor holds ``max_children``, or it
            is not running.
          ChildStartError: the child raised before it started; its spec is not kept.
          ChildNotFoundError: ``under`` does not exist.
        """
        if not isinstance(spec, ChildSpec | SupervisorSpec):
            raise TypeError(f"start_child takes a ChildSpec or SupervisorSpec (got {spec!r})")
        supervisor = self._supervisor(under)
        return _info(await supervisor.request_start(spec))

    async def terminate_child(self, path: str) -> None:
        """Stop the child at ``path`` (§4 of the contract) and keep its spec.

        It stays ``STOPPED`` and no strategy restarts it until ``restart_child``; a pending
        restart or a restart that keeps failing is called off. A temporary child's spec is
        removed instead, as in OTP.
        """
        supervisor, child = self._find(path)
        await supervisor.request_terminate(child)

    async def restart_child(self, path: str) -> ChildInfo:
        """Stop the child if running (or cancel its pending backoff) and start it now.

        Resets its backoff and its consecutive-failure count; not counted in the restart
        intensity. Returns once it has started.

        Raises:
          ChildStartError: it raised before it started; it stays ``STOPPED``.
        """
        supervisor, child = self._find(path)
        return _info(await supervisor.call(supervisor.restart_child, child))

    def delete_child(self, path: str) -> None:
        """Remove the spec of the stopped child at ``path``.

        When its supervisor is in the middle of something (stopping or restarting a group),
        the deletion is queued behind that work and done in order, as every change of the
        tree is; the child is listed until then.

        Raises:
          SupervisionError: it is running or waiting to restart; ``terminate_child`` first.
        """
        supervisor, child = self._find(path)
        if child.state is not ChildState.STOPPED:
            raise SupervisionError(
                f"cannot delete {path!r}: it is {child.state.value}; terminate_child() it first"
            )
        supervisor.delete_child(child)

    # ---------------------------------------------------------------------------- reload

    def add_reload_hook(self, name: str, fn: Callable[[], Awaitable[object]]) -> None:
        """Register ``fn`` (async, no arguments) to run on SIGHUP and ``tree.reload()``.

        Raises:
          SpecError: for an empty or taken name, or a ``fn`` that is not an async function.
        """
        _check_reload_hook(name, fn, self._reload_hooks)
        self._reload_hooks[name] = fn

    async def reload(self) -> dict[str, BaseException | None]:
        """Run every reload hook concurrently; return each hook's error (None when it worked).

        A hook that raises is logged and reported, never fatal: a bad configuration file
        must not take the service down. Each outcome is emitted as a ``RELOADED`` event.
        """
        outcomes: dict[str, BaseException | None] = {}

        async def run_one(name: str, fn: Callable[[], Awaitable[object]]) -> None:
            try:
                await fn()
            except Exception as exc:
                outcomes[name] = exc
                log(
                    logging.ERROR,
                    "reload hook %r failed",
                    name,
                    path="",
                    kind="RELOAD",
                    exc_info=exc,
                )
            else:
                outcomes[name] = None
            self._bus.emit(EventKind.RELOADED, name, error=outcomes[name])

        async with trio.open_nursery() as nursery:
            for name, fn in list(self._reload_hooks.items()):
                nursery.start_soon(run_one, name, fn)
        return outcomes

    # -------------------------------------------------------------------------- shutdown

    def add_shutdown_hook(
        self,
        name: str,
        fn: Callable[[], Awaitable[object]],
        *,
        priority: int,
        timeout: float | None = None,
    ) -> ShutdownHook:
        """Register a hook for the shutdown (see ``ShutdownHook``) and return it."""
        hook = ShutdownHook(name, fn, priority=priority, timeout=timeout)
        self._shutdown.add(hook)
        return hook

    def shutdown(self, reason: str = "requested") -> None:
        """Start the shutdown from anywhere; returns at once. The body is cancelled."""
        self._trigger(reason)

    @property
    def shutting_down(self) -> bool:
        """True once the shutdown has been decided."""
        return self._shutdown.triggered.is_set()

    @property
    def shutdown_reason(self) -> str | None:
        """Why the shutdown started ("signal SIGTERM", "body ended", ...); None before."""
        return self._shutdown.reason if self.shutting_down else None

    @property
    def shutdown_report(self) -> ShutdownReport | None:
        """The report, once the shutdown has run."""
        return self._shutdown.report


def _check_reload_hook(name: object, fn: object, taken: Mapping[str, object]) -> None:
    if not isinstance(name, str) or not name:
        raise SpecError(f"reload hook: name must be a non-empty string (got {name!r})")
    if name in taken:
        raise SpecError(f"reload hook {name!r}: the name is taken; give each hook its own name")
    _checks.async_function(f"reload hook {name!r}", "fn", fn, error=SpecError)


@final
class _EventStatus:
    """A ``task_status`` that sets an event, for starting a task without ``nursery.start``."""

    def __init__(self, event: trio.Event, shutdown: Shutdown | None = None) -> None:
        self._event = event
        self._shutdown = shutdown

    def started(self, value: object = None) -> None:
        self._event.set()
        if self._shutdown is not None:
            self._shutdown.was_ready = True


@asynccontextmanager
async def supervisor_tree(
    spec: SupervisorSpec,
    *,
    hooks: Sequence[ShutdownHook] = (),
    shutdown_deadline: float = 30.0,
    handle_signals: bool = False,
    history_size: int = DEFAULT_HISTORY_SIZE,
    rng: random.Random | None = None,
    reload_hooks: Mapping[str, Callable[[], Awaitable[object]]] | None = None,
    notify_systemd: bool = False,
) -> AsyncIterator[SupervisorTree]:
    """Run the tree of ``spec`` for the duration of the ``async with`` block.

    The children start in list order (a ``task_status`` target before the next one starts);
    the body runs once every child has started. When the body ends, normally or by an
    exception, the shutdown runs: its hooks band by band, with the tree's children stopped
    by the built-in ``"supervisor"`` hook (band ``DRAIN``) in reverse start order.

    Args:
      spec: the root supervisor.
      hooks: shutdown hooks, in addition to those added by ``tree.add_shutdown_hook``.
      shutdown_deadline: seconds the whole shutdown may take; it runs shielded from
        outside cancellation, so only this deadline (or a forced shutdown) cuts it short.
      handle_signals: install SIGINT/SIGTERM handlers (before the first child starts):
        the first signal starts the shutdown, a second one forces it; SIGHUP runs the
        reload hooks (and is logged and ignored when there are none).
      history_size: how many events ``tree.history`` keeps.
      rng: the random source of backoff jitter; pass a seeded one for reproducible runs.
      reload_hooks: name -> async function, run on SIGHUP and ``tree.reload()`` (more can
        be added by ``tree.add_reload_hook``).
      notify_systemd: when ``$NOTIFY_SOCKET`` is set, tell systemd (sd_notify) ``READY=1``
        once the root has started, before the body runs; ``STOPPING=1`` when the shutdown
        begins; ``STATUS=`` lines; and, with ``$WATCHDOG_USEC``, ``WATCHDOG=1`` every half
        of it while the tree is not unhealthy (see ``SystemdNotifier``). Does nothing
        without ``$NOTIFY_SOCKET``.

    Shutdown:
      A shutdown that starts while the body runs (``tree.shutdown()``, a signal, the root
      supervisor failing or stopping by itself) cancels the body. One that starts while
      the children are starting cuts the start short (the children started so far are
      stopped in reverse order) and the body is entered already cancelled, as the body of
      a cancelled nursery is: it ends at its first checkpoint.

    Raises:
      RestartIntensityExceeded: the root supervisor gave up; raised as itself, after the
        shutdown ran.
      ChildStartError: a child of the first start raised before it started.
      SpecError: ``spec`` is not a ``SupervisorSpec`` or an argument is out of range.
      Whatever the body raised, unchanged (never wrapped in an exception group), after
      the shutdown ran.

    Example::

        async with supervisor_tree(SupervisorSpec("app", [ChildSpec("w", work)])) as tree:
            await trio.sleep_forever()
    """
    if not isinstance(spec, SupervisorSpec):
        raise SpecError(f"supervisor_tree takes a SupervisorSpec (got {spec!r})")
    owner = "supervisor_tree"
    _checks.number(owner, "shutdown_deadline", shutdown_deadline, at_least=0, error=SpecError)
    _checks.integer(owner, "history_size", history_size, at_least=0, error=SpecError)
    for hook in hooks:
        if not isinstance(hook, ShutdownHook):
            raise SpecError(f"supervisor_tree: hooks must be ShutdownHook values (got {hook!r})")
    checked: dict[str, object] = {}
    for name, fn in (reload_hooks or {}).items():
        _check_reload_hook(name, fn, checked)
        checked[name] = fn
    tree: SupervisorTree = SupervisorTree._create(
        spec, hooks, shutdown_deadline, history_size, rng or random.Random(), reload_hooks or {}
    )
    notifier = SystemdNotifier.from_environ() if notify_systemd else None
    systemd = (
        TreeNotifications(notifier, tree) if notifier is not None and notifier.enabled else None
    )
    body_error: BaseException | None = None
    # Every task of the tree (children, hooks, the body) inherits it.
    token = _current_tree.set(tree)
    try:
        async with trio.open_nursery() as nursery:
            if handle_signals:
                await nursery.start(watch_signals, tree._signal_controls())
            nursery.start_soon(tree._run_root)
            try:
                await tree._root_started.wait()
                if tree._root_error is None:
                    if systemd is not None and not tree.shutting_down:
                        await systemd.started(nursery)
                    with tree._body_scope:
                        yield tree
            except BaseException as exc:
                body_error = exc
            if body_error is None:
                tree._trigger("body ended")
            elif isinstance(body_error, trio.Cancelled):
                tree._trigger("cancelled from outside")
            else:
                tree._trigger(f"body raised {type(body_error).__name__}")
            if systemd is not None:
                await systemd.stopping(tree._shutdown.reason)
            await tree._shutdown.run()
            # Past the deadline (or forced), the children that still run are cancelled.
            tree._root_scope.cancel(reason="trio_supervise shutdown ended")
            nursery.cancel_scope.cancel(reason="trio_supervise shutdown ended")
    finally:
        _current_tree.reset(token)
        if systemd is not None:
            systemd.close()
    tree._bus.close()
    if body_error is not None:
        raise body_error
    if tree._root_error is not None:
        raise tree._root_error
