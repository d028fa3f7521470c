"""The observer's ASGI application: the page, the JSON API, the streams and the actions."""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from importlib import resources
from typing import Any, Final
from urllib.parse import urlsplit

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ..._errors import SupervisionError
from ..._events import log
from ..._tree import SupervisorTree, current_tree
from ._snapshot import error_traceback, event_json, shutdown_json, tree_json
from ._streams import event_stream, page_stream

logger = logging.getLogger("trio_supervise.observer")

#: What the actions do, by the last part of their path.
ACTIONS: Final = ("restart", "terminate", "start")
_STATIC: Final = {
    "observer.js": "text/javascript; charset=utf-8",
    "observer.css": "text/css; charset=utf-8",
}
# The page and its assets come from this package only: no CDN, nothing inline to allow.
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_STREAM_HEADERS: Final = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # no proxy buffering: the events are live
]


class _EventSource:
    """A ``text/event-stream`` response that ends, and closes its stream, when the client goes.

    Not Starlette's StreamingResponse: it leaves the stream's generator open when the client
    disconnects, for the garbage collector to find.
    """

    def __init__(self, stream: Callable[[], AsyncGenerator[str, None]]) -> None:
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _STREAM_HEADERS})
        async with trio.open_nursery() as nursery:

            async def until_disconnected() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                nursery.cancel_scope.cancel(reason="the client went away")

            nursery.start_soon(until_disconnected)
            async with aclosing(self._stream()) as chunks:
                async for chunk in chunks:
                    await send(
                        {"type": "http.response.body", "body": chunk.encode(), "more_body": True}
                    )
            nursery.cancel_scope.cancel(reason="the stream ended")
        with trio.CancelScope(shield=True), contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def _asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _same_origin(request: Request) -> bool:
    """True unless the browser says the request comes from a page of another origin."""
    origin = request.headers.get("origin")
    if origin is None:
        return True  # not a cross-origin browser request (curl, or the page itself)
    host = request.headers.get("host", "")
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc == host


class _Observer:
    def __init__(self, tree: SupervisorTree | None, token: str | None) -> None:
        self._tree = tree
        self._token = token

    @property
    def tree(self) -> SupervisorTree:
        return self._tree if self._tree is not None else current_tree()

    async def page(self, request: Request) -> Response:
        return Response(
            _asset("index.html"), media_type="text/html; charset=utf-8", headers=_SECURITY_HEADERS
        )

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return _error(404, f"no asset {name!r}")
        return Response(_asset(name), media_type=_STATIC[name], headers=_SECURITY_HEADERS)

    async def api_info(self, request: Request) -> Response:
        tree = self.tree
        return JSONResponse(
            {
                "name": tree.info("").name,
                "actions": self._token is not None,
                "now": trio.current_time(),
            }
        )

    async def api_tree(self, request: Request) -> Response:
        return JSONResponse(tree_json(self.tree))

    async def api_events(self, request: Request) -> Response:
        return JSONResponse([event_json(event) for event in self.tree.history])

    async def api_shutdown(self, request: Request) -> Response:
        return JSONResponse(shutdown_json(self.tree.shutdown_report))

    async def events_stream(self, request: Request) -> Response | _EventSource:
        if not _same_origin(request):
            return _error(403, "the event stream is served to pages of this origin only")
        tree = self.tree
        return _EventSource(lambda: event_stream(tree))

    async def page_stream(self, request: Request) -> Response | _EventSource:
        if not _same_origin(request):
            return _error(403, "the stream is served to pages of this origin only")
        tree = self.tree
        return _EventSource(lambda: page_stream(tree))

    async def child_error(self, request: Request) -> Response:
        path = request.path_params["path"]
        try:
            info = self.tree.info(path)
        except LookupError as exc:
            return _error(404, str(exc))
        return JSONResponse({"path": path, "traceback": error_traceback(info.last_error)})

    async def action(self, request: Request) -> Response:
        path, action = request.path_params["path"], request.path_params["action"]
        if action not in ACTIONS:
            return _error(404, f"no action {action!r}; the actions are {', '.join(ACTIONS)}")
        if not _same_origin(request):
            return _error(403, "actions are taken from pages of this origin only")
        if self._token is None:
            return _error(
                403,
                "this observer is read-only: start it with a token (observer_app(tree,"
                " token=...), TRIO_SUPERVISE_OBSERVER_TOKEN) to allow actions",
            )
        given = request.headers.get("authorization", "")
        scheme, _, credentials = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            credentials.strip().encode(), self._token.encode()
        ):
            return _error(
                401,
                "an action needs the header 'Authorization: Bearer <token>' with the"
                " observer's token",
                {"WWW-Authenticate": 'Bearer realm="trio-supervise observer"'},
            )
        tree = self.tree
        if path == "":
            return _error(400, "the root supervisor cannot be restarted or stopped from here")
        try:
            info = tree.info(path)
            if action == "start" and info.state.value != "stopped":
                return _error(409, f"{path!r} is {info.state.value}, not stopped: nothing to start")
            client = request.client.host if request.client is not None else "?"
            log(
                logging.WARNING,
                "observer: %s %s (asked from %s)",
                action,
                path,
                client,
                path=path,
                kind="OBSERVER_ACTION",
                to=logger,
                fields={"action": action, "client": client},
            )
            if action == "terminate":
                await tree.terminate_child(path)
            else:
                await tree.restart_child(path)
        except LookupError as exc:
            return _error(404, str(exc))
        except SupervisionError as exc:
            return _error(409, str(exc))
        return JSONResponse({"path": path, "action": action, "state": tree.info(path).state.value})


def observer_app(tree: SupervisorTree | None = None, *, token: str | None = None) -> Starlette:
    """The observer of ``tree`` as an ASGI application, for hypercorn (``HTTPServer``).

    Routes (JSON unless said):

    * ``GET /``: the page (HTML, its script and style from this package only).
    * ``GET /api/tree``: the tree, nested objects with ``path, name, kind, state, restarts,
      health, last_error, started_at, pid, children`` (and ``restart_at`` while waiting out
      a backoff, ``output_tail`` and ``status`` of processes, ``lock_holder`` of singletons).
    * ``GET /api/events``: the recent events, oldest first, ``{kind, path, time, restarts,
      error, detail}``; ``GET /api/events/stream``: the events from now on as server-sent
      events, one JSON event per ``data:`` line.
    * ``GET /api/shutdown``: the last shutdown's report, or null.
    * ``GET /api/info``: ``{name, actions, now}``: the root's name, whether actions are
      allowed, and the tree's clock (against which ``started_at`` and ``restart_at`` count).
    * ``GET /api/children/<path>/error``: the traceback of a child's last error.
    * ``POST /api/children/<path>/restart``, ``/terminate``, ``/start`` (a stopped child):
      only with ``token`` set, and then only with ``Authorization: Bearer <token>`` (401
      otherwise; 403 when no token is set: the observer is read-only). Each is logged
      (``trio_supervise.observer``) and shows as its usual event.
    * ``GET /api/stream``: the page's own stream (a snapshot, then coalesced changes).

    Streams and actions refuse (403) a browser request whose ``Origin`` is another site's.

    Args:
      tree: the tree to show; None for the tree the app is served in (``current_tree()``,
        as ``trio-supervise run --observer`` serves it).
      token: the secret that allows actions; None for a read-only observer.

    Raises:
      TypeError: ``tree`` is not a tree's handle, or ``token`` not a str.
      ValueError: ``token`` is empty.
    """
    if tree is not None and not isinstance(tree, SupervisorTree):
        raise TypeError(
            f"observer_app: tree must be the handle from supervisor_tree(), or None (got {tree!r})"
        )
    if token is not None:
        if not isinstance(token, str):
            raise TypeError(
                f"observer_app: token must be a str or None (got {type(token).__name__})"
            )
        if not token.strip():
            raise ValueError("observer_app: token must not be empty; pass None for read-only")
    observer = _Observer(tree, token)
    routes: list[Any] = [
        Route("/", observer.page),
        Route("/static/{name}", observer.static),
        Route("/api/info", observer.api_info),
        Route("/api/tree", observer.api_tree),
        Route("/api/events", observer.api_events),
        Route("/api/events/stream", observer.events_stream),
        Route("/api/stream", observer.page_stream),
        Route("/api/shutdown", observer.api_shutdown),
        Route("/api/children/{path:path}/error", observer.child_error),
        Route("/api/children/{path:path}/{action}", observer.action, methods=["POST"]),
    ]
    return Starlette(routes=routes)
