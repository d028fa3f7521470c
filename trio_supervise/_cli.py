"""The ``trio-supervise`` command line; ``trio-supervise demo`` runs the demo service."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

import trio

from ._cli_export import kubernetes, kubernetes_yaml, systemd
from ._cli_run import (
    TOKEN_VARIABLE as OBSERVER_TOKEN,
)
from ._cli_run import (
    UsageError,
    add_run_options,
    integer,
    load_spec,
    port,
    render_spec,
    resolve_options,
    run_target,
    seconds,
)
from ._cli_tree import TreeError, base_url, show
from ._logs import configure_logging, configure_worker_logging
from ._signals import HeldSignals
from ._version import __version__

_DEMO_EXTRAS = (
    "the demo needs the http, websocket and metrics extras: pip install"
    " 'trio-supervise[http,websocket,metrics]' (add postgres for a PostgreSQL --db)"
)


_DEMO_DESCRIPTION = """\
Run the demo service until SIGTERM or Ctrl+C, then shut it down gracefully and print
the shutdown report. Once it is up it prints one line:

  ready http=http://HOST:PORT ws=ws://HOST:PORT/ws

HTTP:      POST /notes {"text": "..."}, GET /notes?after=ID&limit=N, GET /notes/{id},
           GET /work?seconds=S, GET /tree, GET /health/live, GET /health/ready, GET /metrics
WebSocket: /ws (hello, a message per new note, the shutdown notice, close 1001)
Logs:      stderr, one line per event
"""


_T = TypeVar("_T")


def _argument(parse: Callable[[str], _T]) -> Callable[[str], _T]:
    """An argparse type from a parser of ``_cli_run``: its ValueError becomes argparse's."""

    def typed(text: str) -> _T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return typed


_port = _argument(port)
# The demo checks the upper bound (DemoConfig), naming --workers.
_workers = _argument(partial(integer, what="a number of processes", low=1, high=None))
_replicas = _argument(partial(integer, what="a number of pods", low=1, high=None))
_seconds = _argument(partial(seconds, positive=False))
_positive_seconds = _argument(partial(seconds, positive=True))


#: The environment variable the demo takes its database from when no option gives one.
DB_ENV = "DATABASE_URL"


def _dsn_file(text: str) -> str:
    """The ``--db`` value kept in a file (a mounted secret), so that ``ps`` never shows it."""
    try:
        with open(text, encoding="utf-8") as file:
            value = file.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text!r}: {exc}") from None
    if not value:
        raise argparse.ArgumentTypeError(
            f"{text!r} is empty; write the SQLite path or postgresql:// DSN in it"
        )
    return value


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(
        prog="trio-supervise", description="Supervision trees and graceful shutdown for Trio."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser(
        "run",
        help="run the supervision tree MODULE:ATTR names until SIGTERM or Ctrl+C",
        description=(
            "Run the SupervisorSpec that MODULE:ATTR names (or that the function it names"
            " returns) as trio_supervise.run() does. Every option can also come from the"
            " environment as TRIO_SUPERVISE_<OPTION> (the command line wins)."
        ),
    )
    run_parser.add_argument("target", metavar="MODULE:ATTR")
    add_run_options(run_parser)
    export = commands.add_parser(
        "export", help="print Kubernetes or systemd artifacts whose stop budget fits the spec"
    )
    kinds = export.add_subparsers(dest="kind", required=True)
    kube = kinds.add_parser("kubernetes", help="a Deployment and a PodDisruptionBudget (YAML)")
    kube.add_argument("target", metavar="MODULE:ATTR")
    kube.add_argument("--image", required=True, help="the container image to run")
    kube.add_argument("--replicas", type=_replicas, default=2, help="pods (default 2)")
    kube.add_argument("--port", type=_port, default=None, help="the service's own port")
    add_run_options(kube)
    unit = kinds.add_parser("systemd", help="a Type=notify service unit")
    unit.add_argument("target", metavar="MODULE:ATTR")
    unit.add_argument(
        "--watchdog",
        type=_positive_seconds,
        default=None,
        help="WatchdogSec: the tree then pings every half of it",
    )
    add_run_options(unit)
    check = commands.add_parser(
        "check", help="validate the spec MODULE:ATTR names and print its tree"
    )
    check.add_argument("target", metavar="MODULE:ATTR")
    tree = commands.add_parser(
        "tree",
        help="print the live tree of a running service from its observer (--observer)",
        description=(
            "Print the tree of the service whose observer URL serves (trio-supervise run"
            " --observer, or the demo's --observer-port): name, kind, state, restarts,"
            " health and last error of every child."
        ),
    )
    tree.add_argument("url", type=_argument(base_url), metavar="URL")
    tree.add_argument("--watch", action="store_true", help="redraw it on every event until Ctrl+C")
    demo = commands.add_parser(
        "demo",
        help="run the demo service (notes over HTTP, news over WebSocket) until Ctrl+C",
        description=_DEMO_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    demo.add_argument(
        "--port", type=_port, default=8000, help="HTTP port (default 8000; 0 picks a free one)"
    )
    demo.add_argument(
        "--ws-port",
        type=_port,
        default=8001,
        help="WebSocket port (default 8001; 0 picks a free one)",
    )
    database = demo.add_mutually_exclusive_group()
    database.add_argument(
        "--db",
        help=(
            f"a SQLite file path or a postgresql:// DSN (default: ${DB_ENV}, else demo.db);"
            f" a DSN with a password belongs in --db-file or ${DB_ENV}, which ps does not show"
        ),
    )
    database.add_argument(
        "--db-file",
        type=_dsn_file,
        metavar="PATH",
        help="read the --db value from this file, such as a mounted secret",
    )
    demo.add_argument(
        "--workers",
        type=_workers,
        default=1,
        help=(
            "HTTP worker processes sharing the HTTP port (default 1: HTTP served in this"
            " process); the parent keeps WebSocket, the workers of the tree and --admin-port"
        ),
    )
    demo.add_argument(
        "--admin-port",
        type=_port,
        default=8002,
        help="with --workers N > 1: the parent's /tree, /metrics and health (default 8002)",
    )
    demo.add_argument(
        "--observer-port",
        type=_port,
        default=None,
        help=(
            "serve the observer, a live page of the tree, on this port (0 picks a free one;"
            " default: none); actions need $TRIO_SUPERVISE_OBSERVER_TOKEN"
        ),
    )
    demo.add_argument(
        "--observer-host",
        default="127.0.0.1",
        help="the address the observer binds (default 127.0.0.1: this machine only)",
    )
    demo.add_argument("--worker-fd", type=int, default=None, help=argparse.SUPPRESS)
    demo.add_argument(
        "--drain-delay",
        type=_seconds,
        default=5.0,
        help="seconds to keep serving after SIGTERM while /health/ready says 503 (default 5)",
    )
    demo.add_argument(
        "--shutdown-deadline",
        type=_positive_seconds,
        default=20.0,
        help=(
            "seconds the whole shutdown may take (default 20: with the 5 s hard-exit grace it"
            " fits Kubernetes' default 30 s grace period); requests still running near it are"
            " cut so that the database is closed in time"
        ),
    )
    demo.add_argument(
        "--flaky-period",
        type=_positive_seconds,
        default=3.0,
        help="seconds between the flaky worker's crashes (default 3)",
    )
    demo.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="least level of the log lines on stderr (default INFO)",
    )
    demo.add_argument(
        "--log-format",
        default="logfmt",
        choices=["logfmt", "json"],
        help="log lines as key=value pairs (default) or JSON objects",
    )
    return parser, demo


def main(argv: Sequence[str] | None = None) -> int:
    """The console script ``trio-supervise`` (and ``python -m trio_supervise``)."""
    parser, demo_parser = _parser()
    args = parser.parse_args(argv)
    if args.command in ("run", "check"):
        return _run_or_check(args)
    if args.command == "export":
        return _export(args)
    if args.command == "tree":
        return _tree(args)
    try:
        # Imported only now: the extras it needs are not dependencies of the package.
        demo = importlib.import_module("trio_supervise._demo")
    except ImportError as exc:
        print(f"trio-supervise demo: {_DEMO_EXTRAS} ({exc})", file=sys.stderr)
        return 2
    try:
        config = demo.DemoConfig(
            host=args.host,
            port=args.port,
            ws_port=args.ws_port,
            db=args.db or args.db_file or os.environ.get(DB_ENV) or "demo.db",
            drain_delay=args.drain_delay,
            shutdown_deadline=args.shutdown_deadline,
            flaky_period=args.flaky_period,
            workers=args.workers,
            admin_port=args.admin_port,
            observer_port=args.observer_port,
            observer_host=args.observer_host,
            observer_token=os.environ.get(OBSERVER_TOKEN) or None,
            worker_fd=args.worker_fd,
        )
    except ValueError as exc:
        demo_parser.error(str(exc))
    configure = configure_logging if args.worker_fd is None else configure_worker_logging
    configure(args.log_level, args.log_format, expected=(demo.DemoCrash,))
    try:
        # As run() does: a signal between the demo's own handlers (while its database
        # opens) and serve()'s is recorded, not lost, and never kills the process mid-start;
        # serve() acts on it.
        with HeldSignals(ignore_after_stop=True):
            code: int = trio.run(partial(demo.run_demo, config))
    except demo.DemoStartError as exc:
        print(f"trio-supervise demo: {exc}", file=sys.stderr)
        return 1
    return code


def _run_or_check(args: argparse.Namespace) -> int:
    if args.command == "check":
        try:
            print(render_spec(load_spec(args.target)))
        except UsageError as exc:
            print(f"trio-supervise check: {exc}", file=sys.stderr)
            return 2
        return 0
    # From here on a SIGTERM (while the user's module imports, say) is a shutdown that run()
    # acts on, never a death with 143.
    with HeldSignals(ignore_after_stop=True):
        try:
            values = resolve_options(args, os.environ)
            spec = load_spec(args.target)
            configure_logging(values["log-level"], values["log-format"])
            return run_target(spec, values)
        except UsageError as exc:
            print(f"trio-supervise run: {exc}", file=sys.stderr)
            return 2


def _tree(args: argparse.Namespace) -> int:
    try:
        show(args.url, watch=args.watch, out=sys.stdout)
    except TreeError as exc:
        print(f"trio-supervise tree: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass  # --watch ends with Ctrl+C
    except BrokenPipeError:
        # The reader went away (| head): nothing more to say, and no traceback at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _export(args: argparse.Namespace) -> int:
    try:
        values = resolve_options(args, os.environ)
        spec = load_spec(args.target)
        if args.kind == "kubernetes":
            documents = kubernetes(
                spec, args.target, values, image=args.image, replicas=args.replicas, port=args.port
            )
            print(kubernetes_yaml(documents), end="")
        else:
            print(systemd(spec, args.target, values, watchdog=args.watchdog), end="")
    except UsageError as exc:
        print(f"trio-supervise export {args.kind}: {exc}", file=sys.stderr)
        return 2
    return 0
