"""Specs: the immutable description of a supervision tree, validated at construction.

Nothing here imports trio: a spec is plain data that can be built, compared and checked
anywhere, and the runtime in ``_supervisor`` reads it.
"""

from __future__ import annotations

import enum
import inspect
import math
import os
import random
import signal
import sys
import types
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, final

import attrs

from . import _checks
from ._checks import describe as _describe
from ._errors import SpecError
from ._process_spec import ProcessTarget, Ready, process_target

if TYPE_CHECKING:
    from ._singleton import Lock


class Restart(enum.Enum):
    """When a child is restarted (OTP's restart types).

    * ``PERMANENT``: after any exit, clean or not.
    * ``TRANSIENT``: only after an abnormal exit (it raised, or failed its health checks).
    * ``TEMPORARY``: never; a temporary child that exits is removed from the tree.
    """

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class Strategy(enum.Enum):
    """What a supervisor restarts when one of its children exits and is to be restarted.

    * ``ONE_FOR_ONE``: only that child.
    * ``ONE_FOR_ALL``: all children: the others are stopped in reverse start order, then all
      are started again in order.
    * ``REST_FOR_ONE``: that child and the children started after it: those are stopped in
      reverse order, then all of them are started again in order.
    """

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class AutoShutdown(enum.Enum):
    """When a supervisor stops by itself because its *significant* children are gone (OTP 24).

    * ``NEVER``: never (significant children are not allowed).
    * ``ANY_SIGNIFICANT``: as soon as one significant child exits and is not restarted.
    * ``ALL_SIGNIFICANT``: once every significant child has exited and is not restarted.
    """

    NEVER = "never"
    ANY_SIGNIFICANT = "any_significant"
    ALL_SIGNIFICANT = "all_significant"


class HealthStatus(enum.Enum):
    """The answer of a health probe, and the summary status of a tree."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


_LOG_FLOAT_MAX = math.log(sys.float_info.max)

AsyncFunction = Callable[..., Awaitable[Any]]
HealthProbe = Callable[[], Awaitable["bool | HealthStatus"]]


# Per plain function: start_child builds a spec per call, and signature() is most of the
# cost of building one. Weak keys: a cache must not keep a target alive.
_TAKES_TASK_STATUS: weakref.WeakKeyDictionary[types.FunctionType, bool] = (
    weakref.WeakKeyDictionary()
)


def _takes_task_status(fn: Callable[..., object]) -> bool:
    if isinstance(fn, types.FunctionType):
        known = _TAKES_TASK_STATUS.get(fn)
        if known is None:
            known = _TAKES_TASK_STATUS[fn] = _signature_takes_task_status(fn)
        return known
    return _signature_takes_task_status(fn)


def _signature_takes_task_status(fn: Callable[..., object]) -> bool:
    # signature() looks through partials and bound methods and drops a callable's self.
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins and odd callables: assume the plain shape
        return False
    return "task_status" in parameters


def _check_name(kind: str, name: object) -> None:
    if not isinstance(name, str) or not name:
        raise SpecError(f"{kind}: name must be a non-empty string (got {name!r})")
    if "/" in name:
        raise SpecError(
            f"{kind} {name!r}: name must not contain '/', which separates path parts;"
            " nest a SupervisorSpec to build a path"
        )


@final
@attrs.frozen
class Backoff:
    """Exponential backoff with jitter between consecutive restarts of one child.

    The n-th consecutive restart waits ``min(maximum, initial * factor**(n-1))`` seconds,
    stretched by a random factor in ``[1, 1 + jitter]``. A child that ran ``reset_after``
    seconds without exiting starts again at n = 1.

    Args:
      initial: the first delay, in seconds.
      maximum: the cap on the un-jittered delay.
      factor: growth per consecutive restart (>= 1).
      jitter: the random stretch, in [0, 1]; spreads restarts of many children apart.
      reset_after: seconds of clean running after which the count starts over.

    Raises:
      SpecError: for negative or NaN times, ``initial > maximum``, ``factor < 1`` or
        ``jitter`` outside [0, 1].
    """

    initial: float = 0.1
    maximum: float = 30.0
    factor: float = 2.0
    jitter: float = 0.1
    reset_after: float = 60.0

    def __attrs_post_init__(self) -> None:
        for field in ("initial", "maximum", "reset_after"):
            _checks.number("Backoff", field, getattr(self, field), at_least=0, error=SpecError)
        if self.initial > self.maximum:
            raise SpecError(
                f"Backoff: initial must be <= maximum (got initial={self.initial!r},"
                f" maximum={self.maximum!r}); raise maximum or lower initial"
            )
        _checks.number("Backoff", "factor", self.factor, at_least=1, finite=True, error=SpecError)
        _checks.number("Backoff", "jitter", self.jitter, at_least=0, at_most=1, error=SpecError)

    def base_delay(self, attempt: int) -> float:
        """The un-jittered delay before the ``attempt``-th consecutive restart (1-based)."""
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1 (got {attempt})")
        if self.initial == 0:
            return 0.0
        # factor**n overflows (OverflowError) past the float range; any growth that large is
        # past every finite maximum. initial * factor**n may still be inf, which min() caps.
        if (attempt - 1) * math.log(self.factor) > _LOG_FLOAT_MAX:
            return self.maximum
        return min(self.maximum, self.initial * self.factor ** (attempt - 1))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The delay before the ``attempt``-th consecutive restart, with jitter from ``rng``."""
        base = self.base_delay(attempt)
        if self.jitter == 0 or base == 0:
            return base
        return base * (1 + self.jitter * (rng or random).random())


@final
@attrs.frozen
class HealthCheck:
    """A periodic health probe for one child.

    The probe runs every ``interval`` seconds while the child runs. A probe that raises,
    returns ``False`` or ``HealthStatus.UNHEALTHY``, or takes longer than ``timeout`` is a
    failure; ``threshold`` consecutive failures restart the child like a crash (counted in
    the supervisor's restart intensity). ``HealthStatus.DEGRADED`` is reported but is not a
    failure.

    Args:
      check: an async function with no arguments. ``None`` only for a service child
        (``ChildSpec.service``), whose ``check_health()`` method is used.
      interval: seconds between the end of one probe and the start of the next (> 0).
      timeout: seconds a probe may take (> 0).
      threshold: consecutive failures that restart the child (>= 1).
    """

    check: HealthProbe | None = None
    interval: float = 10.0
    timeout: float = 2.0
    threshold: int = 3

    def __attrs_post_init__(self) -> None:
        if self.check is not None:
            _checks.async_function("HealthCheck", "check", self.check, error=SpecError)
        for field in ("interval", "timeout"):
            _checks.number("HealthCheck", field, getattr(self, field), above=0, error=SpecError)
        _checks.integer("HealthCheck", "threshold", self.threshold, at_least=1, error=SpecError)


@final
@attrs.frozen
class ServiceTarget:
    """The target of a ``ChildSpec.service`` child: builds a fresh service object per start.

    Not called directly: the supervisor calls ``factory()``, then the object's ``run()``,
    and asks its ``stop()`` first when stopping it.
    """

    factory: Callable[[], Any]

    async def __call__(self, task_status: Any = None) -> None:  # pragma: no cover
        raise TypeError("a ServiceTarget is run by its supervisor, not called")


@final
@attrs.frozen
class SingletonTarget:
    """The target of a ``ChildSpec.singleton`` child: ``fn`` runs only while ``lock`` is held.

    Not called directly: its supervisor waits for the lock, then calls ``fn``.
    """

    lock: Lock
    fn: AsyncFunction
    takes_task_status: bool

    async def __call__(self, task_status: Any = None) -> None:  # pragma: no cover
        raise TypeError("a SingletonTarget is run by its supervisor, not called")


def _check_lock(name: str, lock: object) -> None:
    if not all(callable(getattr(lock, method, None)) for method in ("hold", "holder")):
        raise SpecError(
            f"ChildSpec {name!r}: lock must be a lock shared by the replicas, with hold() and"
            f" holder() (got {lock!r}); use integrations.locks.PostgresLock or EtcdLock"
        )


def _check_service_factory(name: str, factory: object) -> None:
    owner = f"ChildSpec {name!r}"
    if inspect.iscoroutinefunction(factory) or inspect.iscoroutine(factory):
        if inspect.iscoroutine(factory):
            factory.close()
        raise SpecError(
            f"{owner}: factory must be a plain callable that returns a fresh service object"
            f" (got {_describe(factory)}); pass the class or a sync function"
        )
    if not callable(factory):
        raise SpecError(f"{owner}: factory must be callable (got {factory!r})")
    if inspect.isclass(factory):
        check_service_class(owner, factory)


def check_service_class(owner: str, cls: type) -> None:
    """Check that a service object's class has ``async run()`` and async optional methods."""
    run = getattr(cls, "run", None)
    if run is None or not inspect.iscoroutinefunction(run):
        raise SpecError(
            f"{owner}: service {cls.__qualname__!r} must define"
            " 'async def run(self, task_status=trio.TASK_STATUS_IGNORED)'"
        )
    for method in ("stop", "check_health"):
        fn = getattr(cls, method, None)
        if fn is not None and not inspect.iscoroutinefunction(fn):
            raise SpecError(
                f"{owner}: service {cls.__qualname__!r} method {method!r} must be async"
            )


@final
@attrs.frozen
class ChildSpec:
    """How to start and treat one worker child.

    Args:
      name: unique among siblings, non-empty, without "/".
      target: an async function, called anew with ``*args`` on every (re)start. If it takes
        a ``task_status`` parameter it is started with ``nursery.start`` semantics: its next
        sibling starts only after it called ``task_status.started()``.
      args: positional arguments for ``target``.
      restart: when the child is restarted (see ``Restart``).
      shutdown_timeout: how long a stop may take (seconds). ``0`` cancels at once without
        asking (OTP's ``brutal_kill``); ``None`` waits without a limit.
      health: an optional periodic probe.
      significant: whether this child's exit counts for its supervisor's ``auto_shutdown``.

    Raises:
      SpecError: for a bad name, a target that is not an async function, negative or NaN
        times, or ``significant=True`` on a ``PERMANENT`` child.

    Example::

        ChildSpec("scanner", scan, ("/srv",), restart=Restart.TRANSIENT)
    """

    name: str
    target: AsyncFunction
    args: tuple[Any, ...] = ()
    restart: Restart = attrs.field(default=Restart.PERMANENT, kw_only=True)
    shutdown_timeout: float | None = attrs.field(default=5.0, kw_only=True)
    health: HealthCheck | None = attrs.field(default=None, kw_only=True)
    significant: bool = attrs.field(default=False, kw_only=True)
    # Derived once here so that every (re)start does not inspect the signature again.
    takes_task_status: bool = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        _check_name("ChildSpec", self.name)
        owner = f"ChildSpec {self.name!r}"
        if not isinstance(self.target, ServiceTarget | ProcessTarget | SingletonTarget):
            _checks.async_function(owner, "target", self.target, error=SpecError)
        if not isinstance(self.args, tuple):
            raise SpecError(f"{owner}: args must be a tuple (got {self.args!r})")
        if not isinstance(self.restart, Restart):
            raise SpecError(f"{owner}: restart must be a Restart (got {self.restart!r})")
        _checks.number(
            owner, "shutdown_timeout", self.shutdown_timeout, at_least=0, none=True, error=SpecError
        )
        if self.health is not None and not isinstance(self.health, HealthCheck):
            raise SpecError(f"{owner}: health must be a HealthCheck or None (got {self.health!r})")
        if self.health is not None and self.health.check is None and not self.is_service:
            raise SpecError(
                f"{owner}: health has no check; give HealthCheck(check=...) or use"
                " ChildSpec.service with a check_health() method"
            )
        _check_significant(owner, self.significant, self.restart)
        takes = isinstance(
            self.target, ServiceTarget | ProcessTarget | SingletonTarget
        ) or _takes_task_status(self.target)
        object.__setattr__(self, "takes_task_status", takes)

    @property
    def is_service(self) -> bool:
        """True for a child built by ``ChildSpec.service``."""
        return isinstance(self.target, ServiceTarget)

    @property
    def is_process(self) -> bool:
        """True for a child built by ``ChildSpec.process``."""
        return isinstance(self.target, ProcessTarget)

    @property
    def is_singleton(self) -> bool:
        """True for a child built by ``ChildSpec.singleton``."""
        return isinstance(self.target, SingletonTarget)

    @classmethod
    def singleton(
        cls,
        name: str,
        target: AsyncFunction,
        args: tuple[Any, ...] = (),
        *,
        lock: Lock,
        restart: Restart = Restart.PERMANENT,
        shutdown_timeout: float | None = 5.0,
    ) -> ChildSpec:
        """A child that runs on one replica at a time: only while this replica holds ``lock``.

        Until it holds the lock it waits in state ``STARTING``: not active, not a crash, not
        a restart, and healthy (waiting is its job on every replica but one). For ordering
        it has started once it waits, so its later siblings and the tree's body do not wait
        for the lock. Once held, ``target(*args)`` runs and the child is ``RUNNING`` (for a
        target that takes ``task_status``, once it called ``started()``). If the lock is
        lost, the target is cancelled at once and the child waits again, in ``STARTING``.
        When the target exits, the lock is released (a stop hands the work over at once)
        and ``restart`` applies as for any child. ``ChildInfo.lock_holder`` names the
        replica holding the lock, ``"<host name>:<pid>"``; events ``LOCK_ACQUIRED`` and
        ``LOCK_LOST`` mark the changes.

        Raises:
          SpecError: as for ``ChildSpec``, and for a ``lock`` without ``hold()`` and
            ``holder()``.
        """
        _check_name("ChildSpec", name)
        _checks.async_function(f"ChildSpec {name!r}", "target", target, error=SpecError)
        _check_lock(name, lock)
        return cls(
            name,
            SingletonTarget(lock, target, _takes_task_status(target)),
            args,
            restart=restart,
            shutdown_timeout=shutdown_timeout,
        )

    @classmethod
    def process(
        cls,
        name: str,
        command: Sequence[str],
        *,
        restart: Restart = Restart.PERMANENT,
        shutdown_timeout: float = 10.0,
        stop_signal: int = signal.SIGTERM,
        ready: Ready | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        pass_fds: Sequence[int] = (),
        health: HealthCheck | None = None,
        significant: bool = False,
    ) -> ChildSpec:
        """A child that runs ``command`` (argv, no shell) as an OS process, anew on every start.

        Each run is a fresh process in a process group of its own, with ``TRIO_SUPERVISE_PATH``
        and ``TRIO_SUPERVISE_RESTARTS`` (and ``env``) added to the supervisor's environment. It
        has started once spawned, or when ``ready`` holds. Exit status 0 is a clean exit; any
        other status, or a signal its supervisor did not send, is a crash (``ProcessExited``).
        To stop it, ``stop_signal`` goes to its process group, and SIGKILL after
        ``shutdown_timeout`` (at once for 0). Its output is logged through
        ``trio_supervise.process`` and its last 100 lines kept.

        Raises:
          SpecError: as for ``ChildSpec``, and for an empty command, a program not found on
            PATH, a bad ``env``, ``cwd``, ``pass_fds``, ``stop_signal`` or ``ready``.
        """
        _check_name("ChildSpec", name)
        target = process_target(
            name,
            command,
            stop_signal=stop_signal,
            ready=ready,
            env=env,
            cwd=cwd,
            pass_fds=pass_fds,
        )
        if shutdown_timeout is None:
            raise SpecError(
                f"ChildSpec {name!r}: a process child needs a finite shutdown_timeout (got"
                " None): a process can always be killed, so give it the time it may take"
            )
        if health is not None and isinstance(health, HealthCheck) and health.check is None:
            raise SpecError(
                f"ChildSpec {name!r}: health has no check; give HealthCheck(check=...), or"
                " Ready.notify(watchdog=...) for a process that sends WATCHDOG=1"
            )
        return cls(
            name,
            target,
            restart=restart,
            shutdown_timeout=shutdown_timeout,
            health=health,
            significant=significant,
        )

    @classmethod
    def service(
        cls,
        name: str,
        factory: Callable[[], Any],
        *,
        restart: Restart = Restart.PERMANENT,
        shutdown_timeout: float | None = 5.0,
        health: HealthCheck | None = None,
        significant: bool = False,
    ) -> ChildSpec:
        """A child built from a service object with ``run()`` and optional ``stop()``.

        ``factory()`` is called on every (re)start, so each run starts from a clean object.
        The object has ``async def run(self, task_status=trio.TASK_STATUS_IGNORED)``, and
        optionally ``async def stop(self)`` (awaited first when the child is stopped; then
        ``run()`` has the rest of ``shutdown_timeout`` to return before it is cancelled) and
        ``async def check_health(self) -> bool | HealthStatus`` (the probe when ``health``
        has no ``check``).

        Raises:
          SpecError: as for ``ChildSpec``, and when ``factory`` is async or, for a class,
            when it lacks an async ``run``.
        """
        _check_name("ChildSpec", name)
        _check_service_factory(name, factory)
        return cls(
            name,
            ServiceTarget(factory),
            restart=restart,
            shutdown_timeout=shutdown_timeout,
            health=health,
            significant=significant,
        )


def _check_significant(owner: str, significant: object, restart: Restart) -> None:
    _checks.boolean(owner, "significant", significant, error=SpecError)
    if significant and restart is Restart.PERMANENT:
        raise SpecError(
            f"{owner}: significant=True needs restart=TRANSIENT or TEMPORARY, because a"
            " PERMANENT child is always restarted and so never ends its supervisor"
        )


def _children_tuple(
    children: Iterable[ChildSpec | SupervisorSpec],
) -> tuple[ChildSpec | SupervisorSpec, ...]:
    return tuple(children)


@final
@attrs.frozen
class SupervisorSpec:
    """A supervisor: a nursery of children with a restart strategy and intensity.

    Args:
      name: the supervisor's name; the root's name is shown by ``render()`` only, as the
        root's path is ``""``.
      children: ``ChildSpec`` and nested ``SupervisorSpec`` values, started in this order.
      strategy: see ``Strategy``.
      max_restarts: at most this many restarts ...
      max_seconds: ... within any window of this many seconds; one more and the supervisor
        stops all its children and exits with ``RestartIntensityExceeded``.
      backoff: delays between consecutive restarts of a child; ``None`` restarts at once.
      restart: how this supervisor's parent treats it.
      auto_shutdown: whether the supervisor stops by itself once its significant children
        have exited (see ``AutoShutdown``).
      max_children: most children (static and dynamic) held at once; ``None`` for no limit.
      shutdown_timeout: how long the parent waits for this supervisor to stop; ``None``
        (the default) waits without a limit, as its own children carry the limits.
      significant: whether this supervisor's exit counts for its parent's ``auto_shutdown``.
      concurrent_stop: ``True`` for a pool of like children (OTP's ``simple_one_for_one``,
        Elixir's ``DynamicSupervisor``): its children are asked to stop all at once and
        waited for together, each still bounded by its own ``shutdown_timeout``. ``False``
        (the default) stops them one at a time in reverse start order.

    Raises:
      SpecError: for empty or duplicate child names, ``max_restarts < 0``,
        ``max_seconds <= 0`` or not finite, significant children under ``AutoShutdown.NEVER``, more
        static children than ``max_children``, and bad values of the fields above.
    """

    name: str
    children: Sequence[ChildSpec | SupervisorSpec] = attrs.field(
        default=(), converter=_children_tuple
    )
    strategy: Strategy = attrs.field(default=Strategy.ONE_FOR_ONE, kw_only=True)
    max_restarts: int = attrs.field(default=3, kw_only=True)
    max_seconds: float = attrs.field(default=5.0, kw_only=True)
    backoff: Backoff | None = attrs.field(factory=Backoff, kw_only=True)
    restart: Restart = attrs.field(default=Restart.PERMANENT, kw_only=True)
    auto_shutdown: AutoShutdown = attrs.field(default=AutoShutdown.NEVER, kw_only=True)
    max_children: int | None = attrs.field(default=None, kw_only=True)
    shutdown_timeout: float | None = attrs.field(default=None, kw_only=True)
    significant: bool = attrs.field(default=False, kw_only=True)
    concurrent_stop: bool = attrs.field(default=False, kw_only=True)

    def __attrs_post_init__(self) -> None:
        _check_name("SupervisorSpec", self.name)
        owner = f"SupervisorSpec {self.name!r}"
        if not isinstance(self.strategy, Strategy):
            raise SpecError(f"{owner}: strategy must be a Strategy (got {self.strategy!r})")
        if not isinstance(self.restart, Restart):
            raise SpecError(f"{owner}: restart must be a Restart (got {self.restart!r})")
        if not isinstance(self.auto_shutdown, AutoShutdown):
            raise SpecError(
                f"{owner}: auto_shutdown must be an AutoShutdown (got {self.auto_shutdown!r})"
            )
        _checks.integer(owner, "max_restarts", self.max_restarts, at_least=0, error=SpecError)
        # OTP refuses an infinite period too: a window that never ends is no intensity.
        _checks.number(
            owner, "max_seconds", self.max_seconds, above=0, finite=True, error=SpecError
        )
        if self.backoff is not None and not isinstance(self.backoff, Backoff):
            raise SpecError(f"{owner}: backoff must be a Backoff or None (got {self.backoff!r})")
        _checks.number(
            owner, "shutdown_timeout", self.shutdown_timeout, at_least=0, none=True, error=SpecError
        )
        _check_significant(owner, self.significant, self.restart)
        _checks.boolean(owner, "concurrent_stop", self.concurrent_stop, error=SpecError)
        _checks.integer(
            owner, "max_children", self.max_children, at_least=0, none=True, error=SpecError
        )
        if self.max_children is not None and self.max_children < len(self.children):
            raise SpecError(
                f"{owner}: max_children={self.max_children} is less than its"
                f" {len(self.children)} static children; raise max_children"
            )
        seen: set[str] = set()
        for child in self.children:
            if not isinstance(child, ChildSpec | SupervisorSpec):
                raise SpecError(
                    f"{owner}: children must be ChildSpec or SupervisorSpec values (got {child!r})"
                )
            if child.name in seen:
                raise SpecError(
                    f"{owner}: duplicate child name {child.name!r}; sibling names must be unique"
                )
            seen.add(child.name)
            if child.significant and self.auto_shutdown is AutoShutdown.NEVER:
                raise SpecError(
                    f"{owner}: child {child.name!r} is significant but auto_shutdown is NEVER;"
                    " set auto_shutdown=ANY_SIGNIFICANT or ALL_SIGNIFICANT, or drop significant"
                )
