"""The demo service behind ``trio-supervise demo``: notes over HTTP, news over WebSocket.

It is built only from the package's public API (``trio_supervise`` and its integrations),
as a user's service would be:

* ``HTTPServer`` serving a Starlette app wrapped in ``health_app`` (``/health/live``,
  ``/health/ready``, ``/metrics`` from ``TreeMetrics``);
* ``WebSocketServer`` at ``/ws`` on its own port, greeting each client with
  ``{"type": "hello"}`` and broadcasting ``{"type": "note", "id": N}`` for each new note;
* a database from ``open_database`` (SQLite file or PostgreSQL DSN) holding
  ``notes(id INTEGER PRIMARY KEY, text TEXT NOT NULL)``, its ``monitor()`` running beside
  the tree so that readiness follows the database's availability;
* workers under nested supervisors, one of them crashing on purpose so that restarts show in
  ``/tree`` and ``/metrics``;
* ``trio_supervise.serve()``, the async twin of ``run()``, for the signals, the exit code and
  the hard exit: the database is opened first (Ctrl+C or SIGTERM meanwhile stops the start),
  then the tree is served.

The tree::

    demo (one_for_one)
      startup    temporary: attaches the metrics, prints the ready line, returns
      workers    (one_for_one, backoff 1 s doubling to 5 s: rides out a database outage)
        notes-counter  counts the notes every few seconds and logs the count
        compaction     a singleton: on one replica at a time (two demos on one database),
                       records its turn in ``compactions`` and checkpoints the database
                       every ``compact_every`` seconds; the lock is the database's own
                       (``compaction_lock``), and a stopped or killed holder hands over
        flaky          (one_for_one, backoff)
          worker       crashes every ``flaky_period`` seconds, on purpose
      websocket  WebSocketServer
      http       HTTPServer

With ``--workers N`` (N > 1) HTTP is served by N worker processes instead, and ``http`` is
their supervisor; the parent's own ``/tree``, ``/metrics`` and health move to ``--admin-port``
(see ``_demo_workers``).

Shutdown (SIGTERM or Ctrl+C), band by band: the drain delay (``/health/ready`` answers 503,
everything is still served), then HTTP and WebSocket stop accepting; the ``"supervisor"``
hook stops the children in reverse start order: ``http`` (the requests in flight finish,
within ``DemoConfig.graceful_timeout``), ``websocket`` (each client gets
``{"type": "server_shutdown"}`` and a close with 1001), the workers; then the database is
flushed and closed. The report is printed as a table and the process exits 0 when every
step was ``ok``.

HTTP API (every error is JSON ``{"error": "..."}`` naming what was wrong; only malformed
HTTP, which never reaches the app, gets hypercorn's own empty 400, 431 or 501):

* ``POST /notes`` with ``{"text": "..."}`` as ``application/json`` (or no type): 201
  ``{"id": N}`` once the row is committed, then the broadcast. 400 for an empty body, one
  that is not UTF-8 (a BOM is skipped) or not strict JSON (no NaN or Infinity, integers of
  at most ``MAX_JSON_INT_DIGITS`` digits), one cut short, or a repeated ``Content-Type``;
  413 for a body over ``MAX_BODY_BYTES``; 415 for another type or charset; 422 for a key
  repeated in an object, a body that is not an object or a ``text`` that is missing, not a
  string, empty, longer than ``MAX_NOTE_CHARS`` characters (422, not 413: the body is
  fine, the field is not) or not storable (NUL characters, lone surrogates). Other keys
  are ignored. A body still arriving ``BODY_TIMEOUT`` seconds after the head gets 408.
* ``GET /notes?after=ID&limit=N``: a page of notes, oldest first: 200 ``{"notes": [{"id",
  "text"}...], "next": ID}`` with the notes after id ``after`` (default 0), at most ``limit``
  (default ``PAGE_SIZE``, at most ``MAX_PAGE_SIZE``); ``next`` is the ``after`` of the next
  page, None when this page is not full (a full last page is followed by an empty one).
  422 for a bad or repeated parameter.
* ``GET /notes/{id}``: 200 ``{"id", "text"}``, 404 when there is no such note, 422 for an id
  that is not a positive integer.
* ``GET /work?seconds=S``: sleeps S seconds (a decimal number, 0 <= S <= ``MAX_WORK_SECONDS``),
  then 200 ``{"slept": S}``; 422 for a missing or bad ``seconds``.
* ``GET /cpu?n=N``: pure Python that holds the GIL (``n`` steps, default ``CPU_N``, at most
  ``MAX_CPU_N``), then 200 ``{"n", "sum", "pid"}``: the load ``--workers`` spreads over cores.
* ``GET /tree``: the live tree (name, path, kind, state, restarts, last error, children,
  and for the singleton ``lock_holder``, the replica running it),
  the health, whether the shutdown runs, the HTTP requests in flight (this one included) and
  the open WebSocket connections.
* Unknown paths get 404 (a trailing slash makes an unknown path), wrong methods 405, both
  as JSON; a WebSocket handshake on the HTTP port gets 404 naming the WebSocket URL.
* A request the database cannot serve now (``DatabaseUnavailable``: PostgreSQL down or the
  connection lost, SQLite locked by another process past its busy timeout) gets 503
  ``{"error": "database unavailable: <reason>; retry later"}`` with ``Retry-After``; while
  the database is unavailable (as its calls and a ping every ``DATABASE_PING_EVERY``
  seconds find it) ``/health/ready`` answers 503 with ``"database unavailable: <reason>"``
  and ``/health/live`` stays 200.

WebSocket ``/ws``: ``{"type": "hello"}`` on connect, ``{"type": "note", "id": N}`` per new
note, ``{"type": "server_shutdown"}`` and a close with 1001 at shutdown. A client may send
``{"type": "ping"}`` (answered ``{"type": "pong"}``); anything else is answered with
``{"type": "error", "message": ...}`` and the connection stays open. Other paths: 404.
A client that does not read its notes is closed with 1008 once it is 32 notes and a
socket buffer behind (``WebSocketServer``'s ``broadcast_queue``, ``broadcast_timeout``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Any, Final, TextIO, final

import attrs
import trio
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from trio_websocket import WebSocketConnection

from trio_supervise import (
    Backoff,
    ChildInfo,
    ChildSpec,
    ChildState,
    DrainDelay,
    Lock,
    Restart,
    ShutdownHook,
    SupervisionError,
    SupervisorSpec,
    SupervisorTree,
    current_child,
    current_tree,
    serve,
)
from trio_supervise.integrations.database import (
    Database,
    DatabaseError,
    DatabaseUnavailable,
    PostgresDatabase,
    SQLiteDatabase,
    open_database,
)
from trio_supervise.integrations.http import READY_PATH, HTTPServer, health_app
from trio_supervise.integrations.locks import FileLock, PostgresLock, default_holder
from trio_supervise.integrations.metrics import TreeMetrics
from trio_supervise.integrations.observer import observer_app
from trio_supervise.integrations.websocket import WebSocketServer
from trio_supervise.testing import MemoryLock

from ._demo_workers import open_listener, workers_spec

__all__ = [
    "DATABASE_PING_EVERY",
    "DATABASE_RETRY_AFTER",
    "MAX_BODY_BYTES",
    "MAX_NOTE_CHARS",
    "MAX_WORK_SECONDS",
    "BadInput",
    "DemoConfig",
    "DemoCrash",
    "DemoService",
    "DemoStartError",
    "parse_note",
    "parse_note_id",
    "parse_seconds",
    "run_demo",
]

logger = logging.getLogger("trio_supervise.demo")

#: The most characters a note's text may have.
MAX_NOTE_CHARS: Final = 10_000
#: The largest request body ``POST /notes`` reads: room for ``MAX_NOTE_CHARS`` characters
#: even when each is written as a JSON surrogate pair escape (12 bytes).
MAX_BODY_BYTES: Final = 256 * 1024
#: Seconds a request's body may take to arrive (``HTTPServer(body_timeout=...)``).
BODY_TIMEOUT: Final = 10.0
#: The longest ``GET /work`` may be asked to take.
MAX_WORK_SECONDS: Final = 30.0
#: Seconds the WebSocket server gives the notices and close handshakes at shutdown.
WEBSOCKET_CLOSE_TIMEOUT: Final = 2.0
#: Seconds a client is told to wait (``Retry-After``) when the database is unavailable.
DATABASE_RETRY_AFTER: Final = 5
#: Seconds between two pings of the database, which keep readiness current without traffic.
DATABASE_PING_EVERY: Final = 1.0
#: Seconds of the shutdown deadline kept for what follows the HTTP drain (the WebSocket
#: goodbyes, the workers, the database's flush and close).
SHUTDOWN_RESERVE: Final = WEBSOCKET_CLOSE_TIMEOUT + 1.0

#: The most HTTP worker processes ``--workers`` starts.
MAX_WORKERS: Final = 64
#: The largest ``n`` of ``GET /cpu``, and its default.
MAX_CPU_N: Final = 10_000_000
CPU_N: Final = 100_000
#: Seconds between two looks of the parent of workers at the notes table.
NOTE_FEED_EVERY: Final = 0.2

HELLO: Final = '{"type": "hello"}'
NOTICE: Final = '{"type": "server_shutdown"}'
WS_PATH: Final = "/ws"

# Migration 1; never edit it once released (``Database.migrate`` checks its checksum).
_NOTES_TABLE: Final = "CREATE TABLE IF NOT EXISTS notes (id {auto_id}, text TEXT NOT NULL)"
# Migration 2: one row per turn of the compaction singleton (``started``: Unix time).
_COMPACTIONS_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS compactions"
    " (id {auto_id}, replica TEXT NOT NULL, started DOUBLE PRECISION NOT NULL)"
)
#: The PostgreSQL advisory lock key of the compaction singleton.
COMPACTION_KEY: Final = "trio-supervise-demo:compaction"
# SQLite's and PostgreSQL's (BIGINT) largest integer: a larger id names no note.
_MAX_ID: Final = 2**63 - 1
_MAX_ID_DIGITS: Final = len(str(_MAX_ID))
# The most digits a JSON integer in a request may have: far below int()'s own limit, whose
# error would tell the client about sys.set_int_max_str_digits().
MAX_JSON_INT_DIGITS: Final = 100
_DIGITS: Final = re.compile(r"[0-9]+")
# A decimal number in ASCII: 2, -1, 0.5, .5, 1e1.
_DECIMAL: Final = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
# What JSON counts as whitespace (str.strip() would take Unicode spaces too).
_JSON_WHITESPACE: Final = " \t\r\n"
# How often the startup child looks at the root's state while it waits for it to run.
_STARTUP_POLL: Final = 0.05


class DemoCrash(Exception):
    """What the demo's flaky worker raises on purpose."""


class DemoStartError(Exception):
    """The demo cannot start: its database cannot be opened or set up."""


# ------------------------------------------------------------------------ configuration


def _check_number(name: str, value: object, *, low: float, allow_low: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds (got {value!r})")
    if value < low or (value == low and not allow_low):
        sign = ">=" if allow_low else ">"
        raise ValueError(f"{name} must be {sign} {low:g} seconds (got {value!r})")
    return float(value)


def _check_port(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
        raise ValueError(f"{name} must be a TCP port in [0, 65535] (got {value!r}); 0 picks one")
    return value


@final
@attrs.frozen
class DemoConfig:
    """The demo's settings, as ``trio-supervise demo`` takes them.

    Attributes:
      host: the address both servers bind.
      port: the HTTP port; 0 picks a free one.
      ws_port: the WebSocket port; 0 picks a free one.
      db: a SQLite path or a PostgreSQL DSN (see ``open_database``).
      drain_delay: seconds to keep serving after SIGTERM while readiness says 503.
      shutdown_deadline: seconds the whole shutdown may take; must exceed ``drain_delay``.
      flaky_period: seconds the flaky worker runs before each crash.
      count_every: seconds between two counts of the notes.
      compact_every: seconds between two checkpoints of the compaction singleton.
      workers: HTTP worker processes; 1 serves HTTP in this process (see ``_demo_workers``).
      admin_port: with workers, the parent's own port for ``/tree``, ``/metrics`` and health.
      observer_port: the observer's port (a live page of the tree, on ``observer_host``);
        None for no observer, 0 picks a free one.
      observer_host: the address the observer binds: loopback unless asked otherwise.
      observer_token: the token that allows the observer's actions; None: read-only.
      worker_fd: set in a worker process: the listening socket it inherited.

    Raises:
      ValueError: a value out of range, naming the option and the rule.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    ws_port: int = 8001
    db: str = "demo.db"
    drain_delay: float = 5.0
    shutdown_deadline: float = 20.0
    flaky_period: float = 3.0
    count_every: float = 10.0
    compact_every: float = 30.0
    workers: int = 1
    admin_port: int = 8002
    observer_port: int | None = None
    observer_host: str = "127.0.0.1"
    observer_token: str | None = None
    worker_fd: int | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError(f"--host must be a host name or IP address (got {self.host!r})")
        _check_port("--port", self.port)
        _check_port("--ws-port", self.ws_port)
        if not isinstance(self.db, str) or not self.db.strip():
            raise ValueError(f"--db must be a SQLite path or a PostgreSQL DSN (got {self.db!r})")
        _check_number("--drain-delay", self.drain_delay, low=0, allow_low=True)
        _check_number("--shutdown-deadline", self.shutdown_deadline, low=0, allow_low=False)
        _check_number("--flaky-period", self.flaky_period, low=0, allow_low=False)
        _check_number("count_every", self.count_every, low=0, allow_low=False)
        _check_number("compact_every", self.compact_every, low=0, allow_low=False)
        if not isinstance(self.workers, int) or not 1 <= self.workers <= MAX_WORKERS:
            raise ValueError(f"--workers must be within [1, {MAX_WORKERS}] (got {self.workers!r})")
        _check_port("--admin-port", self.admin_port)
        if self.observer_port is not None:
            _check_port("--observer-port", self.observer_port)
        if self.observer_token is not None and not self.observer_token.strip():
            # The same words as trio-supervise run's; observer_app would refuse it later.
            raise ValueError(
                "TRIO_SUPERVISE_OBSERVER_TOKEN is empty; unset it for a read-only observer"
            )
        if self.worker_fd is not None and (
            not isinstance(self.worker_fd, int) or self.worker_fd < 0
        ):
            raise ValueError(f"--worker-fd must be a file descriptor (got {self.worker_fd!r})")
        if self.shutdown_deadline <= self.drain_delay:
            raise ValueError(
                f"--shutdown-deadline ({self.shutdown_deadline:g}) must be longer than"
                f" --drain-delay ({self.drain_delay:g}): the shutdown has to drain the"
                " requests and close the database after the delay"
            )

    @property
    def graceful_timeout(self) -> float:
        """Seconds in-flight HTTP requests may take once the listeners closed.

        What is left of the deadline after the drain delay, less ``SHUTDOWN_RESERVE`` for
        the steps after the HTTP drain (at least half of it): a request still running then
        is cut, so that the WebSocket goodbyes and the database's close still happen.
        """
        left = self.shutdown_deadline - self.drain_delay
        return max(left - SHUTDOWN_RESERVE, left / 2)


# ------------------------------------------------------------------------------ logging


def _log(level: int, message: str, *args: object, kind: str) -> None:
    logger.log(level, message, *args, extra={"kind": kind, "path": _child_path()})


def _child_path() -> str:
    """The path of the supervised child logging; ``""`` for the demo's own start and end."""
    try:
        return current_child().path
    except RuntimeError:  # not in a child: opening the database, printing the report
        return ""


# ------------------------------------------------------------------------- validation


class BadInput(Exception):
    """A request the demo refuses: the status and the message of its JSON answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    # h11 let through only ASCII digits, at most 20 of them.
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadInput(
            413, f"request body too large: {declared} bytes, the limit is {MAX_BODY_BYTES}"
        )
    body = bytearray()
    try:
        async with aclosing(request.stream()) as chunks:
            async for chunk in chunks:
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise BadInput(
                        413,
                        f"request body too large: more than the limit of {MAX_BODY_BYTES} bytes",
                    )
    except ClientDisconnect:
        # The body never came whole: the client closed, or sent a bad chunk (hypercorn has
        # answered 400 then). A client's mistake, not a server error: Starlette would answer
        # 500 and hypercorn log it at ERROR with a traceback. Nobody reads this answer.
        raise BadInput(
            400, "request body incomplete: the connection ended before the whole body came"
        ) from None
    return bytes(body)


def _json_int(text: str) -> int:
    digits = len(text) - text.startswith("-")
    if digits > MAX_JSON_INT_DIGITS:
        raise BadInput(
            400,
            f"request body is not valid JSON: a number of {digits} digits; at most"
            f" {MAX_JSON_INT_DIGITS} are taken",
        )
    return int(text)


def _json_constant(name: str) -> float:
    # json.loads() takes NaN, Infinity and -Infinity, which JSON does not have.
    raise BadInput(400, f"request body is not valid JSON: {name} is not a JSON number")


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads() keeps the last of a repeated key; another parser may keep the first.
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            shown = json.dumps(key if len(key) <= 60 else key[:60] + "...", ensure_ascii=False)
            raise BadInput(
                422, f"request body repeats the key {shown} in one object; give each key once"
            )
        seen.add(key)
    return dict(pairs)


def parse_note(body: bytes) -> str:
    """The text of a ``POST /notes`` body.

    The body is UTF-8 (a byte order mark is skipped), strict JSON (no ``NaN``, no
    ``Infinity``, no key twice in one object, integers of at most ``MAX_JSON_INT_DIGITS``
    digits).

    Raises:
      BadInput: 400 when the body is empty, not UTF-8 or not JSON; 422 when it repeats a
        key, is not an object, or its ``text`` is missing, not a string, empty, too long or
        not storable.
    """
    try:
        # Not json.loads(bytes), which also takes UTF-16 and UTF-32, and surrogates.
        document = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInput(
            400,
            f"request body is not valid UTF-8: {exc.reason} at byte {exc.start}; send JSON"
            " in UTF-8",
        ) from None
    if not document.strip(_JSON_WHITESPACE):
        raise BadInput(400, 'request body is empty; send JSON such as {"text": "hello"}')
    try:
        payload = json.loads(
            document,
            parse_int=_json_int,
            parse_constant=_json_constant,
            object_pairs_hook=_json_object,
        )
    except RecursionError:
        raise BadInput(400, "request body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError
        raise BadInput(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadInput(
            422,
            f'request body must be a JSON object such as {{"text": "hello"}}'
            f" (got a JSON {_json_type(payload)})",
        )
    if "text" not in payload:
        raise BadInput(422, 'field "text" is missing; send {"text": "..."}')
    text = payload["text"]
    if not isinstance(text, str):
        raise BadInput(422, f'field "text" must be a string (got a JSON {_json_type(text)})')
    if not text:
        raise BadInput(422, 'field "text" must not be empty')
    if len(text) > MAX_NOTE_CHARS:
        raise BadInput(
            422,
            f'field "text" is too long: {len(text)} characters, the limit is {MAX_NOTE_CHARS}',
        )
    if "\x00" in text:
        raise BadInput(422, 'field "text" must not contain NUL characters (\\u0000)')
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput(
            422, 'field "text" holds a lone surrogate escape (such as \\ud800); send valid Unicode'
        ) from None
    return text


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def check_json_content_type(values: Sequence[str]) -> None:
    """Refuse a body that says it is not JSON in UTF-8, given the ``Content-Type`` values
    of the request (none: taken as JSON).

    Raises:
      BadInput: 400 for a ``Content-Type`` given more than once; 415 for any type but
        ``application/json``, or a charset but UTF-8 (other parameters are ignored).
    """
    if not values:
        return
    if len(values) > 1:
        raise BadInput(
            400, f"Content-Type is given {len(values)} times; send it once: application/json"
        )
    media_type, *parameters = values[0].split(";")
    if media_type.strip().lower() != "application/json":
        raise BadInput(
            415,
            f"request body must be JSON, sent as Content-Type: application/json (got"
            f" {_short(values[0])})",
        )
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        charset = value.strip().strip('"')
        if name.strip().lower() == "charset" and charset.lower() != "utf-8":
            raise BadInput(
                415, f"request body must be JSON in UTF-8 (got charset {_short(charset)})"
            )


def parse_note_id(raw: str) -> int:
    """The id of ``GET /notes/{id}``.

    Raises:
      BadInput: 422 when ``raw`` is not a positive decimal integer; 404 when it is too
        large to be any note's id.
    """
    significant = raw.lstrip("0")
    if not _DIGITS.fullmatch(raw) or not significant:
        raise BadInput(422, f"note id must be a positive integer such as 1 (got {_short(raw)})")
    # Length first: int() refuses more than sys.get_int_max_str_digits() digits (a 500).
    if len(significant) > _MAX_ID_DIGITS or int(significant) > _MAX_ID:
        raise BadInput(404, f"no note with id {_short(raw)}")
    return int(significant)


def parse_seconds(values: Sequence[str]) -> float:
    """The ``seconds`` of ``GET /work?seconds=S``.

    Raises:
      BadInput: 422 when it is missing, repeated, not a finite number or out of range.
    """
    allowed = f"0 <= seconds <= {MAX_WORK_SECONDS:g}"
    if not values:
        example = "e.g. /work?seconds=2"
        raise BadInput(422, f"query parameter seconds is missing; {example} ({allowed})")
    if len(values) > 1:
        raise BadInput(422, f"query parameter seconds is given {len(values)} times; give it once")
    raw = values[0]
    # Not float() alone, which also takes "1_0", " 1", "١" (Arabic one), "nan" and "inf".
    if not _DECIMAL.fullmatch(raw):
        raise BadInput(
            422, f"query parameter seconds must be a number (got {_short(raw)}); {allowed}"
        )
    seconds = float(raw)
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_WORK_SECONDS:
        raise BadInput(422, f"query parameter seconds must be {allowed} (got {_short(raw)})")
    return seconds


#: Notes per page of ``GET /notes`` by default, and at most.
PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 500


def _one_integer(values: Sequence[str], name: str, low: int, high: int, default: int) -> int:
    rule = f"{low} <= {name} <= {high}"
    if not values:
        return default
    if len(values) > 1:
        raise BadInput(422, f"query parameter {name} is given {len(values)} times; give it once")
    raw = values[0]
    # Length first: int() refuses more than sys.get_int_max_str_digits() digits.
    if not _DIGITS.fullmatch(raw) or len(raw.lstrip("0")) > len(str(high)):
        raise BadInput(
            422, f"query parameter {name} must be an integer (got {_short(raw)}); {rule}"
        )
    value = int(raw)
    if not low <= value <= high:
        raise BadInput(422, f"query parameter {name} must be {rule} (got {_short(raw)})")
    return value


def parse_page(after: Sequence[str], limit: Sequence[str]) -> tuple[int, int]:
    """The ``after`` and ``limit`` of ``GET /notes?after=ID&limit=N``: the notes after id
    ``after`` (0: from the first), at most ``limit`` of them.

    Raises:
      BadInput: 422 when one is repeated, not a decimal integer or out of range.
    """
    return (
        _one_integer(after, "after", 0, _MAX_ID, 0),
        _one_integer(limit, "limit", 1, MAX_PAGE_SIZE, PAGE_SIZE),
    )


# ------------------------------------------------------------------------------ service


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _url_host(host: str) -> str:
    """``host`` as a URL writes it: an IPv6 address in brackets."""
    return f"[{host.strip('[]')}]" if ":" in host else host


def _node(tree: SupervisorTree, info: ChildInfo) -> dict[str, Any]:
    node: dict[str, Any] = {
        "name": info.name,
        "path": info.path,
        "kind": info.kind,
        "state": info.state.value,
        "restarts": info.restarts,
        "last_error": (
            None
            if info.last_error is None
            else f"{type(info.last_error).__name__}: {info.last_error}"
        ),
    }
    if info.lock_holder is not None:  # a singleton, held here or elsewhere
        node["lock_holder"] = info.lock_holder
    if info.pid is not None or info.output_tail:  # a process child
        node["pid"] = info.pid
        node["status"] = info.status
    if info.kind == "supervisor":
        try:
            children = tree.children(info.path)
        except SupervisionError:  # not started yet, or restarting: no children to show
            children = []
        node["children"] = [_node(tree, child) for child in children]
    return node


@final
class DemoService:
    """The demo's parts, wired together; ``spec()`` and ``hooks()`` are what ``serve()`` runs.

    Args:
      config: the settings.
      db: the open database, with the ``notes`` table (see ``run_demo``).
      out: where the ready line goes (stdout).

    Attributes:
      drain: the ``DrainDelay`` shared by readiness, HTTP and WebSocket.
      metrics: the tree's Prometheus metrics, served at ``/metrics``.
      websocket: the ``WebSocketServer`` at ``/ws``.
      http: the ``HTTPServer`` of the app.
      tree: the running tree; None until the startup child ran.
    """

    def __init__(
        self,
        config: DemoConfig,
        db: Database,
        out: TextIO,
        listener: socket.socket | None = None,
    ) -> None:
        self.config = config
        self.db = db
        self._out = out
        # With workers (see _demo_workers): the parent serves the shared listener through
        # them, a worker serves the socket it inherited.
        self._listener = listener
        self.is_worker = config.worker_fd is not None
        # The parent's drain delay is its workers': they keep serving the HTTP port for it.
        self.drain = DrainDelay(0.0 if self.is_parent else config.drain_delay)
        self.metrics = TreeMetrics()
        self.websocket = (
            None
            if self.is_worker
            else WebSocketServer(
                self._websocket_session,
                host=config.host,
                port=config.ws_port,
                path=WS_PATH,
                drain=self.drain,
                notice=NOTICE,
                greeting=HELLO,
                close_timeout=WEBSOCKET_CLOSE_TIMEOUT,
            )
        )
        app = self.admin_app() if self.is_parent else self.app()
        self._health = health_app(app, metrics=self.metrics, drain=self.drain)
        self.http = HTTPServer(
            self._ready_with_database,
            host=config.host,
            port=config.admin_port if self.is_parent else config.port,
            drain=self.drain,
            graceful_timeout=config.graceful_timeout,
            # A note is at most MAX_BODY_BYTES: a client still sending one after this
            # long is stalled, not slow.
            body_timeout=BODY_TIMEOUT,
            fd=config.worker_fd,
        )
        self.observer = (
            None
            if config.observer_port is None or self.is_worker
            else HTTPServer(
                observer_app(token=config.observer_token),
                host=config.observer_host,
                port=config.observer_port,
            )
        )
        self.compaction_lock = compaction_lock(db, config.db)
        self.tree: SupervisorTree | None = None
        # The function that detaches the metrics; None until attached.
        self._detach_metrics: Callable[[], None] | None = None

    @property
    def is_parent(self) -> bool:
        """True for the parent of worker processes (``--workers`` > 1)."""
        return self._listener is not None

    # -------------------------------------------------------------------------- the tree

    def spec(self) -> SupervisorSpec:
        """The demo's tree (see the module docstring)."""
        flaky = SupervisorSpec(
            "flaky",
            [ChildSpec("worker", self._flaky_worker)],
            # Generous: the worker crashes for show, its supervisor must not give up.
            max_restarts=10,
            max_seconds=30,
            backoff=Backoff(initial=0.5, maximum=4.0, reset_after=10.0),
        )
        startup = ChildSpec("startup", self._startup, restart=Restart.TEMPORARY)
        if self.is_worker:
            return SupervisorSpec("demo-worker", [startup, self.http.child_spec()])
        background: list[ChildSpec | SupervisorSpec] = [
            ChildSpec("notes-counter", self._count_notes),
            ChildSpec.singleton("compaction", self._compact, lock=self.compaction_lock),
            flaky,
        ]
        if self.is_parent:
            background.append(ChildSpec("note-feed", self._follow_notes))
        workers = SupervisorSpec(
            "workers",
            background,
            # The counter fails at once for as long as the database is down. Waits of 1, 2,
            # 4, 5, 5... s: any 3 in a row add up to more than 5 s, so 4 restarts never fit
            # in the 3 / 5 s intensity and an outage of any length is ridden out; the counter
            # is back within 5.5 s (the maximum plus jitter) of the database.
            backoff=Backoff(initial=1.0, maximum=5.0),
        )
        assert self.websocket is not None
        # The observer comes right after the startup child: stopped last (in reverse start
        # order), it shows the shutdown for as long as there is anything to show.
        observer = [] if self.observer is None else [self.observer.child_spec("observer")]
        children: list[ChildSpec | SupervisorSpec] = [
            startup,
            *observer,
            workers,
            self.websocket.child_spec(),
            self.http.child_spec("admin" if self.is_parent else "http"),
        ]
        if self._listener is not None:  # the parent of workers
            config = self.config
            children.append(
                workers_spec(
                    config.workers,
                    self._listener,
                    db=config.db,
                    host=config.host,
                    drain_delay=config.drain_delay,
                    shutdown_deadline=config.shutdown_deadline,
                )
            )
        return SupervisorSpec("demo", children, max_restarts=5, max_seconds=30)

    def hooks(self) -> list[ShutdownHook]:
        """The shutdown's hooks, besides the built-in ``"supervisor"`` (band DRAIN)."""
        name = "admin: stop accepting" if self.is_parent else "http: stop accepting"
        hooks = [self.drain.hook, self.http.shutdown_hook(name)]
        if self.websocket is not None:
            hooks.append(self.websocket.shutdown_hook())
        return [*hooks, *self.db.shutdown_hooks()]

    @property
    def ws_url(self) -> str:
        """``ws://HOST:PORT/ws`` with the bound port (a worker's is its parent's)."""
        port = self.websocket.port if self.websocket is not None else self.config.ws_port
        return f"ws://{_url_host(self.config.host)}:{port}{WS_PATH}"

    def ready_line(self) -> str:
        """``ready http=http://HOST:PORT ws=ws://HOST:PORT/ws`` with the bound ports.

        The parent of workers adds ``admin=http://HOST:PORT`` (its own ``/tree``,
        ``/metrics`` and health), ``--observer-port`` adds ``observer=http://HOST:PORT``; a
        worker says ``worker ready http=...``.
        """
        if self.is_worker:
            return f"worker ready http={self.http.bound[0]}"
        observer = "" if self.observer is None else f" observer={self.observer.bound[0]}"
        if self._listener is not None:
            host, port = self._listener.getsockname()[:2]
            http = f"http://{_url_host(host)}:{port}"
            return f"ready http={http} ws={self.ws_url} admin={self.http.bound[0]}{observer}"
        return f"ready http={self.http.bound[0]} ws={self.ws_url}{observer}"

    async def _startup(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # The first child: the metrics see every later child start. It reports started at
        # once, so the others start, and prints the ready line once they all have.
        tree = current_tree()
        self.tree = tree
        if self._detach_metrics is None:
            self._detach_metrics = self.metrics.attach(tree)
        task_status.started()
        while tree.info("").state is ChildState.STARTING:
            with trio.move_on_after(_STARTUP_POLL):
                await tree.wait_changed()
        if tree.info("").state is ChildState.RUNNING:
            line = self.ready_line()
            print(line, file=self._out, flush=True)
            _log(logging.INFO, "%s", line, kind="READY")

    async def _count_notes(self) -> None:
        while True:
            [(count,)] = await self.db.execute("SELECT count(*) FROM notes")
            _log(logging.INFO, "%d note(s) stored", count, kind="NOTES_COUNT")
            await trio.sleep(self.config.count_every)

    async def _compact(self) -> None:
        # Only while this replica holds the lock: the checkpoints of two would contend.
        replica, started = default_holder(), time.time()
        _log(logging.INFO, "compaction: %s runs it now", replica, kind="COMPACTION")
        recorded = False
        while True:
            try:
                if not recorded:
                    await self.db.insert(
                        "INSERT INTO compactions (replica, started) VALUES (?, ?)",
                        (replica, started),
                    )
                    recorded = True
                await self.db.flush()
            except DatabaseUnavailable as exc:
                # A round that finds the database down is skipped, not a crash: it is
                # what readiness reports, and the next round tries again.
                _log(logging.WARNING, "compaction: round skipped: %s", exc, kind="COMPACTION")
                await trio.sleep(DATABASE_RETRY_AFTER)
                continue
            _log(logging.DEBUG, "compaction: database checkpointed", kind="COMPACTION")
            await trio.sleep(self.config.compact_every)

    async def _follow_notes(self) -> None:
        # The parent of workers: the notes are stored by the workers, so the WebSocket
        # news come from the table itself.
        [(last,)] = await self.db.execute("SELECT coalesce(max(id), 0) FROM notes")
        while True:
            await trio.sleep(NOTE_FEED_EVERY)
            rows = await self.db.execute("SELECT id FROM notes WHERE id > ? ORDER BY id", (last,))
            for (note_id,) in rows:
                await self._broadcast_note(note_id)
                last = note_id

    async def _flaky_worker(self) -> None:
        await trio.sleep(self.config.flaky_period)
        raise DemoCrash(f"flaky crash #{current_child().restarts + 1} (on purpose)")

    # ------------------------------------------------------------------------- WebSocket

    async def _websocket_session(self, ws: WebSocketConnection) -> None:
        # The server greets and says goodbye; clients may only ping.
        while True:
            message = await ws.get_message()
            reply: dict[str, str] = {
                "type": "error",
                "message": 'this endpoint only sends notes; the one message it takes is {"type":'
                ' "ping"}',
            }
            if isinstance(message, str):
                try:
                    payload = json.loads(message)
                except (ValueError, RecursionError):
                    payload = None
                if isinstance(payload, dict) and payload.get("type") == "ping":
                    reply = {"type": "pong"}
            await ws.send_message(json.dumps(reply))

    async def _broadcast_note(self, note_id: int) -> None:
        # Returns at once, whatever the clients do: the note is queued for each one, and a
        # client that does not read is dropped (1008), never waited for by this request.
        # A worker has no WebSocket server: its parent's note-feed sends the news.
        if self.websocket is not None:
            await self.websocket.broadcast(json.dumps({"type": "note", "id": note_id}))

    # ------------------------------------------------------------------------------ HTTP

    def app(self) -> Starlette:
        """The Starlette app of the notes API (``health_app`` adds the probes around it)."""
        app = Starlette(
            routes=[
                Route("/notes", self._notes, methods=["GET", "POST"]),
                Route("/notes/{note_id}", self._get_note, methods=["GET"]),
                Route("/work", self._work, methods=["GET"]),
                Route("/cpu", self._cpu, methods=["GET"]),
                Route("/tree", self._tree, methods=["GET"]),
                WebSocketRoute("/{path:path}", self._websocket_elsewhere),
            ],
            exception_handlers={
                BadInput: self._on_bad_input,
                DatabaseUnavailable: self._on_database_unavailable,
                HTTPException: self._on_http_exception,
                Exception: self._on_error,
            },
        )
        # A path with a trailing slash is an unknown path (404 JSON), not a 307 to the
        # other spelling, built from the client's Host header, with an empty body.
        app.router.redirect_slashes = False
        return app

    def admin_app(self) -> Starlette:
        """The parent of workers' own app: ``/tree`` (``health_app`` adds the probes)."""
        app = Starlette(
            routes=[Route("/tree", self._tree, methods=["GET"])],
            exception_handlers={
                HTTPException: self._on_http_exception,
                Exception: self._on_error,
            },
        )
        app.router.redirect_slashes = False
        return app

    async def _websocket_elsewhere(self, websocket: WebSocket) -> None:
        # Else Starlette refuses with a bare 403; the WebSocket server has its own port.
        message = f"no WebSocket endpoint on this port: connect to {self.ws_url}"
        await websocket.send_denial_response(_error(404, message))

    async def _on_bad_input(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BadInput)
        return _error(exc.status, exc.message)

    async def _on_http_exception(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        # The path as sent (decoded), not request.url.path: Starlette rebuilds that as a URL
        # ("/*" for "*", "%23" for "#").
        path = request.scope["path"]
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {path}"
        elif exc.status_code == 405:
            allow = next(
                (value for key, value in (exc.headers or {}).items() if key.lower() == "allow"),
                "",
            )
            # Starlette joins a set: its order changes from run to run.
            allowed = ", ".join(sorted(m.strip() for m in allow.split(",") if m.strip()))
            message = f"method {request.method} not allowed on {path}; use {allowed}"
        else:
            message = str(exc.detail)
        return _error(exc.status_code, message, exc.headers)

    async def _on_database_unavailable(self, request: Request, exc: Exception) -> Response:
        # Not the client's fault and not a bug: the database logs the outage once, with
        # the driver's words; the client gets the reason without the DSN or the path.
        assert isinstance(exc, DatabaseUnavailable)
        return _error(
            503,
            f"database unavailable: {exc.reason}; retry later",
            {"Retry-After": str(DATABASE_RETRY_AFTER)},
        )

    async def _ready_with_database(self, scope: Scope, receive: Receive, send: Send) -> None:
        # health_app's readiness knows the tree; the notes need the database too. Its
        # reasons (starting, shutting down) come first.
        availability = self.db.availability
        if (
            not availability.available
            and scope["type"] == "http"
            and scope.get("path") == READY_PATH
            and scope.get("method") in ("GET", "HEAD")
            and current_tree().health().ready
        ):
            reason = f"database unavailable: {availability.reason}"
            response = JSONResponse(
                {"ready": False, "reason": reason},
                status_code=503,
                headers={"Cache-Control": "no-store"},
            )
            if scope["method"] == "HEAD":
                response.body = b""  # the Content-Length of the GET stays, as HEAD wants
            await response(scope, receive, send)
            return
        await self._health(scope, receive, send)

    async def _on_error(self, request: Request, exc: Exception) -> Response:
        # Starlette logs nothing itself and re-raises after answering: hypercorn logs it.
        return _error(500, f"internal error ({type(exc).__name__}); see the service's log")

    async def _post_note(self, request: Request) -> Response:
        check_json_content_type(request.headers.getlist("content-type"))
        text = parse_note(await _read_body(request))
        note_id = await self.db.insert("INSERT INTO notes (text) VALUES (?)", (text,))
        # Committed: acknowledge, then tell the WebSocket clients (after the response, still
        # within the request, so the HTTP drain waits for it).
        return JSONResponse(
            {"id": note_id},
            status_code=201,
            background=BackgroundTask(self._broadcast_note, note_id),
        )

    async def _notes(self, request: Request) -> Response:
        # One route, so that a 405 on /notes names both methods.
        if request.method == "POST":
            return await self._post_note(request)
        return await self._list_notes(request)

    async def _list_notes(self, request: Request) -> Response:
        query = request.query_params
        after, limit = parse_page(query.getlist("after"), query.getlist("limit"))
        # Keyset pagination: a page is the same whatever was added after it.
        rows = await self.db.execute(
            "SELECT id, text FROM notes WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
        )
        notes = [{"id": note_id, "text": text} for note_id, text in rows]
        following = notes[-1]["id"] if len(notes) == limit else None
        return JSONResponse({"notes": notes, "next": following})

    async def _get_note(self, request: Request) -> Response:
        note_id = parse_note_id(request.path_params["note_id"])
        rows = await self.db.execute("SELECT id, text FROM notes WHERE id = ?", (note_id,))
        if not rows:
            return _error(404, f"no note with id {note_id}")
        found_id, text = rows[0]
        return JSONResponse({"id": found_id, "text": text})

    async def _work(self, request: Request) -> Response:
        seconds = parse_seconds(request.query_params.getlist("seconds"))
        await trio.sleep(seconds)
        return JSONResponse({"slept": seconds})

    async def _cpu(self, request: Request) -> Response:
        # CPU-bound on purpose (pure Python holds the GIL): what --workers spreads over cores.
        n = _one_integer(request.query_params.getlist("n"), "n", 1, MAX_CPU_N, CPU_N)
        total = 0
        for i in range(n):
            total += i * i % 7
        return JSONResponse({"n": n, "sum": total, "pid": os.getpid()})

    async def _tree(self, request: Request) -> Response:
        tree = current_tree()
        health = tree.health()
        return JSONResponse(
            {
                "tree": _node(tree, tree.info("")),
                "health": {
                    "status": health.status.value,
                    "ready": health.ready,
                    "live": health.live,
                },
                "shutting_down": tree.shutting_down,
                "http_in_flight": self.http.in_flight,
                "websocket_connections": (
                    len(self.websocket.connections) if self.websocket is not None else 0
                ),
            }
        )


# ------------------------------------------------------------------------------ running


def compaction_lock(db: Database, target: str) -> Lock:
    """The lock of the compaction singleton: the database's own, shared by every demo on it.

    PostgreSQL: an advisory lock (``COMPACTION_KEY``); a SQLite file: a lock file beside
    it; ``:memory:``, which no other process can share: a lock of this process.
    """
    if isinstance(db, PostgresDatabase):
        return PostgresLock(target, COMPACTION_KEY)
    if isinstance(db, SQLiteDatabase) and db.path != ":memory:":
        return FileLock(f"{db.path}.compaction.lock")
    return MemoryLock()


async def _open_notes_database(target: str) -> Database:
    """Open ``target`` and make the notes table (a migration).

    Raises:
      DemoStartError: it cannot be opened or set up.
    """
    try:
        db = await open_database(target)
    except (TypeError, ValueError, ImportError, DatabaseError) as exc:
        raise DemoStartError(f"--db: {exc}") from exc
    try:
        await db.migrate(
            [table.format(auto_id=db.auto_id) for table in (_NOTES_TABLE, _COMPACTIONS_TABLE)]
        )
    except BaseException as exc:
        with trio.CancelScope(shield=True):
            await db.aclose()
        if isinstance(exc, DatabaseError):
            raise DemoStartError(
                f"--db: cannot set up the notes table in {db.target}: {exc}"
            ) from exc
        raise
    return db


async def _open_unless_stopped(target: str) -> Database | None:
    """``_open_notes_database``, given up (None) on SIGINT or SIGTERM.

    The tree handles signals once it runs; before that the database is opened, which can
    take long (a PostgreSQL server that does not answer), and Ctrl+C must stop that too.
    """
    opened: Database | None = None
    failed: DemoStartError | None = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for signum in signals:
                    _log(
                        logging.WARNING,
                        "received %s while opening the database: not starting",
                        signal.Signals(signum).name,
                        kind="SIGNAL",
                    )
                    nursery.cancel_scope.cancel(reason="signal while opening the database")
                    return

            nursery.start_soon(stop_on_signal)
            try:
                opened = await _open_notes_database(target)
            except DemoStartError as exc:
                failed = exc  # raised as itself, not in the nursery's exception group
            nursery.cancel_scope.cancel(reason="database opened")
    if failed is not None:
        raise failed
    return opened


async def run_demo(config: DemoConfig, out: TextIO | None = None) -> int:
    """Open the database, serve the demo until SIGTERM or SIGINT, print the report.

    A signal while the database opens stops the demo before it starts (exit code 0); from
    the call of ``serve()`` on, the tree's shutdown handles them. The CLI holds the signals
    for all of ``trio.run`` as ``run()`` does, so one in between is acted on too.

    Returns:
      The process exit code of ``trio_supervise.serve()``: 0 after a clean shutdown.

    Raises:
      DemoStartError: the database cannot be opened or its table made; the message says
        why (from ``open_database`` or ``Database.migrate``).
    """
    out = sys.stdout if out is None else out
    db = await _open_unless_stopped(config.db)
    if db is None:
        return 0
    listener = None
    if config.workers > 1:
        try:
            listener = open_listener(config.host, config.port)
        except OSError as exc:
            with trio.CancelScope(shield=True):
                await db.aclose()
            raise DemoStartError(
                f"--port: cannot listen on {config.host}:{config.port}: {exc}"
            ) from exc
    try:
        service = DemoService(config, db, out, listener)
        async with trio.open_nursery() as nursery:
            # Beside the tree, from the open to the close: readiness follows the database
            # even when no request comes. It never raises for the database's state.
            nursery.start_soon(db.monitor, DATABASE_PING_EVERY)
            code = await serve(
                service.spec(),
                hooks=service.hooks(),
                shutdown_deadline=config.shutdown_deadline,
            )
            nursery.cancel_scope.cancel(reason="the service has stopped")
    finally:
        if listener is not None:
            listener.close()
        # Closed by its shutdown hook already, unless the tree never ran it.
        with trio.CancelScope(shield=True):
            await db.aclose()
    report = service.tree.shutdown_report if service.tree is not None else None
    if report is not None:
        print(report.format(), file=out, flush=True)
    return code
