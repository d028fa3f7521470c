"""The public face of the package: what is exported, from where, and named how."""

from __future__ import annotations

import ast
import enum
import inspect
import subprocess
import sys
import types
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest

import trio_supervise
import trio_supervise.testing

PUBLIC_MODULES: list[ModuleType] = [trio_supervise, trio_supervise.testing]


def reexported_names(module: ModuleType) -> list[str]:
    """The names an ``__init__.py`` binds by ``from ... import X as X``, in source order.

    Names with a leading underscore are private (``__version__`` included) and left out.
    """
    assert module.__file__ is not None
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                name = alias.asname or alias.name
                if not name.startswith("_"):
                    names.append(name)
    return names


def public_objects() -> list[tuple[ModuleType, str, Any]]:
    return [
        (module, name, getattr(module, name))
        for module in PUBLIC_MODULES
        for name in reexported_names(module)
    ]


def test_reexports_use_the_explicit_as_form() -> None:
    # ``from ._x import Name as Name`` marks a re-export for mypy --strict and pyright.
    for module in PUBLIC_MODULES:
        assert module.__file__ is not None
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                for alias in node.names:
                    if alias.name.startswith("_"):
                        continue  # a private helper module, not a re-export
                    assert alias.asname == alias.name, (module.__name__, alias.name)


def test_every_public_name_is_exported_once() -> None:
    names = [name for module in PUBLIC_MODULES for name in reexported_names(module)]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    assert duplicates == []


def test_no_object_is_exported_under_two_names() -> None:
    seen: dict[int, str] = {}
    clashes: list[tuple[str, str]] = []
    for module, name, obj in public_objects():
        qualified = f"{module.__name__}.{name}"
        if id(obj) in seen:
            clashes.append((seen[id(obj)], qualified))
        seen[id(obj)] = qualified
    assert clashes == []


def test_public_names_are_attributes_of_their_module() -> None:
    for module, name, obj in public_objects():
        assert obj is not None, f"{module.__name__}.{name}"


def is_class_or_function(obj: object) -> bool:
    return inspect.isclass(obj) or inspect.isfunction(obj)


@pytest.mark.parametrize(
    ("module", "name"),
    [(module, name) for module, name, obj in public_objects() if is_class_or_function(obj)],
    ids=lambda value: value.__name__ if isinstance(value, ModuleType) else str(value),
)
def test_public_name_reports_public_module(module: ModuleType, name: str) -> None:
    obj = getattr(module, name)
    assert obj.__module__ == module.__name__
    assert obj.__qualname__ == name
    assert obj.__name__ == name


def test_other_public_names_are_type_aliases() -> None:
    # A type alias such as ``Expected = EventKind | tuple[EventKind, str]`` is a
    # types.UnionType value with no module of its own to rewrite; nothing else may escape
    # the __module__ check above.
    # Besides them, the documented constants: upper-case names of numbers.
    others = {
        f"{module.__name__}.{name}": type(obj)
        for module, name, obj in public_objects()
        if not is_class_or_function(obj) and not (name.isupper() and type(obj) in (int, float))
    }
    assert all(kind in (types.UnionType, types.GenericAlias) for kind in others.values()), others


def test_the_hard_exit_constants_the_readme_names_are_exported() -> None:
    # Issue 10, item 12: the README named HARD_EXIT_GRACE, which was not importable.
    assert (trio_supervise.HARD_EXIT_GRACE, trio_supervise.HARD_EXIT_CODE) == (5.0, 137)


def test_public_modules_export_something() -> None:
    assert len(reexported_names(trio_supervise)) >= 25
    assert len(reexported_names(trio_supervise.testing)) >= 5


# --------------------------------------------------------------- the contract's names

CONTRACT_NAMES = [
    "ChildSpec",
    "SupervisorSpec",
    "Backoff",
    "HealthCheck",
    "Restart",
    "Strategy",
    "AutoShutdown",
    "SpecError",
    "supervisor_tree",
    "current_child",
    "RestartIntensityExceeded",
    "SupervisionError",
    "ChildState",
    "ChildInfo",
    "ChildCounts",
    "Event",
    "EventKind",
    "HealthStatus",
    "HealthReport",
    "ShutdownHook",
    "Band",
    "ShutdownReport",
    "HookResult",
]


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_contract_name_is_exported(name: str) -> None:
    assert name in reexported_names(trio_supervise)
    assert getattr(trio_supervise, name).__module__ == "trio_supervise"


def test_contract_run_is_exported() -> None:
    # api.md §3: ``trio_supervise.run(spec, *, hooks=(), shutdown_deadline=30.0) -> int``.
    assert "run" in reexported_names(trio_supervise)
    run = trio_supervise.run  # type: ignore[attr-defined,unused-ignore]
    assert inspect.isfunction(run)
    parameters = inspect.signature(run).parameters
    assert list(parameters)[:1] == ["spec"]
    assert parameters["hooks"].kind is inspect.Parameter.KEYWORD_ONLY
    assert parameters["hooks"].default == ()
    assert parameters["shutdown_deadline"].kind is inspect.Parameter.KEYWORD_ONLY
    assert parameters["shutdown_deadline"].default == 30.0


def test_contract_console_script_resolves() -> None:
    # api.md: console script ``trio-supervise``.
    from importlib.metadata import entry_points

    scripts = entry_points(group="console_scripts", name="trio-supervise")
    assert len(scripts) == 1
    (script,) = scripts
    assert callable(script.load())


def member_values(enum_cls: type[enum.Enum]) -> dict[str, object]:
    return {member.name: member.value for member in enum_cls}


def test_restart_members() -> None:
    assert {m.name for m in trio_supervise.Restart} == {"PERMANENT", "TRANSIENT", "TEMPORARY"}


def test_strategy_members() -> None:
    assert {m.name for m in trio_supervise.Strategy} == {
        "ONE_FOR_ONE",
        "ONE_FOR_ALL",
        "REST_FOR_ONE",
    }


def test_auto_shutdown_members() -> None:
    assert {m.name for m in trio_supervise.AutoShutdown} == {
        "NEVER",
        "ANY_SIGNIFICANT",
        "ALL_SIGNIFICANT",
    }


def test_child_state_members() -> None:
    assert {m.name for m in trio_supervise.ChildState} == {
        "STARTING",
        "RUNNING",
        "RESTARTING",
        "STOPPING",
        "STOPPED",
    }


def test_health_status_members() -> None:
    assert {m.name for m in trio_supervise.HealthStatus} == {"HEALTHY", "DEGRADED", "UNHEALTHY"}


def test_event_kind_has_contract_kinds() -> None:
    contract = {
        "STARTED",
        "EXITED",
        "CRASHED",
        "RESTART_SCHEDULED",
        "RESTARTED",
        "TERMINATED",
        "STOP_TIMEOUT",
        "INTENSITY_EXCEEDED",
        "HEALTH_CHANGED",
        "SHUTDOWN_STARTED",
        "HOOK_FINISHED",
        "SHUTDOWN_FINISHED",
    }
    assert contract <= {m.name for m in trio_supervise.EventKind}


def test_band_values() -> None:
    assert member_values(trio_supervise.Band) == {
        "STOP_ACCEPTING": 0,
        "DRAIN": 10,
        "FLUSH": 20,
        "CLOSE": 30,
        "CLEANUP": 40,
    }
    # Bands are used as priorities: they are ints.
    assert issubclass(trio_supervise.Band, int)
    assert trio_supervise.Band.CLOSE // 10 == 3


def field_names(cls: type) -> list[str]:
    return [field.name for field in attrs.fields(cls)]


def test_event_fields() -> None:
    event = trio_supervise.Event(trio_supervise.EventKind.STARTED, "w", 1.0)
    with pytest.raises(AttributeError):
        event.path = "x"  # type: ignore[misc]
    assert list(trio_supervise.Event._fields) == [
        "kind",
        "path",
        "time",
        "restarts",
        "error",
        "detail",
    ]


def test_child_info_fields() -> None:
    assert set(field_names(trio_supervise.ChildInfo)) >= {
        "name",
        "path",
        "kind",
        "state",
        "restarts",
        "last_error",
        "started_at",
    }


def test_child_counts_fields() -> None:
    assert set(field_names(trio_supervise.ChildCounts)) >= {
        "specs",
        "active",
        "workers",
        "supervisors",
    }


def test_health_report_fields() -> None:
    assert set(field_names(trio_supervise.HealthReport)) >= {"status", "children", "ready", "live"}


def test_shutdown_report_fields() -> None:
    assert set(field_names(trio_supervise.ShutdownReport)) >= {
        "reason",
        "started",
        "duration",
        "forced",
        "hooks",
    }


def test_hook_result_fields() -> None:
    assert list(trio_supervise.HookResult._fields)[:5] == [
        "name",
        "priority",
        "status",
        "duration",
        "error",
    ]


def test_shutdown_hook_priority_is_required_and_keyword_only() -> None:
    parameters = inspect.signature(trio_supervise.ShutdownHook).parameters
    assert list(parameters)[:2] == ["name", "fn"]
    assert parameters["priority"].kind is inspect.Parameter.KEYWORD_ONLY
    assert parameters["priority"].default is inspect.Parameter.empty
    assert parameters["timeout"].kind is inspect.Parameter.KEYWORD_ONLY
    assert parameters["timeout"].default is None


def test_supervisor_tree_signature() -> None:
    parameters = inspect.signature(trio_supervise.supervisor_tree).parameters
    assert list(parameters)[:1] == ["spec"]
    for name, default in [("hooks", ()), ("shutdown_deadline", 30.0), ("handle_signals", False)]:
        assert parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
        assert parameters[name].default == default


# --------------------------------------------------------------- package shape


def test_import_does_not_import_testing_or_extras() -> None:
    code = (
        "import sys, trio_supervise; "
        "print(sorted(m for m in ("
        "'trio_supervise.testing', 'hypothesis', 'pytest', 'hypercorn', 'trio_websocket',"
        " 'prometheus_client', 'matplotlib') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout == "[]\n"
    assert result.stderr == ""


def test_py_typed_marker_exists() -> None:
    assert trio_supervise.__file__ is not None
    marker = Path(trio_supervise.__file__).parent / "py.typed"
    assert marker.is_file()


def test_version_is_a_string() -> None:
    assert isinstance(trio_supervise.__version__, str)
    assert trio_supervise.__version__ != ""


def test_supervisor_tree_handle_has_no_public_constructor() -> None:
    cls: Any = trio_supervise.SupervisorTree
    with pytest.raises(
        TypeError,
        match=(
            r"^trio_supervise\.SupervisorTree has no public constructor;"
            r" get one from 'async with supervisor_tree\(spec\) as tree'$"
        ),
    ):
        cls()
    with pytest.raises(TypeError, match=r"^trio_supervise\.SupervisorTree has no public"):
        cls(trio_supervise.SupervisorSpec("root"), (), 30.0, 1000, None)


# ------------------------------------------------- every numeric option refuses True and NaN


async def _probe() -> bool:
    return True  # pragma: no cover


async def _hook() -> None:
    pass  # pragma: no cover


async def _handler(connection: object) -> None:
    pass  # pragma: no cover


class _Service:
    async def run(self) -> None:
        pass  # pragma: no cover


async def _asgi(scope: object, receive: object, send: object) -> None:
    pass  # pragma: no cover


def _numeric_options() -> list[tuple[str, str, Any]]:
    """(where, option, a function of the value that builds with it), for each public option."""
    from trio_supervise import (
        Backoff,
        ChildSpec,
        DrainDelay,
        HealthCheck,
        ShutdownHook,
        SupervisorSpec,
        SystemdNotifier,
    )
    from trio_supervise.integrations.http import HTTPServer
    from trio_supervise.integrations.websocket import WebSocketServer

    options: list[tuple[str, str, Any]] = [
        ("ChildSpec", "shutdown_timeout", lambda v: ChildSpec("c", _hook, shutdown_timeout=v)),
        (
            "ChildSpec.service",
            "shutdown_timeout",
            lambda v: ChildSpec.service("c", _Service, shutdown_timeout=v),
        ),
        ("ShutdownHook", "priority", lambda v: ShutdownHook("h", _hook, priority=v)),
        ("ShutdownHook", "timeout", lambda v: ShutdownHook("h", _hook, priority=0, timeout=v)),
        ("DrainDelay", "seconds", lambda v: DrainDelay(v)),
        (
            "SystemdNotifier",
            "watchdog_interval",
            lambda v: SystemdNotifier("/n", watchdog_interval=v),
        ),
        ("HTTPServer", "port", lambda v: HTTPServer(_asgi, port=v)),
        ("HTTPServer", "graceful_timeout", lambda v: HTTPServer(_asgi, graceful_timeout=v)),
        ("HTTPServer", "body_timeout", lambda v: HTTPServer(_asgi, body_timeout=v)),
        (
            "HTTPServer.child_spec",
            "shutdown_timeout",
            lambda v: HTTPServer(_asgi).child_spec(shutdown_timeout=v),
        ),
        (
            "HTTPServer.shutdown_hook",
            "timeout",
            lambda v: HTTPServer(_asgi).shutdown_hook(timeout=v),
        ),
        ("WebSocketServer", "port", lambda v: WebSocketServer(_handler, port=v)),
        ("WebSocketServer", "close_timeout", lambda v: WebSocketServer(_handler, close_timeout=v)),
        (
            "WebSocketServer",
            "broadcast_queue",
            lambda v: WebSocketServer(_handler, broadcast_queue=v),
        ),
        (
            "WebSocketServer",
            "broadcast_timeout",
            lambda v: WebSocketServer(_handler, broadcast_timeout=v),
        ),
        (
            "WebSocketServer.child_spec",
            "shutdown_timeout",
            lambda v: WebSocketServer(_handler).child_spec(shutdown_timeout=v),
        ),
    ]
    for name in ("max_restarts", "max_seconds", "max_children", "shutdown_timeout"):
        options.append(
            ("SupervisorSpec", name, lambda v, name=name: SupervisorSpec("s", **{name: v}))
        )
    for name in ("initial", "maximum", "factor", "jitter", "reset_after"):
        options.append(("Backoff", name, lambda v, name=name: Backoff(**{name: v})))
    for name in ("interval", "timeout", "threshold"):
        options.append(("HealthCheck", name, lambda v, name=name: HealthCheck(_probe, **{name: v})))
    return options


async def _enter_tree(**kwargs: Any) -> None:
    async with trio_supervise.supervisor_tree(trio_supervise.SupervisorSpec("s"), **kwargs):
        pass  # pragma: no cover


@pytest.mark.parametrize("value", [True, float("nan")], ids=["True", "nan"])
async def test_every_numeric_option_refuses_a_bool_and_nan(value: object) -> None:
    # A bool is no number of seconds and NaN fails every rule: each option must say so,
    # naming itself, however its module checks it. (supervisor_tree took True as 1 second.)
    accepted: list[str] = []
    unnamed: list[str] = []
    for where, option, build in _numeric_options():
        try:
            build(value)
        except (ValueError, TypeError) as exc:
            if f"{option} must be" not in str(exc) or f"(got {value!r})" not in str(exc):
                unnamed.append(f"{where}({option}={value!r}): {exc}")
        else:
            accepted.append(f"{where}({option}={value!r})")
    for option in ("shutdown_deadline", "history_size"):
        try:
            await _enter_tree(**{option: value})
        except (ValueError, TypeError) as exc:
            if f"{option} must be" not in str(exc) or f"(got {value!r})" not in str(exc):
                unnamed.append(f"supervisor_tree({option}={value!r}): {exc}")
        else:
            accepted.append(f"supervisor_tree({option}={value!r})")
    assert accepted == []
    assert unnamed == []


def test_the_license_the_metadata_names_is_shipped() -> None:
    # Issue 10, item 12: the metadata said MIT, and no LICENSE file existed.
    import tomllib

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    assert (root / "LICENSE").read_text().startswith("MIT License\n")
