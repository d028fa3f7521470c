"""Tests for ``trio_supervise._spec``: spec validation, defaults, immutability and backoff."""

from __future__ import annotations

import functools
import gc
import inspect
import math
import random
import re
import weakref
from typing import Any, cast

import attrs
import pytest
import trio
import trio.lowlevel

from trio_supervise import (
    AutoShutdown,
    Backoff,
    ChildSpec,
    HealthCheck,
    HealthStatus,
    Restart,
    SpecError,
    Strategy,
    SupervisorSpec,
)

# --------------------------------------------------------------- helpers


async def worker() -> None:
    await trio.sleep_forever()


async def startable(
    x: int = 0, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    task_status.started()


async def probe() -> bool:
    return True


def sync_worker() -> None:
    return None


def bad(value: object) -> Any:
    """Pass a deliberately ill-typed value to a spec without a type: ignore."""
    return cast(Any, value)


class AsyncCallable:
    async def __call__(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()


class PlainAsyncCallable:
    async def __call__(self) -> None:
        await trio.lowlevel.checkpoint()


class SyncCallable:
    def __call__(self) -> None:
        return None


class Methods:
    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    async def plain(self) -> None:
        await trio.lowlevel.checkpoint()

    def sync(self) -> None:
        return None


class Service:
    def __init__(self) -> None:
        self.stopped = False

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    async def stop(self) -> None:
        self.stopped = True

    async def check_health(self) -> HealthStatus:
        return HealthStatus.HEALTHY


class ServiceWithoutRun:
    async def stop(self) -> None:
        return None


class ServiceWithSyncRun:
    def run(self) -> None:
        return None


class ServiceWithSyncStop:
    async def run(self) -> None:
        return None

    def stop(self) -> None:
        return None


class ServiceWithSyncCheckHealth:
    async def run(self) -> None:
        return None

    def check_health(self) -> bool:
        return True


def make_service() -> Service:
    return Service()


async def async_factory() -> Service:
    return Service()


def spec_error(message: str) -> Any:
    """``pytest.raises(SpecError)`` with the whole message matched literally."""
    return pytest.raises(SpecError, match=rf"^{re.escape(message)}$")


# --------------------------------------------------------------- defaults


def test_childspec_defaults() -> None:
    spec = ChildSpec("w", worker)
    assert spec.name == "w"
    assert spec.target is worker
    assert spec.args == ()
    assert spec.restart is Restart.PERMANENT
    assert spec.shutdown_timeout == 5.0
    assert spec.health is None
    assert spec.significant is False
    assert spec.is_service is False
    assert spec.takes_task_status is False


def test_childspec_all_fields() -> None:
    health = HealthCheck(probe, interval=1.0, timeout=0.5, threshold=2)
    spec = ChildSpec(
        "w",
        startable,
        (1,),
        restart=Restart.TRANSIENT,
        shutdown_timeout=None,
        health=health,
        significant=True,
    )
    assert spec.args == (1,)
    assert spec.restart is Restart.TRANSIENT
    assert spec.shutdown_timeout is None
    assert spec.health is health
    assert spec.significant is True
    assert spec.takes_task_status is True


def test_childspec_zero_shutdown_timeout_is_allowed() -> None:
    assert ChildSpec("w", worker, shutdown_timeout=0).shutdown_timeout == 0


def test_childspec_infinite_shutdown_timeout_is_allowed() -> None:
    assert ChildSpec("w", worker, shutdown_timeout=math.inf).shutdown_timeout == math.inf


@pytest.mark.parametrize("restart", [Restart.TRANSIENT, Restart.TEMPORARY])
def test_significant_allowed_for_non_permanent_child(restart: Restart) -> None:
    spec = ChildSpec("w", worker, restart=restart, significant=True)
    assert spec.significant is True
    sup = SupervisorSpec("root", [spec], auto_shutdown=AutoShutdown.ANY_SIGNIFICANT)
    assert sup.children == (spec,)


def test_supervisorspec_defaults() -> None:
    spec = SupervisorSpec("root")
    assert spec.name == "root"
    assert spec.children == ()
    assert spec.strategy is Strategy.ONE_FOR_ONE
    assert spec.max_restarts == 3
    assert spec.max_seconds == 5.0
    assert spec.backoff == Backoff()
    assert spec.restart is Restart.PERMANENT
    assert spec.auto_shutdown is AutoShutdown.NEVER
    assert spec.max_children is None


def test_supervisorspec_all_fields() -> None:
    a = ChildSpec("a", worker)
    b = ChildSpec("b", worker, restart=Restart.TEMPORARY, significant=True)
    inner = SupervisorSpec("inner", [ChildSpec("a", worker)])
    spec = SupervisorSpec(
        "root",
        [a, b, inner],
        strategy=Strategy.REST_FOR_ONE,
        max_restarts=0,
        max_seconds=0.5,
        backoff=None,
        restart=Restart.TRANSIENT,
        auto_shutdown=AutoShutdown.ALL_SIGNIFICANT,
        max_children=3,
    )
    assert spec.children == (a, b, inner)
    assert spec.strategy is Strategy.REST_FOR_ONE
    assert spec.max_restarts == 0
    assert spec.max_seconds == 0.5
    assert spec.backoff is None
    assert spec.restart is Restart.TRANSIENT
    assert spec.auto_shutdown is AutoShutdown.ALL_SIGNIFICANT
    assert spec.max_children == 3


def test_same_name_allowed_in_different_supervisors() -> None:
    inner = SupervisorSpec("inner", [ChildSpec("x", worker)])
    spec = SupervisorSpec("root", [ChildSpec("x", worker), inner])
    assert [child.name for child in spec.children] == ["x", "inner"]


def test_supervisorspec_children_list_is_frozen_to_tuple() -> None:
    a = ChildSpec("a", worker)
    children = [a]
    spec = SupervisorSpec("root", children)
    children.append(ChildSpec("b", worker))
    assert spec.children == (a,)
    assert spec == SupervisorSpec("root", (a,))


def test_backoff_defaults() -> None:
    backoff = Backoff()
    assert backoff.initial == 0.1
    assert backoff.maximum == 30.0
    assert backoff.factor == 2.0
    assert backoff.jitter == 0.1
    assert backoff.reset_after == 60.0


@pytest.mark.parametrize("jitter", [0.0, 1.0])
def test_backoff_jitter_bounds_are_inclusive(jitter: float) -> None:
    assert Backoff(jitter=jitter).jitter == jitter


def test_backoff_initial_equal_to_maximum_and_factor_one_allowed() -> None:
    backoff = Backoff(initial=2.0, maximum=2.0, factor=1.0)
    assert (backoff.initial, backoff.maximum, backoff.factor) == (2.0, 2.0, 1.0)


def test_healthcheck_defaults() -> None:
    check = HealthCheck(probe)
    assert check.check is probe
    assert check.interval == 10.0
    assert check.timeout == 2.0
    assert check.threshold == 3


def test_healthcheck_threshold_one_allowed() -> None:
    assert HealthCheck(probe, threshold=1).threshold == 1


# --------------------------------------------------------------- immutability, equality


def test_specs_are_frozen() -> None:
    child = ChildSpec("w", worker)
    sup = SupervisorSpec("root", [child])
    backoff = Backoff()
    check = HealthCheck(probe)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        child.name = "other"  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        sup.max_restarts = 10  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        backoff.initial = 1.0  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        check.threshold = 1  # type: ignore[misc]
    assert child.name == "w"
    assert sup.max_restarts == 3
    assert backoff.initial == 0.1
    assert check.threshold == 3


def test_specs_compare_by_value() -> None:
    assert ChildSpec("w", worker, (1,)) == ChildSpec("w", worker, (1,))
    assert ChildSpec("w", worker) != ChildSpec("w", worker, restart=Restart.TEMPORARY)
    assert ChildSpec("w", worker) != ChildSpec("v", worker)
    assert SupervisorSpec("r", [ChildSpec("w", worker)]) == SupervisorSpec(
        "r", [ChildSpec("w", worker)]
    )
    assert SupervisorSpec("r") != SupervisorSpec("r", max_restarts=4)
    assert Backoff() == Backoff(0.1, 30.0, 2.0, 0.1, 60.0)
    assert Backoff() != Backoff(jitter=0)
    assert HealthCheck(probe) == HealthCheck(probe, interval=10.0)


def test_specs_are_hashable() -> None:
    child = ChildSpec("w", worker, (1, "x"))
    assert hash(child) == hash(ChildSpec("w", worker, (1, "x")))
    assert hash(SupervisorSpec("r", [child])) == hash(SupervisorSpec("r", (child,)))
    assert len({Backoff(), Backoff(), Backoff(jitter=0)}) == 2


def test_evolve_revalidates() -> None:
    spec = ChildSpec("db", worker)
    assert attrs.evolve(spec, shutdown_timeout=1.0).shutdown_timeout == 1.0
    with spec_error("ChildSpec 'db': shutdown_timeout must be >= 0 or None (got -1)"):
        attrs.evolve(spec, shutdown_timeout=-1)


# --------------------------------------------------------------- names


def test_empty_childspec_name_rejected() -> None:
    with spec_error("ChildSpec: name must be a non-empty string (got '')"):
        ChildSpec("", worker)


def test_empty_supervisorspec_name_rejected() -> None:
    with spec_error("SupervisorSpec: name must be a non-empty string (got '')"):
        SupervisorSpec("")


def test_non_string_name_rejected() -> None:
    with spec_error("ChildSpec: name must be a non-empty string (got 3)"):
        ChildSpec(bad(3), worker)


def test_slash_in_childspec_name_rejected() -> None:
    with spec_error(
        "ChildSpec 'db/pool': name must not contain '/', which separates path parts;"
        " nest a SupervisorSpec to build a path"
    ):
        ChildSpec("db/pool", worker)


def test_slash_in_supervisorspec_name_rejected() -> None:
    with spec_error(
        "SupervisorSpec 'a/': name must not contain '/', which separates path parts;"
        " nest a SupervisorSpec to build a path"
    ):
        SupervisorSpec("a/")


def test_duplicate_child_names_rejected() -> None:
    with spec_error(
        "SupervisorSpec 'root': duplicate child name 'a'; sibling names must be unique"
    ):
        SupervisorSpec(
            "root", [ChildSpec("a", worker), ChildSpec("b", worker), ChildSpec("a", worker)]
        )


def test_duplicate_name_between_worker_and_supervisor_rejected() -> None:
    with spec_error(
        "SupervisorSpec 'root': duplicate child name 'a'; sibling names must be unique"
    ):
        SupervisorSpec("root", [ChildSpec("a", worker), SupervisorSpec("a")])


def test_non_spec_child_rejected() -> None:
    with spec_error(
        "SupervisorSpec 'root': children must be ChildSpec or SupervisorSpec values (got 'a')"
    ):
        SupervisorSpec("root", bad(["a"]))


# --------------------------------------------------------------- targets


def test_sync_function_target_rejected() -> None:
    with spec_error(
        "ChildSpec 'w': target must be an async function (async def) that is called anew"
        " on every start (got function 'sync_worker'); write it with 'async def'"
    ):
        ChildSpec("w", bad(sync_worker))


def test_sync_method_target_rejected() -> None:
    with spec_error(
        "ChildSpec 'w': target must be an async function (async def) that is called anew"
        " on every start (got method 'Methods.sync'); write it with 'async def'"
    ):
        ChildSpec("w", bad(Methods().sync))


def test_sync_callable_object_target_rejected() -> None:
    with spec_error(
        "ChildSpec 'w': target must be an async function (async def) that is called anew"
        " on every start (got SyncCallable 'SyncCallable'); write it with 'async def'"
    ):
        ChildSpec("w", bad(SyncCallable()))


def test_class_target_rejected() -> None:
    # A class with an async run() is a service: it has to go through ChildSpec.service.
    with spec_error(
        "ChildSpec 'w': target must be an async function (async def) that is called anew"
        " on every start (got type 'Service'); write it with 'async def'"
    ):
        ChildSpec("w", bad(Service))


def test_non_callable_target_rejected() -> None:
    with spec_error(
        "ChildSpec 'w': target must be an async function (async def) that is called anew"
        " on every start (got int 'int'); write it with 'async def'"
    ):
        ChildSpec("w", bad(42))


def test_coroutine_object_target_rejected_and_closed() -> None:
    # pytest runs with filterwarnings=error: a "coroutine ... was never awaited"
    # RuntimeWarning leaking from the rejected coroutine would fail this test.
    coro = worker()
    with pytest.raises(
        SpecError,
        match=(
            r"^ChildSpec 'w': target must be an async function, not a coroutine object"
            r" \(got <coroutine object worker at 0x[0-9a-f]+>\); pass the function itself,"
            r" e\.g\. target=worker, not worker\(\)$"
        ),
    ):
        ChildSpec("w", bad(coro))
    assert inspect.getcoroutinestate(coro) == "CORO_CLOSED"  # closed, so it can never warn


def test_coroutine_object_healthcheck_rejected_and_closed() -> None:
    coro = probe()
    with pytest.raises(
        SpecError,
        match=(
            r"^HealthCheck: check must be an async function, not a coroutine object"
            r" \(got <coroutine object probe at 0x[0-9a-f]+>\); pass the function itself,"
            r" e\.g\. check=worker, not worker\(\)$"
        ),
    ):
        HealthCheck(bad(coro))
    assert inspect.getcoroutinestate(coro) == "CORO_CLOSED"


def test_sync_healthcheck_rejected() -> None:
    with spec_error(
        "HealthCheck: check must be an async function (async def) that is called anew"
        " on every start (got function 'sync_worker'); write it with 'async def'"
    ):
        HealthCheck(bad(sync_worker))


def test_health_without_check_rejected_for_plain_child() -> None:
    with spec_error(
        "ChildSpec 'w': health has no check; give HealthCheck(check=...) or use"
        " ChildSpec.service with a check_health() method"
    ):
        ChildSpec("w", worker, health=HealthCheck())


def test_args_must_be_tuple() -> None:
    with spec_error("ChildSpec 'w': args must be a tuple (got [1])"):
        ChildSpec("w", worker, bad([1]))


# --------------------------------------------------------------- takes_task_status


def test_takes_task_status_plain_function() -> None:
    assert ChildSpec("w", worker).takes_task_status is False


def test_takes_task_status_function_with_task_status() -> None:
    assert ChildSpec("w", startable).takes_task_status is True


def test_takes_task_status_partial() -> None:
    partial = functools.partial(startable, 1)
    spec = ChildSpec("w", partial)
    assert spec.target is partial
    assert spec.takes_task_status is True
    assert ChildSpec("w", functools.partial(worker)).takes_task_status is False


def test_takes_task_status_async_callable_object() -> None:
    assert ChildSpec("w", AsyncCallable()).takes_task_status is True
    assert ChildSpec("w", PlainAsyncCallable()).takes_task_status is False


def test_takes_task_status_bound_method() -> None:
    obj = Methods()
    assert ChildSpec("w", obj.run).takes_task_status is True
    assert ChildSpec("w", obj.plain).takes_task_status is False


def test_takes_task_status_not_part_of_equality_or_init() -> None:
    assert "takes_task_status" not in {f.name for f in attrs.fields(ChildSpec) if f.init}
    assert ChildSpec("w", worker) == ChildSpec("w", worker)


# --------------------------------------------------------------- services


def test_service_with_class_factory() -> None:
    health = HealthCheck(interval=1.0)
    spec = ChildSpec.service(
        "svc",
        Service,
        restart=Restart.TRANSIENT,
        shutdown_timeout=2.0,
        health=health,
        significant=True,
    )
    assert spec.name == "svc"
    assert spec.is_service is True
    assert spec.takes_task_status is True
    assert spec.args == ()
    assert spec.restart is Restart.TRANSIENT
    assert spec.shutdown_timeout == 2.0
    assert spec.health is health
    assert spec.significant is True
    assert cast(Any, spec.target).factory is Service


def test_service_defaults() -> None:
    spec = ChildSpec.service("svc", Service)
    assert spec.restart is Restart.PERMANENT
    assert spec.shutdown_timeout == 5.0
    assert spec.health is None
    assert spec.significant is False


def test_service_with_function_factory() -> None:
    spec = ChildSpec.service("svc", make_service)
    assert spec.is_service is True
    assert cast(Any, spec.target).factory is make_service


def test_service_specs_compare_by_factory() -> None:
    assert ChildSpec.service("svc", Service) == ChildSpec.service("svc", Service)
    assert ChildSpec.service("svc", Service) != ChildSpec.service("svc", make_service)


def test_service_async_factory_rejected() -> None:
    with spec_error(
        "ChildSpec 'svc': factory must be a plain callable that returns a fresh service object"
        " (got function 'async_factory'); pass the class or a sync function"
    ):
        ChildSpec.service("svc", async_factory)


def test_service_coroutine_factory_rejected_and_closed() -> None:
    coro = async_factory()
    with spec_error(
        "ChildSpec 'svc': factory must be a plain callable that returns a fresh service object"
        " (got coroutine 'async_factory'); pass the class or a sync function"
    ):
        ChildSpec.service("svc", bad(coro))
    assert inspect.getcoroutinestate(coro) == "CORO_CLOSED"


def test_service_non_callable_factory_rejected() -> None:
    with spec_error("ChildSpec 'svc': factory must be callable (got 3)"):
        ChildSpec.service("svc", bad(3))


def test_service_class_without_run_rejected() -> None:
    with spec_error(
        "ChildSpec 'svc': service 'ServiceWithoutRun' must define"
        " 'async def run(self, task_status=trio.TASK_STATUS_IGNORED)'"
    ):
        ChildSpec.service("svc", ServiceWithoutRun)


def test_service_class_with_sync_run_rejected() -> None:
    with spec_error(
        "ChildSpec 'svc': service 'ServiceWithSyncRun' must define"
        " 'async def run(self, task_status=trio.TASK_STATUS_IGNORED)'"
    ):
        ChildSpec.service("svc", ServiceWithSyncRun)


def test_service_class_with_sync_stop_rejected() -> None:
    with spec_error("ChildSpec 'svc': service 'ServiceWithSyncStop' method 'stop' must be async"):
        ChildSpec.service("svc", ServiceWithSyncStop)


def test_service_class_with_sync_check_health_rejected() -> None:
    with spec_error(
        "ChildSpec 'svc': service 'ServiceWithSyncCheckHealth' method 'check_health' must be async"
    ):
        ChildSpec.service("svc", ServiceWithSyncCheckHealth)


def test_service_name_checked() -> None:
    with spec_error("ChildSpec: name must be a non-empty string (got '')"):
        ChildSpec.service("", Service)
    with spec_error(
        "ChildSpec 'a/b': name must not contain '/', which separates path parts;"
        " nest a SupervisorSpec to build a path"
    ):
        ChildSpec.service("a/b", Service)


def test_service_other_fields_checked() -> None:
    with spec_error("ChildSpec 'svc': shutdown_timeout must be >= 0 or None (got -1)"):
        ChildSpec.service("svc", Service, shutdown_timeout=-1)
    with spec_error(
        "ChildSpec 'svc': significant=True needs restart=TRANSIENT or TEMPORARY, because a"
        " PERMANENT child is always restarted and so never ends its supervisor"
    ):
        ChildSpec.service("svc", Service, significant=True)


# --------------------------------------------------------------- times


@pytest.mark.parametrize(("value", "shown"), [(-1, "-1"), (-0.5, "-0.5"), (math.nan, "nan")])
def test_childspec_bad_shutdown_timeout(value: float, shown: str) -> None:
    with spec_error(f"ChildSpec 'db': shutdown_timeout must be >= 0 or None (got {shown})"):
        ChildSpec("db", worker, shutdown_timeout=value)


def test_childspec_non_number_shutdown_timeout() -> None:
    with spec_error("ChildSpec 'db': shutdown_timeout must be a number >= 0 or None (got '5')"):
        ChildSpec("db", worker, shutdown_timeout=bad("5"))
    with spec_error("ChildSpec 'db': shutdown_timeout must be a number >= 0 or None (got True)"):
        ChildSpec("db", worker, shutdown_timeout=True)


@pytest.mark.parametrize(("value", "shown"), [(-1, "-1"), (math.nan, "nan")])
def test_supervisorspec_bad_shutdown_timeout(value: float, shown: str) -> None:
    with spec_error(f"SupervisorSpec 'sup': shutdown_timeout must be >= 0 or None (got {shown})"):
        SupervisorSpec("sup", shutdown_timeout=value)


@pytest.mark.parametrize(
    ("value", "shown"), [(0, "0"), (0.0, "0.0"), (-1, "-1"), (math.nan, "nan")]
)
def test_max_seconds_must_be_positive(value: float, shown: str) -> None:
    # The rule is max_seconds > 0 and finite: a message saying ">= 0" for -1 would send the
    # user to 0, which is rejected too.
    with spec_error(f"SupervisorSpec 'root': max_seconds must be > 0 and finite (got {shown})"):
        SupervisorSpec("root", max_seconds=value)


def test_max_seconds_must_be_finite() -> None:
    # OTP refuses an infinite period: a window that never ends makes every restart count
    # forever, so the intensity would be a lifetime budget, not a rate.
    with spec_error("SupervisorSpec 's': max_seconds must be > 0 and finite (got inf)"):
        SupervisorSpec("s", max_seconds=math.inf)


def test_max_seconds_small_positive_allowed() -> None:
    assert SupervisorSpec("root", max_seconds=1e-9).max_seconds == 1e-9


def test_max_restarts_negative_rejected() -> None:
    with spec_error("SupervisorSpec 'root': max_restarts must be >= 0 (got -1)"):
        SupervisorSpec("root", max_restarts=-1)


def test_max_restarts_non_int_rejected() -> None:
    with spec_error("SupervisorSpec 'root': max_restarts must be an int >= 0 (got 1.5)"):
        SupervisorSpec("root", max_restarts=bad(1.5))
    with spec_error("SupervisorSpec 'root': max_restarts must be an int >= 0 (got True)"):
        SupervisorSpec("root", max_restarts=True)


def test_max_restarts_zero_allowed() -> None:
    assert SupervisorSpec("root", max_restarts=0).max_restarts == 0


@pytest.mark.parametrize("field", ["initial", "maximum", "reset_after"])
@pytest.mark.parametrize(("value", "shown"), [(-1.0, "-1.0"), (math.nan, "nan")])
def test_backoff_bad_times(field: str, value: float, shown: str) -> None:
    with spec_error(f"Backoff: {field} must be >= 0 (got {shown})"):
        Backoff(**{field: value})


@pytest.mark.parametrize(
    ("value", "shown"), [(0.5, "0.5"), (0.0, "0.0"), (-1.0, "-1.0"), (math.nan, "nan")]
)
def test_backoff_factor_below_one_rejected(value: float, shown: str) -> None:
    # The rule for factor is >= 1 whatever the bad value: naming ">= 0" for a negative
    # factor would state the wrong rule.
    with spec_error(f"Backoff: factor must be >= 1 and finite (got {shown})"):
        Backoff(factor=value)


def test_backoff_infinite_factor_rejected() -> None:
    with spec_error("Backoff: factor must be >= 1 and finite (got inf)"):
        Backoff(factor=math.inf)


@pytest.mark.parametrize(("value", "shown"), [(1.5, "1.5"), (1.0000001, "1.0000001")])
def test_backoff_jitter_above_one_rejected(value: float, shown: str) -> None:
    with spec_error(f"Backoff: jitter must be within [0, 1] (got {shown})"):
        Backoff(jitter=value)


@pytest.mark.parametrize(("value", "shown"), [(-0.5, "-0.5"), (math.nan, "nan")])
def test_backoff_jitter_negative_or_nan_rejected(value: float, shown: str) -> None:
    with spec_error(f"Backoff: jitter must be within [0, 1] (got {shown})"):
        Backoff(jitter=value)


def test_backoff_initial_above_maximum_rejected() -> None:
    with spec_error(
        "Backoff: initial must be <= maximum (got initial=2.0, maximum=1.0);"
        " raise maximum or lower initial"
    ):
        Backoff(initial=2.0, maximum=1.0)


def test_backoff_non_number_rejected() -> None:
    with spec_error("Backoff: initial must be a number >= 0 (got None)"):
        Backoff(initial=bad(None))


def test_supervisorspec_bad_backoff_type() -> None:
    with spec_error("SupervisorSpec 'root': backoff must be a Backoff or None (got 1.0)"):
        SupervisorSpec("root", backoff=bad(1.0))


@pytest.mark.parametrize("field", ["interval", "timeout"])
@pytest.mark.parametrize(
    ("value", "shown"), [(0, "0"), (0.0, "0.0"), (-1.0, "-1.0"), (math.nan, "nan")]
)
def test_healthcheck_times_must_be_positive(field: str, value: float, shown: str) -> None:
    # interval and timeout must be > 0: a message saying ">= 0" for -1 states the wrong rule.
    with spec_error(f"HealthCheck: {field} must be > 0 (got {shown})"):
        HealthCheck(probe, **cast(dict[str, Any], {field: value}))


@pytest.mark.parametrize("value", [0, -3])
def test_healthcheck_threshold_below_one_rejected(value: int) -> None:
    with spec_error(f"HealthCheck: threshold must be >= 1 (got {value})"):
        HealthCheck(probe, threshold=value)


def test_healthcheck_threshold_non_int_rejected() -> None:
    with spec_error("HealthCheck: threshold must be an int >= 1 (got 2.5)"):
        HealthCheck(probe, threshold=bad(2.5))


def test_childspec_bad_health_type() -> None:
    with spec_error("ChildSpec 'w': health must be a HealthCheck or None (got 10)"):
        ChildSpec("w", worker, health=bad(10))


# --------------------------------------------------------------- significant, enums


def test_significant_permanent_child_rejected() -> None:
    with spec_error(
        "ChildSpec 'w': significant=True needs restart=TRANSIENT or TEMPORARY, because a"
        " PERMANENT child is always restarted and so never ends its supervisor"
    ):
        ChildSpec("w", worker, significant=True)


def test_significant_permanent_supervisor_rejected() -> None:
    with spec_error(
        "SupervisorSpec 'sup': significant=True needs restart=TRANSIENT or TEMPORARY, because"
        " a PERMANENT child is always restarted and so never ends its supervisor"
    ):
        SupervisorSpec("sup", significant=True)


def test_significant_child_under_never_rejected() -> None:
    with spec_error(
        "SupervisorSpec 'root': child 'w' is significant but auto_shutdown is NEVER;"
        " set auto_shutdown=ANY_SIGNIFICANT or ALL_SIGNIFICANT, or drop significant"
    ):
        SupervisorSpec(
            "root", [ChildSpec("w", worker, restart=Restart.TRANSIENT, significant=True)]
        )


def test_significant_supervisor_under_never_rejected() -> None:
    inner = SupervisorSpec("inner", restart=Restart.TEMPORARY, significant=True)
    with spec_error(
        "SupervisorSpec 'root': child 'inner' is significant but auto_shutdown is NEVER;"
        " set auto_shutdown=ANY_SIGNIFICANT or ALL_SIGNIFICANT, or drop significant"
    ):
        SupervisorSpec("root", [inner])


def test_significant_must_be_bool() -> None:
    with spec_error("ChildSpec 'w': significant must be a bool (got 1)"):
        ChildSpec("w", worker, restart=Restart.TEMPORARY, significant=bad(1))


def test_bad_enum_values_rejected() -> None:
    with spec_error("ChildSpec 'w': restart must be a Restart (got 'permanent')"):
        ChildSpec("w", worker, restart=bad("permanent"))
    with spec_error("SupervisorSpec 'root': strategy must be a Strategy (got 'one_for_one')"):
        SupervisorSpec("root", strategy=bad("one_for_one"))
    with spec_error("SupervisorSpec 'root': restart must be a Restart (got 'permanent')"):
        SupervisorSpec("root", restart=bad("permanent"))
    with spec_error("SupervisorSpec 'root': auto_shutdown must be an AutoShutdown (got 'never')"):
        SupervisorSpec("root", auto_shutdown=bad("never"))


# --------------------------------------------------------------- max_children


def test_max_children_below_static_children_rejected() -> None:
    with spec_error(
        "SupervisorSpec 'root': max_children=1 is less than its 2 static children;"
        " raise max_children"
    ):
        SupervisorSpec("root", [ChildSpec("a", worker), ChildSpec("b", worker)], max_children=1)


def test_max_children_equal_to_static_children_allowed() -> None:
    spec = SupervisorSpec("root", [ChildSpec("a", worker)], max_children=1)
    assert spec.max_children == 1
    assert SupervisorSpec("empty", max_children=0).max_children == 0


def test_max_children_negative_rejected() -> None:
    # A negative limit breaks the rule ">= 0 or None" whatever the number of static children.
    with spec_error("SupervisorSpec 'root': max_children must be >= 0 or None (got -1)"):
        SupervisorSpec("root", max_children=-1)


def test_max_children_non_int_rejected() -> None:
    with spec_error("SupervisorSpec 'root': max_children must be an int >= 0 or None (got 2.0)"):
        SupervisorSpec("root", max_children=bad(2.0))


# --------------------------------------------------------------- Backoff delays


def test_base_delay_doubling_sequence_and_cap() -> None:
    backoff = Backoff(initial=0.1, maximum=30.0, factor=2.0, jitter=0.0)
    assert [backoff.base_delay(n) for n in range(1, 12)] == [
        0.1,
        0.2,
        0.4,
        0.8,
        1.6,
        3.2,
        6.4,
        12.8,
        25.6,
        30.0,
        30.0,
    ]


def test_base_delay_reaches_maximum_exactly() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0, factor=2.0)
    assert [backoff.base_delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 8.0]


def test_base_delay_factor_one_is_constant() -> None:
    backoff = Backoff(initial=0.5, maximum=30.0, factor=1.0)
    assert {backoff.base_delay(n) for n in (1, 2, 100, 10_000)} == {0.5}


def test_base_delay_zero_initial() -> None:
    backoff = Backoff(initial=0.0, maximum=0.0)
    assert backoff.base_delay(1) == 0.0
    assert backoff.base_delay(10_000) == 0.0
    assert backoff.delay(5, random.Random(0)) == 0.0


def test_base_delay_no_overflow_for_long_runs() -> None:
    backoff = Backoff(initial=0.1, maximum=30.0, factor=2.0)
    assert backoff.base_delay(10_000) == 30.0
    assert backoff.base_delay(10**9) == 30.0
    assert Backoff(initial=1.0, maximum=1e300, factor=10.0).base_delay(10_000) == 1e300


def test_base_delay_no_overflow_with_infinite_maximum() -> None:
    # maximum=inf ("no cap") is a valid spec: only negative or NaN times are rejected.
    # min(inf, 0.1 * 2**9999) is inf, not an OverflowError.
    assert Backoff(initial=0.1, maximum=math.inf).base_delay(10_000) == math.inf


def test_base_delay_no_overflow_with_tiny_initial() -> None:
    # maximum / initial overflows to inf here; the delay is still capped at maximum.
    backoff = Backoff(initial=5e-324, maximum=10.0)
    assert backoff.base_delay(10_000) == 10.0


@pytest.mark.parametrize("attempt", [0, -1])
def test_base_delay_attempt_is_one_based(attempt: int) -> None:
    with pytest.raises(ValueError, match=rf"^attempt must be >= 1 \(got {attempt}\)$"):
        Backoff().base_delay(attempt)


def test_delay_without_jitter_is_exact() -> None:
    backoff = Backoff(initial=0.1, maximum=30.0, jitter=0.0)
    rng = random.Random(1234)
    assert [backoff.delay(n, rng) for n in range(1, 12)] == [
        backoff.base_delay(n) for n in range(1, 12)
    ]
    assert backoff.delay(3) == 0.4


def test_delay_jitter_bounds_with_seeded_rng() -> None:
    backoff = Backoff(initial=1.0, maximum=30.0, factor=2.0, jitter=0.5)
    rng = random.Random(20240601)
    samples = [backoff.delay(3, rng) for _ in range(2000)]
    assert all(4.0 <= sample <= 6.0 for sample in samples)
    # The stretch really is random and spread over [1, 1 + jitter].
    assert len(set(samples)) > 1900
    assert min(samples) < 4.05
    assert max(samples) > 5.95


def test_delay_is_deterministic_for_a_seed() -> None:
    backoff = Backoff(jitter=1.0)
    first = [backoff.delay(n, random.Random(7)) for n in range(1, 20)]
    second = [backoff.delay(n, random.Random(7)) for n in range(1, 20)]
    assert first == second
    assert all(
        backoff.base_delay(n) <= d <= 2 * backoff.base_delay(n) for n, d in enumerate(first, 1)
    )


def test_delay_at_the_cap_is_jittered_above_maximum_at_most_by_jitter() -> None:
    backoff = Backoff(initial=1.0, maximum=10.0, jitter=0.1)
    rng = random.Random(3)
    samples = [backoff.delay(100, rng) for _ in range(200)]
    assert all(10.0 <= sample <= 11.0 for sample in samples)
    assert any(sample > 10.0 for sample in samples)


def test_delay_without_rng_stays_within_bounds() -> None:
    backoff = Backoff(initial=1.0, maximum=1.0, jitter=1.0)
    samples = [backoff.delay(1) for _ in range(100)]
    assert all(1.0 <= sample <= 2.0 for sample in samples)


def test_the_task_status_lookup_is_remembered_without_keeping_the_target_alive() -> None:
    async def target(task_status: object = None) -> None:
        pass

    assert ChildSpec("a", target).takes_task_status
    assert ChildSpec("b", target).takes_task_status  # from the cache
    ref = weakref.ref(target)
    del target
    gc.collect()
    assert ref() is None
