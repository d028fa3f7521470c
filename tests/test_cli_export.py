"""``trio-supervise export kubernetes|systemd`` (contract §8), validated offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from trio_supervise._cli_export import stop_budget

SERVICE = """
import trio
from trio_supervise import ChildSpec, SupervisorSpec

async def worker():
    await trio.sleep_forever()

spec = SupervisorSpec("Notes_API", [ChildSpec("w", worker)])
"""


@pytest.fixture
def service_dir(tmp_path: Path) -> Path:
    (tmp_path / "svc.py").write_text(textwrap.dedent(SERVICE))
    return tmp_path


def export(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_SUPERVISE_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "trio_supervise", "export", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


def test_the_budget_covers_drain_deadline_and_the_hard_exit_grace() -> None:
    assert stop_budget({"drain-delay": 5.0, "shutdown-deadline": 20.0}) == 31
    assert stop_budget({"drain-delay": 0.0, "shutdown-deadline": 30.0}) == 36
    assert stop_budget({"drain-delay": 0.2, "shutdown-deadline": 1.5}) == 8  # ceil(6.7) + 1


def kubernetes_documents(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    documents = list(yaml.safe_load_all(result.stdout))
    version = kubernetes_validate.latest_version()
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)
    return documents


def test_kubernetes_yaml_validates_and_carries_the_budget(service_dir: Path) -> None:
    result = export(
        service_dir,
        "kubernetes",
        "svc:spec",
        "--image",
        "registry.example/notes:1.2",
        "--replicas",
        "3",
        "--port",
        "8080",
        "--drain-delay",
        "5",
        env={"TRIO_SUPERVISE_SHUTDOWN_DEADLINE": "20"},
    )
    deployment, budget = kubernetes_documents(result)
    assert "&id" not in result.stdout  # labels written out, no YAML aliases
    assert (deployment["kind"], budget["kind"]) == ("Deployment", "PodDisruptionBudget")
    assert deployment["metadata"]["name"] == "notes-api"
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 3
    assert pod["terminationGracePeriodSeconds"] == 31
    [container] = pod["containers"]
    assert container["command"] == ["trio-supervise", "run", "svc:spec"]
    assert container["image"] == "registry.example/notes:1.2"
    assert {item["name"]: item["value"] for item in container["env"]} == {
        "TRIO_SUPERVISE_HEALTH": "0.0.0.0:9000",
        "TRIO_SUPERVISE_SHUTDOWN_DEADLINE": "20",
        "TRIO_SUPERVISE_DRAIN_DELAY": "5",
    }
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "health"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "health"}
    assert [port["containerPort"] for port in container["ports"]] == [9000, 8080]
    assert "lifecycle" not in container  # no preStop sleep: the drain delay does it
    assert budget["spec"]["selector"] == deployment["spec"]["selector"]


def test_the_validator_refuses_a_broken_deployment() -> None:
    # The check above would prove nothing if the validator passed anything.
    broken = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
              "spec": {"replicas": "two", "selector": {}, "template": {}}}  # fmt: skip
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_the_systemd_unit_carries_the_budget_and_the_watchdog(
    service_dir: Path, tmp_path: Path
) -> None:
    result = export(
        service_dir,
        "systemd",
        "svc:spec",
        "--watchdog",
        "10",
        "--health",
        "9000",
        "--shutdown-deadline",
        "20",
    )
    assert result.returncode == 0, result.stderr
    unit = result.stdout
    lines = unit.splitlines()
    assert "Type=notify" in lines
    assert "TimeoutStopSec=26" in lines
    assert "WatchdogSec=10" in lines
    assert "KillMode=mixed" in lines
    assert "ExecStart=/usr/bin/env trio-supervise run svc:spec" in lines
    assert (
        'Environment="TRIO_SUPERVISE_HEALTH=127.0.0.1:9000"'
        ' "TRIO_SUPERVISE_SHUTDOWN_DEADLINE=20"' in lines
    )
    path = tmp_path / "notes.service"
    path.write_text(unit)
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here: the unit was not verified")
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, check=False
    )
    assert verified.returncode == 0, verified.stderr
    assert verified.stderr == ""


def test_a_unit_without_a_watchdog_has_none(service_dir: Path) -> None:
    result = export(service_dir, "systemd", "svc:spec")
    assert result.returncode == 0, result.stderr
    assert "WatchdogSec" not in result.stdout
    assert "TimeoutStopSec=36" in result.stdout.splitlines()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("kubernetes", "svc:spec"), "the following arguments are required: --image"),
        (("kubernetes", "svc:spec", "--image", "i", "--replicas", "0"), "must be >= 1"),
        (("kubernetes", "nosuch:spec", "--image", "i"), "no module named 'nosuch'"),
        (("systemd", "svc:spec", "--watchdog", "-1"), "--watchdog"),
        (
            ("systemd", "svc:spec", "--drain-delay", "x"),
            "--drain-delay: not a number of seconds: 'x'",
        ),
    ],
)
def test_bad_export_input_exits_2(service_dir: Path, args: tuple[str, ...], message: str) -> None:
    result = export(service_dir, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_the_dockerfile_runs_trio_supervise_as_pid_1_in_exec_form() -> None:
    # A shell form would make /bin/sh PID 1, and SIGTERM would never reach the tree.
    dockerfile = Path(__file__).resolve().parents[1] / "Dockerfile"
    by_name: dict[str, str] = {}
    for line in dockerfile.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, rest = line.split(None, 1)
            by_name[name] = rest
    assert by_name["STOPSIGNAL"] == "SIGTERM"
    for name in ("ENTRYPOINT", "CMD"):
        assert json.loads(by_name[name])[0], name  # a JSON array: exec form
    assert json.loads(by_name["ENTRYPOINT"]) == ["trio-supervise"]
