"""``trio-supervise run`` and ``check``: a spec named ``MODULE:ATTR`` (contract §8).

``ATTR`` is a ``SupervisorSpec`` or a function with no arguments that returns one (as
gunicorn's ``module:app``); the current directory is importable, as for ``python -m``.
Every option of ``run`` can come from the environment as ``TRIO_SUPERVISE_`` + the option in
capitals with ``_`` for ``-``; the command line wins over the environment, the environment over
the defaults. A bad value, an unknown ``TRIO_SUPERVISE_`` variable, a module that does not
import or an attribute that is not a spec is a ``UsageError``: exit code 2 and one message
that names the option or variable, the value and the rule.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, final

import attrs

from ._errors import SpecError
from ._logs import LOG_FORMATS
from ._run import run
from ._shutdown import DrainDelay, ShutdownHook
from ._spec import ChildSpec, SupervisorSpec
from ._tree import SupervisorTree

if TYPE_CHECKING:
    from .integrations.http import HTTPServer

ENV_PREFIX: Final = "TRIO_SUPERVISE_"
#: Set by a supervisor in its process children's environment (§7): not options.
CHILD_VARIABLES: Final = frozenset({"TRIO_SUPERVISE_PATH", "TRIO_SUPERVISE_RESTARTS"})
#: The observer's token, from the environment only: a command line is visible to ``ps``.
TOKEN_VARIABLE: Final = "TRIO_SUPERVISE_OBSERVER_TOKEN"
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: The child ``--health`` adds to the root supervisor, last.
HEALTH_CHILD: Final = "trio-supervise-health"
#: The child ``--observer`` adds to the root supervisor, last.
OBSERVER_CHILD: Final = "trio-supervise-observer"
_HEALTH_EXTRAS: Final = (
    "--health needs the http and metrics extras: pip install 'trio-supervise[http,metrics]'"
)


@final
class UsageError(Exception):
    """A bad command line, environment or target: exit code 2 with this message."""


# ----------------------------------------------------------------------------- values


def seconds(text: str, *, positive: bool) -> float:
    """A number of seconds, ``>= 0`` or (``positive``) ``> 0``, for every command's options."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number of seconds: {text!r}") from None
    # One message for the whole rule: "-3" and "0" are refused in the same words.
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        rule = "> 0" if positive else ">= 0"
        raise ValueError(f"must be a finite number {rule} (got {text!r})")
    return value


def integer(text: str, what: str, low: int, high: int | None, hint: str = "") -> int:
    """An int in ``[low, high]`` (no upper bound for None); ``what`` names it in the error."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"not {what}: {text!r}") from None
    if value < low or (high is not None and value > high):
        rule = f"must be >= {low}" if high is None else f"must be in [{low}, {high}]"
        raise ValueError(f"{rule} (got {value}){hint}")
    return value


def port(text: str) -> int:
    """A TCP port, 0 for a free one."""
    return integer(text, "a port number", 0, 65535, "; 0 picks a free port")


def _address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT`` or ``PORT`` (127.0.0.1)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.strip().lstrip("+-").isdigit():
        raise ValueError(f"must be HOST:PORT or PORT (got {text!r})")
    try:
        return host, port(port_text)
    except ValueError as exc:
        raise ValueError(f"port {exc}") from None


def _choice(choices: Sequence[str], *, upper: bool) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.upper() if upper else text.lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)} (got {text!r})")
        return value

    return parse


@final
@attrs.frozen
class Option:
    """One option of ``run``: its parser and default (None: not set)."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str

    @property
    def variable(self) -> str:
        return ENV_PREFIX + self.name.upper().replace("-", "_")


OPTIONS: Final = (
    Option(
        "shutdown-deadline",
        lambda text: seconds(text, positive=True),
        30.0,
        "seconds the whole shutdown may take (default 30)",
    ),
    Option(
        "drain-delay",
        lambda text: seconds(text, positive=False),
        0.0,
        "seconds to keep serving after SIGTERM while readiness says 503 (default 0)",
    ),
    Option(
        "health",
        _address,
        None,
        "serve /health/live, /health/ready and /metrics on HOST:PORT (PORT: 127.0.0.1)",
    ),
    Option(
        "observer",
        _address,
        None,
        "serve the observer (a live page of the tree) on HOST:PORT (PORT: 127.0.0.1);"
        f" actions need ${TOKEN_VARIABLE}",
    ),
    Option("log-level", _choice(LOG_LEVELS, upper=True), "INFO", "least level logged"),
    Option("log-format", _choice(LOG_FORMATS, upper=False), "logfmt", "text, logfmt or json"),
)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``run``: each defaults to None, so that the environment can fill it."""
    for option in OPTIONS:
        parser.add_argument(
            f"--{option.name}",
            dest=option.name.replace("-", "_"),
            metavar=option.variable.removeprefix(ENV_PREFIX),
            default=None,
            help=f"{option.help}; or ${option.variable}",
        )


def resolve_options(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    """The options' values: the command line over the environment over the defaults.

    Raises:
      UsageError: a bad value (naming the option or the variable) or an unknown variable.
    """
    known = {option.variable for option in OPTIONS} | CHILD_VARIABLES | {TOKEN_VARIABLE}
    unknown = sorted(key for key in environ if key.startswith(ENV_PREFIX) and key not in known)
    if unknown:
        names = ", ".join(sorted(option.variable for option in OPTIONS))
        raise UsageError(f"unknown variable {unknown[0]}; trio-supervise run reads {names}")
    values: dict[str, Any] = {}
    for option in OPTIONS:
        given = getattr(args, option.name.replace("-", "_"))
        source, text = (
            (f"--{option.name}", given)
            if given is not None
            else (
                option.variable,
                environ.get(option.variable),
            )
        )
        if text is None:
            values[option.name] = option.default
            continue
        try:
            values[option.name] = option.parse(text)
        except ValueError as exc:
            raise UsageError(f"{source}: {exc}") from None
    token = environ.get(TOKEN_VARIABLE)
    if token is not None and not token.strip():
        raise UsageError(f"{TOKEN_VARIABLE} is empty; unset it for a read-only observer")
    if token is not None and values["observer"] is None:
        raise UsageError(f"{TOKEN_VARIABLE} is set but there is no --observer to use it")
    values["observer-token"] = token
    if values["drain-delay"] >= values["shutdown-deadline"]:
        raise UsageError(
            f"--drain-delay ({values['drain-delay']:g}) must be shorter than"
            f" --shutdown-deadline ({values['shutdown-deadline']:g}): the shutdown must"
            " still stop the tree after the delay"
        )
    return values


# ----------------------------------------------------------------------------- target


def load_spec(target: str) -> SupervisorSpec:
    """The ``SupervisorSpec`` that ``MODULE:ATTR`` names.

    Raises:
      UsageError: for a malformed target, a module that does not import, a missing
        attribute, or one that is neither a spec nor a function returning one.
    """
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise UsageError(
            f"MODULE:ATTR: expected a module and a name such as 'service.main:spec'"
            f" (got {target!r})"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as python -m does
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise UsageError(
                f"MODULE:ATTR: no module named {exc.name!r} (looked for {module_name!r} from"
                f" {os.getcwd()}); run from the directory that holds it, or install it"
            ) from None
        raise UsageError(_raised(f"importing {module_name!r}", exc)) from None
    except Exception as exc:
        raise UsageError(_raised(f"importing {module_name!r}", exc)) from None
    found: object = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise UsageError(
                f"MODULE:ATTR: module {module_name!r} has no attribute {attribute!r}"
            ) from None
    if isinstance(found, SupervisorSpec):
        return found
    if not callable(found):
        raise UsageError(_not_a_spec(target, found))
    try:
        made = found()
    except SpecError as exc:
        raise UsageError(f"{target}: {exc}") from None
    except TypeError as exc:
        raise UsageError(
            f"{target}: calling it with no arguments failed ({exc}); ATTR must be a"
            " SupervisorSpec or a function with no arguments that returns one"
        ) from None
    except Exception as exc:
        raise UsageError(_raised(f"calling {target}()", exc)) from None
    if not isinstance(made, SupervisorSpec):
        raise UsageError(_not_a_spec(f"{target}()", made))
    return made


def _raised(what: str, exc: BaseException) -> str:
    return f"MODULE:ATTR: {what} raised {type(exc).__name__}: {exc}"


def _not_a_spec(what: str, value: object) -> str:
    return (
        f"MODULE:ATTR: {what} is {type(value).__name__} {value!r:.80}, not a SupervisorSpec;"
        " name a SupervisorSpec or a function with no arguments that returns one"
    )


def render_spec(spec: SupervisorSpec, depth: int = 0) -> str:
    """The spec as indented text, as ``tree.render()`` shows a running tree."""
    backoff = spec.backoff
    how = f"{spec.strategy.value}, {spec.max_restarts} restarts / {spec.max_seconds:g} s"
    if backoff is not None:
        how += f", backoff {backoff.initial:g}-{backoff.maximum:g} s"
    lines = [f"{'  ' * depth}{spec.name} (supervisor, {how})"]
    for child in spec.children:
        if isinstance(child, SupervisorSpec):
            lines.append(render_spec(child, depth + 1))
        else:
            lines.append(f"{'  ' * (depth + 1)}{child.name} ({_describe_child(child)})")
    return "\n".join(lines)


def _describe_child(child: ChildSpec) -> str:
    kind = "process" if child.is_process else "service" if child.is_service else "worker"
    timeout = child.shutdown_timeout
    stop = "no limit" if timeout is None else f"{timeout:g} s"
    return f"{kind}, {child.restart.value}, shutdown_timeout {stop}"


# ------------------------------------------------------------------------------ run


def run_target(spec: SupervisorSpec, values: Mapping[str, Any]) -> int:
    """Run ``spec`` as ``run()`` does, with the health endpoints and drain delay asked for."""
    hooks: list[ShutdownHook] = []
    drain = DrainDelay(values["drain-delay"]) if values["drain-delay"] > 0 else None
    if drain is not None:
        hooks.append(drain.hook)
    on_start: Callable[[SupervisorTree], object] | None = None
    if values["health"] is not None:
        spec, server_hook, on_start = _with_health(spec, values["health"], drain)
        hooks.append(server_hook)
    if values["observer"] is not None:
        spec, server_hook = _with_observer(spec, values["observer"], values["observer-token"])
        hooks.append(server_hook)
    return run(spec, hooks=hooks, shutdown_deadline=values["shutdown-deadline"], on_start=on_start)


def _with_health(
    spec: SupervisorSpec, address: tuple[str, int], drain: DrainDelay | None
) -> tuple[SupervisorSpec, ShutdownHook, Callable[[SupervisorTree], object]]:
    try:
        from .integrations.http import HTTPServer, health_app
        from .integrations.metrics import TreeMetrics
    except ImportError as exc:
        raise UsageError(f"{_HEALTH_EXTRAS} ({exc})") from None
    metrics = TreeMetrics()
    host, port = address
    server = HTTPServer(health_app(metrics=metrics, drain=drain), host=host, port=port, drain=drain)
    return (*_served_last(spec, server, HEALTH_CHILD, "health"), metrics.attach)


def _with_observer(
    spec: SupervisorSpec, address: tuple[str, int], token: str | None
) -> tuple[SupervisorSpec, ShutdownHook]:
    try:
        from .integrations.http import HTTPServer
        from .integrations.observer import observer_app
    except ImportError as exc:
        raise UsageError(
            f"--observer needs the http extra: pip install 'trio-supervise[http]' ({exc})"
        ) from None
    host, port = address
    # No drain delay: the observer is for people, not behind a load balancer, and it
    # should show the shutdown for as long as it can.
    server = HTTPServer(observer_app(token=token), host=host, port=port)
    return _served_last(spec, server, OBSERVER_CHILD, "observer")


def _served_last(
    spec: SupervisorSpec, server: HTTPServer, child: str, option: str
) -> tuple[SupervisorSpec, ShutdownHook]:
    """``spec`` with ``server`` as the root's last child, and the hook that closes it."""
    try:
        extended = attrs.evolve(spec, children=[*spec.children, server.child_spec(child)])
    except SpecError as exc:
        raise UsageError(f"--{option}: {exc}") from None
    return extended, server.shutdown_hook(f"{option}: stop accepting")
