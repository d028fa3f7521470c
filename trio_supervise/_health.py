"""The health report of a tree: per child, and summed up for probes and load balancers."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import final

import attrs

from ._context import ChildState
from ._spec import HealthStatus, Restart
from ._supervisor import Child, Supervisor


@final
@attrs.frozen
class ChildHealth:
    """One child's health.

    Attributes:
      status: ``HEALTHY`` while running and passing its probes; ``DEGRADED`` while
        restarting, or when its probe says so; ``UNHEALTHY`` after a failed probe or when
        stopped against its policy.
      state: the child's ``ChildState``.
      probe_failures: consecutive failed probes (0 without a ``HealthCheck``).
    """

    status: HealthStatus
    state: ChildState
    probe_failures: int = 0


@final
@attrs.frozen
class HealthReport:
    """The tree's health, from ``tree.health()``.

    Attributes:
      status: ``UNHEALTHY`` if the root has not started, has exited or is failing;
        ``DEGRADED`` if any child is restarting, unhealthy or stopped against its policy
        (a child stopped on purpose by ``terminate_child`` is not); ``HEALTHY`` otherwise.
      children: every child's health, by path, parents before their children.
      ready: whether to send traffic: started, not shutting down and not ``UNHEALTHY``.
      live: whether the process is worth keeping: the root has not exited or failed.
    """

    status: HealthStatus
    children: Mapping[str, ChildHealth]
    ready: bool
    live: bool


def _stopped_against_policy(child: Child, parent_down_on_purpose: bool) -> bool:
    if child.state is not ChildState.STOPPED or child.terminated or parent_down_on_purpose:
        return False
    # A child its policy lets stay down (a transient child that returned) is fine.
    return not (child.gone and child.spec.restart is not Restart.PERMANENT)


def child_health(child: Child, parent_down_on_purpose: bool = False) -> ChildHealth:
    state = child.state
    if state is ChildState.RUNNING:
        status = child.health
    elif child.waiting_for_lock:
        status = HealthStatus.HEALTHY  # waiting is a singleton's job on all replicas but one
    elif state in (ChildState.RESTARTING, ChildState.STARTING):
        status = HealthStatus.DEGRADED
    elif _stopped_against_policy(child, parent_down_on_purpose):
        status = HealthStatus.UNHEALTHY
    else:
        status = HealthStatus.HEALTHY if state is ChildState.STOPPED else HealthStatus.DEGRADED
    return ChildHealth(status, state, child.health_failures)


def passes_down(child: Child, health: ChildHealth, down_on_purpose: bool) -> bool:
    """Whether below ``child`` a stopped child is down as it should be: it or a supervisor
    above it is stopped, and healthy so."""
    return down_on_purpose or (
        child.state is ChildState.STOPPED and health.status is HealthStatus.HEALTHY
    )


def walk(supervisor: Supervisor) -> Iterator[Child]:
    """Every child below ``supervisor``, depth first, in start order."""
    for child in supervisor.children.values():
        yield child
        nested = child.nested
        if nested is not None:
            yield from walk(nested)


def health_report(
    root: Supervisor, *, started: bool, exited: bool, failed: bool, shutting_down: bool
) -> HealthReport:
    children: dict[str, ChildHealth] = {}

    def visit(supervisor: Supervisor, down_on_purpose: bool) -> None:
        for child in supervisor.children.values():
            health = child_health(child, down_on_purpose)
            children[child.path] = health
            nested = child.nested
            if nested is not None:
                visit(nested, passes_down(child, health, down_on_purpose))

    visit(root, False)
    if not started or exited or failed:
        status = HealthStatus.UNHEALTHY
    elif any(health.status is not HealthStatus.HEALTHY for health in children.values()):
        status = HealthStatus.DEGRADED
    else:
        status = HealthStatus.HEALTHY
    live = not exited and not failed
    ready = started and live and not shutting_down and status is not HealthStatus.UNHEALTHY
    return HealthReport(status, children, ready, live)
