"""``trio-supervise export kubernetes|systemd``: deployment artifacts with the right budget.

The stop budget is computed, never a fixed number: the drain delay, the shutdown deadline
and the hard-exit grace (``run()``'s), from the same options and ``TRIO_SUPERVISE_*``
variables ``run`` reads. Kubernetes' ``terminationGracePeriodSeconds`` and systemd's
``TimeoutStopSec`` cover it, so the platform's SIGKILL never cuts a shutdown that is still
within its deadline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from ._cli_run import OPTIONS, UsageError
from ._run import HARD_EXIT_GRACE
from ._spec import SupervisorSpec

#: The container port the exported health endpoints listen on (``--health 0.0.0.0:PORT``).
HEALTH_PORT: Final = 9000
#: Seconds past the budget the platform waits before its SIGKILL.
MARGIN: Final = 1


def stop_budget(values: Mapping[str, Any]) -> int:
    """Whole seconds that cover the drain delay, the deadline and the hard-exit grace."""
    seconds = float(values["drain-delay"]) + float(values["shutdown-deadline"]) + HARD_EXIT_GRACE
    return math.ceil(seconds) + MARGIN


def _env(values: Mapping[str, Any], health: str) -> list[dict[str, str]]:
    env = [{"name": "TRIO_SUPERVISE_HEALTH", "value": health}]
    for option in OPTIONS:
        if option.name in ("health", "observer"):
            continue
        value = values[option.name]
        if value != option.default:
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            env.append({"name": option.variable, "value": shown})
    return env


def kubernetes_yaml(documents: list[dict[str, Any]]) -> str:
    """The documents as YAML (PyYAML, the extra ``export``)."""
    try:
        import yaml
    except ImportError:
        raise UsageError(
            "export kubernetes needs PyYAML: pip install 'trio-supervise[export]'"
        ) from None

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # a reader wants the labels written out, not &id001 / *id001

    return yaml.dump_all(documents, Dumper=Dumper, sort_keys=False)


def kubernetes(
    spec: SupervisorSpec,
    target: str,
    values: Mapping[str, Any],
    *,
    image: str,
    replicas: int,
    port: int | None,
) -> list[dict[str, Any]]:
    """A Deployment and a PodDisruptionBudget for ``target`` run by ``trio-supervise run``."""
    name = _dns_name(spec.name)
    labels = {"app.kubernetes.io/name": name}
    probe = {"httpGet": {"path": "/health/live", "port": "health"}, "periodSeconds": 10}
    ready = {
        "httpGet": {"path": "/health/ready", "port": "health"},
        "periodSeconds": 2,
        "failureThreshold": 1,
    }
    ports = [{"name": "health", "containerPort": HEALTH_PORT}]
    if port is not None:
        ports.append({"name": "http", "containerPort": port})
    container = {
        "name": name,
        "image": image,
        "command": ["trio-supervise", "run", target],
        "env": _env(values, f"0.0.0.0:{HEALTH_PORT}"),
        "ports": ports,
        "livenessProbe": probe,
        "readinessProbe": ready,
        "startupProbe": {**probe, "periodSeconds": 1, "failureThreshold": 60},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    # Covers the drain delay, the deadline and run()'s hard-exit grace: no
                    # preStop sleep is needed, the drain delay keeps serving after SIGTERM.
                    "terminationGracePeriodSeconds": stop_budget(values),
                    "containers": [container],
                },
            },
        },
    }
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "labels": labels},
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}},
    }
    return [deployment, budget]


def systemd(
    spec: SupervisorSpec, target: str, values: Mapping[str, Any], *, watchdog: float | None
) -> str:
    """A ``Type=notify`` unit for ``target``, its ``TimeoutStopSec`` covering the budget."""
    health = _format_address(values["health"]) if values["health"] is not None else ""
    environment = " ".join(
        f'"{item["name"]}={item["value"]}"' for item in _env(values, health) if item["value"]
    )
    lines = [
        "[Unit]",
        f"Description={spec.name} (trio-supervise run {target})",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=notify",
        f"ExecStart=/usr/bin/env trio-supervise run {target}",
    ]
    if environment:
        lines.append(f"Environment={environment}")
    lines += [
        # SIGTERM to the main process only: the tree stops its process children itself.
        "KillMode=mixed",
        f"TimeoutStopSec={stop_budget(values)}",
        "Restart=on-failure",
    ]
    if watchdog is not None:
        lines.append(f"WatchdogSec={watchdog:g}")
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def _format_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _dns_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
    if not cleaned:
        raise UsageError(
            f"export: the root supervisor's name {name!r} gives no Kubernetes name; name it"
            " with letters or digits"
        )
    return cleaned[:63].rstrip("-")
