"""Fake children: targets with a known, deterministic behaviour in virtual time."""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from typing import Any, final

import attrs
import trio

from .._spec import HealthStatus

Target = Callable[..., Awaitable[None]]


class FakeCrash(Exception):
    """What the fake children raise unless told otherwise."""


def _error(error: BaseException | None, what: str) -> BaseException:
    return error if error is not None else FakeCrash(what)


def sleeper() -> Target:
    """A child that runs until it is cancelled."""

    async def sleep_forever() -> None:
        await trio.sleep_forever()

    return sleep_forever


def crash_after(
    seconds: float, error: BaseException | None = None, *, starts: int | None = None
) -> Target:
    """A child that raises ``seconds`` after each start.

    Args:
      seconds: how long each run lasts before it raises.
      error: the exception to raise (default: ``FakeCrash("crashed after …s")``).
      starts: only the first ``starts`` runs crash; later runs run forever.
    """
    runs = 0

    async def crash() -> None:
        nonlocal runs
        runs += 1
        if starts is not None and runs > starts:
            await trio.sleep_forever()
        await trio.sleep(seconds)
        raise _error(error, f"crashed after {seconds:g}s (run {runs})")

    return crash


def return_after(seconds: float) -> Target:
    """A child that returns cleanly ``seconds`` after each start."""

    async def finish() -> None:
        await trio.sleep(seconds)

    return finish


def flaky(
    probability: float,
    *,
    interval: float = 1.0,
    seed: int = 0,
    error: BaseException | None = None,
) -> Target:
    """A child that, every ``interval`` seconds, crashes with ``probability``.

    The draws come from ``random.Random(seed)``, shared across restarts, so a run of a
    test is the same every time.
    """
    if not 0 <= probability <= 1:
        raise ValueError(f"probability must be within [0, 1] (got {probability!r})")
    rng = random.Random(seed)

    async def maybe_crash() -> None:
        while True:
            await trio.sleep(interval)
            if rng.random() < probability:
                raise _error(error, f"flaky crash (p={probability:g}, seed={seed})")

    return maybe_crash


def slow_start(seconds: float, *, then: Target | None = None) -> Target:
    """A ``task_status`` child that takes ``seconds`` to start, then runs ``then`` (or sleeps)."""

    async def start_slowly(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(seconds)
        task_status.started()
        if then is not None:
            await then()
        else:
            await trio.sleep_forever()

    return start_slowly


def fail_start(seconds: float = 0.0, error: BaseException | None = None) -> Target:
    """A ``task_status`` child that raises ``seconds`` into its start, before ``started()``."""

    async def start_and_fail(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.sleep(seconds)
        raise _error(error, f"failed to start after {seconds:g}s")

    return start_and_fail


def slow_stop(seconds: float) -> Target:
    """A child that, once cancelled, needs ``seconds`` of shielded clean-up before it exits."""

    async def stop_slowly() -> None:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(seconds)

    return stop_slowly


def refuse_stop(seconds: float = math.inf) -> Target:
    """A child that shields itself: it ignores cancellation for ``seconds`` (default: ever).

    With the default it never stops; use it only where something (a deadline, a hard exit)
    is expected to deal with it.
    """
    return slow_stop(seconds)


@final
@attrs.define(eq=False)
class FakeService:
    """A service object for ``ChildSpec.service`` with a scripted ``stop()`` and health.

    Args:
      stop_takes: seconds ``stop()`` takes before it returns.
      exits_after_stop: seconds ``run()`` keeps running after ``stop()`` returned; ``None``
        means it never returns by itself (it has to be cancelled).
      start_takes: seconds before ``run()`` calls ``task_status.started()``.
      health: what ``check_health()`` answers (a value, or a callable giving one).

    Attributes:
      calls: the methods called on this object, in order (``"run"``, ``"started"``,
        ``"stop"``, ``"stopped"``, ``"cancelled"``, ``"check_health"``).
    """

    stop_takes: float = 0.0
    exits_after_stop: float | None = 0.0
    start_takes: float = 0.0
    health: bool | HealthStatus | Callable[[], bool | HealthStatus] = True
    calls: list[str] = attrs.field(factory=list)
    _stop_asked: trio.Event = attrs.field(factory=trio.Event)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.calls.append("run")
        try:
            await trio.sleep(self.start_takes)
            task_status.started()
            self.calls.append("started")
            await self._stop_asked.wait()
            if self.exits_after_stop is None:
                await trio.sleep_forever()
            await trio.sleep(self.exits_after_stop)
            self.calls.append("stopped")
        except trio.Cancelled:
            self.calls.append("cancelled")
            raise

    async def stop(self) -> None:
        self.calls.append("stop")
        await trio.sleep(self.stop_takes)
        self._stop_asked.set()

    async def check_health(self) -> bool | HealthStatus:
        self.calls.append("check_health")
        health = self.health
        return health() if callable(health) else health


@final
class ServiceFactory:
    """A factory for ``ChildSpec.service`` that keeps every ``FakeService`` it made.

    Example::

        factory = ServiceFactory(stop_takes=1.0)
        spec = ChildSpec.service("svc", factory)
        ...
        assert factory.made[-1].calls == ["run", "started", "stop", "stopped"]
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        #: The services made so far, oldest first.
        self.made: list[FakeService] = []

    def __call__(self) -> FakeService:
        service = FakeService(**self._options)
        self.made.append(service)
        return service
