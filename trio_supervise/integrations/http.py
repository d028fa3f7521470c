"""HTTP: serve an ASGI app with hypercorn under Trio as a supervised child.

Needs the ``http`` extra (``pip install 'trio-supervise[http]'``).

``HTTPServer`` runs ``hypercorn.trio.serve`` as a service child of a supervision tree, and
``health_app`` wraps any ASGI app (Starlette, or plain ASGI) with the probes a load balancer
or Kubernetes asks: ``GET /health/live``, ``GET /health/ready`` and ``GET /metrics``.

Shutdown:
  The server is never stopped by cancelling ``serve()``, which would drop the requests in
  flight. It is stopped through hypercorn's ``shutdown_trigger``, in two steps that map on
  the shutdown's bands:

  1. ``STOP_ACCEPTING`` (``server.shutdown_hook()``): after the drain delay, if one was
     given, the trigger fires. Hypercorn then closes its listeners (new connections are
     refused), closes idle keep-alive connections at once and lets every request in flight
     finish; a keep-alive connection is closed after its current response, which says
     ``Connection: close`` if it started after the trigger. The hook returns once the
     listening sockets are closed.
     A keep-alive client that sent its next request just before hypercorn ended the current
     response leaves hypercorn's reader waiting on a connection it has closed, until the
     graceful timeout; such a connection is cancelled a moment after its last request ended
     (that next request never ran; its client sees the connection close unanswered, as
     for any request sent on a keep-alive connection that the server is closing).
     A request that reaches the app once the trigger has fired (a new connection's first
     request, sent as the listeners closed) is answered 503 unrun: hypercorn may be
     closing its connection as idle at the same moment, and a request the client never
     heard back from must not have had an effect.
  2. ``DRAIN`` (the built-in ``"supervisor"`` hook stops the child): ``stop()`` fires the
     trigger if the hook did not, and waits until ``serve()`` has returned by itself: every
     request finished and the app's lifespan shutdown ran.

  In-flight requests are bounded by ``graceful_timeout`` if you give one (hypercorn cancels
  them that many seconds after the listeners closed; the child then raises
  ``trio.TooSlowError`` as it stops, so the report's ``"supervisor"`` hook is
  ``timed_out`` and ``run()`` exits 1), else only by the tree: the child's
  ``shutdown_timeout`` and the shutdown's ``shutdown_deadline``. At the deadline the tree
  cancels ``serve()``; the requests still running are cut (their clients see the
  connection close without a response) and the report says ``deadline_exceeded``.
  WebSocket connections count as in flight until they end.

Slow clients:
  A request's head must arrive within hypercorn's ``config.keep_alive_timeout`` (5 s by
  default) of the connection opening or of the previous response, and its body within
  ``body_timeout`` (60 s by default) of its head; past that the client gets 408 with
  ``Connection: close``, the app an ``http.disconnect``, and the request is no longer in
  flight. Hypercorn's ``read_timeout`` is left unset: it bounds each read, so it would
  also cut a long request whose client waits quietly for the answer.

Example::

    from starlette.applications import Starlette
    from trio_supervise import DrainDelay, SupervisorSpec, supervisor_tree
    from trio_supervise.integrations.http import HTTPServer, health_app

    drain = DrainDelay(5)
    server = HTTPServer(health_app(Starlette(routes=...), drain=drain), port=8080, drain=drain)
    spec = SupervisorSpec("app", [server.child_spec(), ...])
    async with supervisor_tree(
        spec, hooks=[drain.hook, server.shutdown_hook()], shutdown_deadline=20
    ) as tree:
        ...
"""

from __future__ import annotations

import functools
import inspect
import ipaddress
import json
import logging
import math
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Final, Protocol, cast, final
from urllib.parse import unquote

import attrs
import trio
import trio.lowlevel

from .. import _checks
from .._context import ChildState, current_child_path
from .._errors import SpecError
from .._events import log
from .._extras import missing_extra
from .._shutdown import Band, DrainDelay, NothingToDo, ShutdownHook
from .._spec import ChildSpec
from .._tree import SupervisorTree, current_tree

try:
    import hypercorn.trio
    from hypercorn.config import Config, Sockets
    from hypercorn.typing import ASGIFramework
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise missing_extra("trio_supervise.integrations.http", "hypercorn", "http") from exc

__all__ = ["ASGIApp", "AnyASGIApp", "HTTPServer", "MetricsSource", "health_app"]

logger = logging.getLogger("trio_supervise.http")

#: An ASGI scope or message, as Starlette types them.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: An ASGI 3 application, as ``health_app`` returns it.
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: What the app arguments accept: frameworks type scopes differently (Starlette as mutable
#: mappings, asgiref and hypercorn as TypedDicts), and a parameter type must not refuse any.
AnyASGIApp = Callable[..., Awaitable[None]]

LIVE_PATH: Final = "/health/live"
READY_PATH: Final = "/health/ready"
METRICS_PATH: Final = "/metrics"
_ALLOWED: Final = ("GET", "HEAD")
_JSON: Final = "application/json"
_CLOSE: Final = ((b"connection", b"close"),)
_AMBIGUOUS_FRAMING: Final = (
    "request has both Content-Length and Transfer-Encoding: ambiguous framing; send one"
)

# Polling the listening sockets until hypercorn has closed them: hypercorn gives no signal
# for it, and it takes a few scheduler ticks after the trigger. Tick first, then back off.
_CLOSE_TICKS: Final = 20
_CLOSE_POLL: Final = 0.002
_PORT_HINT: Final = "; 0 picks a free port"
# How often connections whose request ended during the drain are checked (see
# _close_stuck_connections); a stuck one lingers at most about twice this long.
_STUCK_POLL: Final = 0.05


class MetricsSource(Protocol):
    """What ``health_app`` serves at ``/metrics``.

    ``exposition()`` returns the body and its content type, e.g. Prometheus' text format and
    ``"text/plain; version=0.0.4; charset=utf-8"``. It is called for every scrape, in the
    event loop: keep it quick.
    """

    def exposition(self) -> tuple[bytes, str]: ...


def _tree_or_none() -> SupervisorTree | None:
    try:
        return current_tree()
    except RuntimeError:
        return None


def _check_app(owner: str, field: str, app: object) -> None:
    if inspect.iscoroutine(app):
        app.close()  # or Python also warns "never awaited"
        raise SpecError(
            f"{owner}: {field} must be an ASGI app, not a coroutine object (got {app!r});"
            " pass the app itself"
        )
    if inspect.isclass(app) or not _checks.is_async_callable(app):
        raise SpecError(
            f"{owner}: {field} must be an ASGI 3 app, an async callable"
            " app(scope, receive, send) (got"
            f" {type(app).__name__} {getattr(app, '__qualname__', app)!r});"
            " pass an app instance such as Starlette(...) or an 'async def' function"
        )


def _check_host(host: object) -> str:
    if not isinstance(host, str) or not host or host != host.strip():
        raise SpecError(
            f"HTTPServer: host must be a non-empty host name or IP address without spaces"
            f" (got {host!r}); e.g. host='127.0.0.1' or host='0.0.0.0'"
        )
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.removeprefix("[").removesuffix("]"))
        except ValueError:
            raise SpecError(
                f"HTTPServer: host must be a host name or IP address without a port"
                f" (got {host!r}); pass the port as port=..."
            ) from None
        return host.removeprefix("[").removesuffix("]")
    return host


def _check_port(port: object) -> int:
    return _checks.integer(
        "HTTPServer", "port", port, at_least=0, at_most=65535, error=SpecError, hint=_PORT_HINT
    )


def _explicit(config: Config, attribute: str) -> bool:
    # hypercorn's Config keeps its defaults as class attributes: a value set by the user
    # (directly, from_mapping, from_toml, ...) is an instance attribute.
    return attribute in vars(config)


def _check_config(config: object) -> Config | None:
    if config is None:
        return None
    if not isinstance(config, Config):
        raise SpecError(
            f"HTTPServer: config must be a hypercorn.config.Config or None (got {config!r})"
        )
    for attribute, name in (("_bind", "bind"), ("_insecure_bind", "insecure_bind")):
        if _explicit(config, attribute):
            raise SpecError(
                f"HTTPServer: config.{name} is set ({getattr(config, name)!r}), but the"
                " server binds host:port itself; pass host= and port= instead (one"
                " HTTPServer per address)"
            )
    if _explicit(config, "_quic_bind"):
        raise SpecError(
            f"HTTPServer: config.quic_bind is set ({config.quic_bind!r}); HTTP/3 is not"
            " supported by HTTPServer; leave quic_bind unset"
        )
    if config.workers != 1:
        raise SpecError(
            f"HTTPServer: config.workers must be 1 (got {config.workers!r}); the server runs"
            " in this process as a supervised child; run more processes for more workers"
        )
    if config.debug:
        raise SpecError(
            "HTTPServer: config.debug has no effect when hypercorn serves under Trio"
            " (got True); leave it False"
        )
    return config


def _url(scheme: str, sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if sock.family == socket.AF_INET6:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def _check_listening_fd(fd: object) -> int | None:
    if fd is None:
        return None
    checked = _checks.integer("HTTPServer", "fd", fd, at_least=0, error=SpecError)
    try:
        probe = socket.socket(fileno=os.dup(checked))
    except OSError as exc:
        raise SpecError(
            f"HTTPServer: fd {checked} is not an open socket ({exc.strerror}); pass the"
            " listening socket's fileno(), inherited through pass_fds"
        ) from None
    with probe:
        listening = probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        if probe.type != socket.SOCK_STREAM or not listening:
            raise SpecError(
                f"HTTPServer: fd {checked} is not a listening TCP socket; call listen() on"
                " it before passing it"
            )
    return checked


def _bind_socket(host: str, port: int) -> socket.socket:
    # As hypercorn's own Config._create_sockets for host:port binds, but the socket is
    # closed if binding fails (no ResourceWarning) and the error names the address.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
            raise OSError(exc.errno, f"HTTPServer cannot bind {where}: {exc.strerror}") from exc
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


@final
class _RunConfig(Config):
    """One run's copy of the user's config; it binds the server's own socket."""

    # Set right after construction (Config has no __init__ arguments).
    _ts_run: _Run

    def create_sockets(self) -> Sockets:
        run = self._ts_run
        if run.fd is not None:
            # A copy per run: hypercorn closes its sockets when it stops accepting, and the
            # inherited one must stay open for a restart (and for the sibling processes).
            sock = socket.socket(fileno=os.dup(run.fd))
            sock.setblocking(False)
        else:
            sock = _bind_socket(run.host, run.port)
        run.sockets.append(sock)
        if self.ssl_enabled:
            return Sockets([sock], [], [])
        return Sockets([], [sock], [])


@final
@attrs.define(eq=False)
class _Run:
    """One run of the server: from a (re)start of its child to the end of ``serve()``."""

    host: str
    port: int
    # An inherited listening socket to serve instead of binding host:port.
    fd: int | None
    # Fired (set) to make hypercorn stop accepting and drain; each run has its own, so a
    # restart after a stop listens again.
    trigger: trio.Event = attrs.field(factory=trio.Event)
    # Set by the service's stop(): run() may return only then (see _serve).
    stop_called: trio.Event = attrs.field(factory=trio.Event)
    # Set once serve() has returned or raised (or, for a run that never served, at its end).
    done: trio.Event = attrs.field(factory=trio.Event)
    # The sockets this run bound; hypercorn closes them when it stops accepting.
    sockets: list[socket.socket] = attrs.field(factory=list)
    # The base URLs it listens on; empty until hypercorn called task_status.started().
    urls: tuple[str, ...] = ()
    # The path of the child that serves it, for the log records.
    path: str = ""
    # The connections (their hypercorn nurseries) whose request ended after the trigger
    # fired: each is closed by hypercorn, or else by _close_stuck_connections. The value
    # says whether the last check found it without a task.
    ended: dict[trio.Nursery, bool] = attrs.field(factory=dict)
    # Requests of this run that hypercorn's graceful_timeout cut.
    cut: int = 0

    @property
    def listening(self) -> bool:
        return bool(self.urls) and any(sock.fileno() != -1 for sock in self.sockets)

    def request_ended(self) -> None:
        """Note, from the request's task, that a request ended after the trigger fired."""
        self.ended.setdefault(_connection_of_current_request(), False)


@final
class _Started:
    """The ``task_status`` handed to hypercorn: notes that the run listens, then passes on."""

    def __init__(self, server: HTTPServer, run: _Run, status: trio.TaskStatus[None]) -> None:
        self._server = server
        self._run = run
        self._status = status

    def started(self, value: object = None) -> None:
        run = self._run
        scheme = "https" if self._server._base_config.ssl_enabled else "http"
        run.urls = tuple(_url(scheme, sock) for sock in run.sockets)
        self._server._listened = run
        self._server._changed.unpark_all()
        log(
            logging.INFO,
            "HTTP server listening on %s",
            ", ".join(run.urls),
            path=run.path,
            kind="HTTP_LISTENING",
            to=logger,
        )
        self._status.started()


@final
class _HTTPService:
    """The service object of one run of an ``HTTPServer`` child; made anew on each start."""

    def __init__(self, server: HTTPServer) -> None:
        self._server = server
        self._run = _Run(server.host, server._port, server._fd)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._server._serve(self._run, task_status)

    async def stop(self) -> None:
        await self._server._stop(self._run)


@final
class HTTPServer:
    """An ASGI app served by hypercorn under Trio, as a supervised child.

    Put ``server.child_spec()`` in a ``SupervisorSpec`` and ``server.shutdown_hook()`` (with
    ``drain.hook`` when you use a ``DrainDelay``) in the tree's hooks. The child is
    started with ``task_status`` semantics: it counts as started once its socket listens,
    so the siblings after it start only when HTTP is accepting. Each (re)start binds anew
    and has its own shutdown trigger.

    Two requests hypercorn passes on as they come are mended first: an absolute-form target
    (``GET http://host/path``, which RFC 9112 3.2.2 says a server must accept) reaches the
    app with its path, and one with both ``Content-Length`` and ``Transfer-Encoding``
    (ambiguous framing, RFC 9112 6.3: request smuggling) is answered 400 JSON unrun, and
    its connection closed.

    Args:
      app: the ASGI 3 app to serve; wrap it with ``health_app`` for the health endpoints.
      host: the address to bind: an IP address or a host name (no port).
      port: the TCP port; ``0`` picks a free port on every (re)start (read ``port``).
      drain: the tree's ``DrainDelay``; the shutdown hook waits for it before the
        listeners close. Its ``drain.hook`` must be in the tree's hooks too.
      config: hypercorn settings (TLS, timeouts, HTTP/2, ...). It is copied on every
        start, never changed. Leave ``bind`` unset (use ``host`` and ``port``). Hypercorn's
        error log goes to the ``trio_supervise.http`` logger unless ``config.errorlog`` is
        set; the access log is off unless ``config.accesslog`` is set (e.g. to
        ``logging.getLogger("trio_supervise.http.access")``).
      graceful_timeout: seconds in-flight requests may take once the listeners have closed
        before hypercorn cancels them. ``None``: ``config.graceful_timeout`` if you set it
        on ``config``, else no limit of its own (the child's ``shutdown_timeout`` and the
        shutdown's deadline still apply).
      body_timeout: seconds from a request's head to the end of its body; a client still
        sending then gets 408 (see "Slow clients" in the module docstring). The wait for
        the head is hypercorn's ``config.keep_alive_timeout`` (5 s by default).
      fd: a listening TCP socket's file descriptor to serve instead of binding ``host`` and
        ``port``: a worker process given one socket by its parent (``ChildSpec.process``'s
        ``pass_fds``), so that several processes accept on one port.

    Raises:
      SpecError: for an app that is not an async callable, a bad host or port, a
        ``drain`` that is not a ``DrainDelay``, a config that is not a hypercorn
        ``Config`` or sets ``bind``, ``workers`` or ``debug``, or a negative timeout.

    Attributes:
      host: the host it binds.
    """

    def __init__(
        self,
        app: AnyASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        drain: DrainDelay | None = None,
        config: Config | None = None,
        graceful_timeout: float | None = None,
        body_timeout: float = 60.0,
        fd: int | None = None,
    ) -> None:
        _check_app("HTTPServer", "app", app)
        self.host = _check_host(host)
        self._port = _check_port(port)
        self._fd = _check_listening_fd(fd)
        if drain is not None and not isinstance(drain, DrainDelay):
            raise SpecError(f"HTTPServer: drain must be a DrainDelay or None (got {drain!r})")
        _checks.number(
            "HTTPServer",
            "graceful_timeout",
            graceful_timeout,
            at_least=0,
            none=True,
            error=SpecError,
        )
        self._app = app
        self._drain = drain
        self._base_config = _check_config(config) or Config()
        if graceful_timeout is None:
            explicit = config is not None and _explicit(config, "graceful_timeout")
            graceful_timeout = self._base_config.graceful_timeout if explicit else math.inf
        self._graceful_timeout = float(graceful_timeout)
        _checks.number("HTTPServer", "body_timeout", body_timeout, above=0, error=SpecError)
        self._body_timeout = float(body_timeout)
        self._in_flight = 0
        # The current run (the last one made by the supervisor); None before the first.
        self._current: _Run | None = None
        # The last run that listened; None until one did. Kept after it stopped.
        self._listened: _Run | None = None
        # Woken whenever a run starts listening.
        self._changed = trio.lowlevel.ParkingLot()
        # The tree whose shutdown hook closed the listeners: a (re)start in that tree must
        # not open them again. None until the hook ran (or outside any tree).
        self._closed_in: SupervisorTree | None = None
        self._closed = False

    def __repr__(self) -> str:
        where = ", ".join(self._listened.urls) if self._listened else f"{self.host}:{self._port}"
        return f"<HTTPServer {where} in_flight={self._in_flight}>"

    # ------------------------------------------------------------------ what users call

    def child_spec(self, name: str = "http", *, shutdown_timeout: float | None = None) -> ChildSpec:
        """The service child that runs the server.

        Args:
          name: the child's name.
          shutdown_timeout: seconds a stop may take: draining the requests in flight and
            the app's lifespan shutdown. ``None`` (the default) waits without a limit of
            its own: during the shutdown the deadline still applies, and a
            ``graceful_timeout`` bounds the requests.

        Raises:
          SpecError: for a bad name or timeout (as ``ChildSpec``).
        """
        return ChildSpec.service(name, self._new_service, shutdown_timeout=shutdown_timeout)

    def shutdown_hook(
        self, name: str = "http: stop accepting", *, timeout: float | None = None
    ) -> ShutdownHook:
        """The hook, in band ``STOP_ACCEPTING``, that closes the listeners.

        It waits for the drain delay (if the server has one), then fires hypercorn's
        shutdown trigger and returns once the listening socket is closed: new connections
        are refused from then on, while the requests in flight go on (the child is
        stopped later, in band ``DRAIN``, once they finished). A (re)start of the child in
        the same tree after this stays closed: it reports started but does not listen.

        Args:
          name: the hook's name in the report.
          timeout: the hook's own timeout (see ``ShutdownHook``).
        """
        return ShutdownHook(
            name, self._stop_accepting, priority=Band.STOP_ACCEPTING, timeout=timeout
        )

    @property
    def port(self) -> int:
        """The TCP port the server listens (or last listened) on.

        Raises:
          RuntimeError: it has not listened yet.
        """
        return int(self.bound[0].rsplit(":", 1)[1])

    @property
    def bound(self) -> tuple[str, ...]:
        """The base URLs it listens (or last listened) on, e.g. ``("http://127.0.0.1:8000",)``.

        Raises:
          RuntimeError: it has not listened yet.
        """
        if self._listened is None:
            raise RuntimeError(
                f"HTTPServer for {self.host}:{self._port} has not listened yet; its address"
                " is known once its child has started (await server.wait_listening())"
            )
        return self._listened.urls

    @property
    def listening(self) -> bool:
        """True while a run of the server accepts connections."""
        run = self._current
        return run is not None and run.listening

    @property
    def in_flight(self) -> int:
        """HTTP requests (and WebSocket connections) the app is serving right now."""
        return self._in_flight

    async def wait_listening(self) -> tuple[str, ...]:
        """Wait until a run of the server accepts connections; return its base URLs."""
        while not self.listening:
            await self._changed.park()
        return self.bound

    # ----------------------------------------------------------------------- the runtime

    def _new_service(self) -> _HTTPService:
        service = _HTTPService(self)
        self._current = service._run
        return service

    def _run_config(self, run: _Run) -> _RunConfig:
        base = self._base_config
        config = _RunConfig()
        config.__dict__.update(vars(base))
        config.__dict__.pop("_log", None)  # a logger built for the user's copy
        config._ts_run = run
        config.graceful_timeout = self._graceful_timeout
        if not _explicit(base, "errorlog"):
            config.errorlog = logger
        return config

    async def _serve(self, run: _Run, task_status: trio.TaskStatus[None]) -> None:
        run.path = current_child_path()
        try:
            if self._closed and self._closed_in is _tree_or_none():
                # Restarted after the shutdown hook closed the listeners: stay closed.
                task_status.started()
                await run.stop_called.wait()
                return
            # Bound to this run: a request checks its own run's trigger, also while a
            # restarted server's old run drains. (Cast: hypercorn types scopes as TypedDicts.)
            app = cast(ASGIFramework, functools.partial(self._asgi, run))
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_close_stuck_connections, run)
                    try:
                        await hypercorn.trio.serve(
                            app,
                            self._run_config(run),
                            shutdown_trigger=run.trigger.wait,
                            task_status=_Started(self, run, task_status),
                            mode="asgi",
                        )
                    finally:
                        nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                # Hypercorn's nested nurseries wrap a lone error (a port in use, a failed
                # lifespan startup) in groups; report it as itself. Cancellation and
                # several errors come out unchanged.
                error = _lone_error(group)
                if error is None:
                    raise
                raise error from None
            finally:
                for sock in run.sockets:  # hypercorn closed them, unless it failed early
                    sock.close()
            if run.trigger.is_set() and not run.stop_called.is_set():
                # The shutdown hook drained it: returning now would be a clean exit that
                # the supervisor restarts. Stay up, not listening, until it stops us.
                await run.stop_called.wait()
            if run.cut:
                # Not a clean stop: the shutdown report must say so, not "ok".
                raise trio.TooSlowError(
                    f"graceful_timeout ({self._graceful_timeout:g}s) cut {run.cut}"
                    " request(s) still in flight"
                )
        finally:
            run.done.set()

    async def _stop(self, run: _Run) -> None:
        run.stop_called.set()
        run.trigger.set()
        await run.done.wait()

    async def _stop_accepting(self) -> None:
        if self._drain is not None:
            await self._drain.wait()
        self._closed = True
        self._closed_in = _tree_or_none()
        run = self._current
        if run is None or self._listened is None:
            raise NothingToDo("the HTTP server never listened")
        if run.done.is_set():
            raise NothingToDo("the HTTP server is not running (its child is stopped)")
        run.trigger.set()
        ticks = 0
        while not run.done.is_set() and any(sock.fileno() != -1 for sock in run.sockets):
            ticks += 1
            await trio.sleep(0 if ticks <= _CLOSE_TICKS else _CLOSE_POLL)
        log(
            logging.INFO,
            "HTTP server stopped accepting; %d request(s) in flight",
            self._in_flight,
            path=run.path,
            kind="HTTP_STOPPED_ACCEPTING",
            to=logger,
        )

    async def _asgi(self, run: _Run, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(self._app, scope, receive, send)
            return
        if scope["type"] == "http" and run.trigger.is_set():
            # The request reached the app after the listeners began to close. Hypercorn may
            # be closing its connection as idle at this very moment (its graceful close
            # races with a new connection's first request), and then the client never
            # sees an answer: refuse it unrun, so that no unanswered request had an effect.
            await _respond(send, 503, _json({"error": "shutting down"}), headers=_CLOSE)
            run.request_ended()
            return
        http = scope["type"] == "http"
        if http and _ambiguous_framing(scope):
            body = _json({"error": _AMBIGUOUS_FRAMING})
            await _respond(send, 400, body, headers=_CLOSE)
            return
        scope = _origin_form(scope)
        request: _Request | None = None
        if http:
            request = _Request(run, receive, send, self._body_timeout)
            receive, send = request.receive, request.send
        self._in_flight += 1
        try:
            await self._app(scope, receive, send)
        except trio.Cancelled:
            if run.trigger.is_set():
                run.cut += 1
            raise
        except Exception:
            # Told that the client is gone (its body timed out, answered 408), the app
            # raised as apps do then (Starlette's ClientDisconnect): the client's fault.
            if request is None or not request.timed_out:
                raise
        finally:
            self._in_flight -= 1
            if http and run.trigger.is_set():
                run.request_ended()


@final
class _Request:
    """The ``receive`` and ``send`` that one HTTP request's app gets from ``HTTPServer``.

    Its body must arrive within ``body_timeout``: hypercorn bounds the wait for a request's
    head (its ``keep_alive_timeout``: the connection counts as idle until a whole head has
    arrived), but not the wait for its body, so a client that announces 1,000 bytes and
    sends 10 held the request forever. Hypercorn's ``read_timeout`` is no help: it bounds
    each read, and also cuts the connection of a long request whose client is waiting,
    quietly, for the answer. Past the deadline the client gets 408 and ``Connection:
    close`` (unless a response has started), and the app gets ``http.disconnect``: what it
    hears when a client goes away. What the app sends after that is dropped.

    A response started once the run's trigger fired says ``Connection: close``: the
    client then opens a new connection for its next request (refused, or answered by
    another replica) instead of sending it on one that hypercorn is about to close.
    """

    __slots__ = (
        "_deadline",
        "_done",
        "_receive",
        "_run",
        "_send",
        "_started",
        "_timeout",
        "timed_out",
    )

    def __init__(self, run: _Run, receive: Receive, send: Send, timeout: float) -> None:
        self._run = run
        self._receive = receive
        self._send = send
        self._timeout = timeout
        self._deadline = trio.current_time() + timeout
        self._done = False  # the whole body has been received
        self._started = False  # a response has started
        self.timed_out = False

    async def receive(self) -> Message:
        if self._done or self.timed_out:
            return await self._receive()
        with trio.move_on_at(self._deadline):
            message = await self._receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                self._done = True
            return message
        self.timed_out = True
        log(
            logging.INFO,
            "request body not received within body_timeout (%gs); answered 408",
            self._timeout,
            path=current_child_path(),
            kind="HTTP_BODY_TIMEOUT",
            to=logger,
        )
        if not self._started:
            self._started = True
            error = f"the request body did not arrive within {self._timeout:g}s"
            await _respond(self._send, 408, _json({"error": error}), headers=_CLOSE)
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.timed_out:
            return
        if message["type"] == "http.response.start":
            self._started = True
            if self._run.trigger.is_set():
                headers = list(message.get("headers", ()))
                if not any(name.lower() == b"connection" for name, _ in headers):
                    message = {**message, "headers": [*headers, *_CLOSE]}
        await self._send(message)


def _connection_of_current_request() -> trio.Nursery:
    # Hypercorn's Trio worker runs each request's app in a task of its connection's nursery,
    # whose body is the task reading the connection.
    nursery = trio.lowlevel.current_task().parent_nursery
    assert nursery is not None
    return nursery


async def _close_stuck_connections(run: _Run) -> None:
    """Once the trigger fired, cancel the connections that hypercorn leaves open.

    When a keep-alive client's next request arrives while the current one is still
    finishing, hypercorn's HTTP/1.1 reader waits for the connection to be recycled (h11
    PAUSED). If the shutdown began in between, hypercorn closes the socket instead, but its
    reader goes on waiting, so the connection's task lives until the graceful timeout or
    the deadline. A connection with no task left (no request, no keep-alive timer) after
    its last request ended has nothing more to do: cancelling it loses nothing, since the
    unread request never ran. Taskless at two checks in a row, not one: between stopping its
    keep-alive timer and starting the next request's task, a live connection has no task
    for a moment.
    """
    await run.trigger.wait()
    ended = run.ended
    while True:
        await trio.sleep(_STUCK_POLL)
        for connection, was_taskless in list(ended.items()):
            taskless = not connection.child_tasks
            if taskless and was_taskless:
                connection.cancel_scope.cancel()
                del ended[connection]
            else:
                ended[connection] = taskless


def _ambiguous_framing(scope: Scope) -> bool:
    """Both ``Content-Length`` and ``Transfer-Encoding``: h11 reads the body by the latter
    and keeps the connection; a proxy in front may have read it by the former, and the rest
    is then a request it never saw (smuggling). RFC 9112, 6.3: reject it, or close after it.
    """
    names = {name.lower() for name, _ in scope["headers"]}
    return b"content-length" in names and b"transfer-encoding" in names


def _origin_form(scope: Scope) -> Scope:
    """``scope`` with the path of an absolute-form target (``GET http://host/path``).

    RFC 9112, 3.2.2: "a server MUST accept the absolute-form in requests"; hypercorn passes
    the whole URL on as the path, which no route matches.
    """
    scheme, separator, rest = (scope.get("raw_path") or b"").partition(b"://")
    if not separator or scheme.lower() not in (b"http", b"https"):
        return scope
    slash = rest.find(b"/")
    raw_path = rest[slash:] if slash >= 0 else b"/"
    # As hypercorn makes the path of an origin-form target.
    return {**scope, "raw_path": raw_path, "path": unquote(raw_path.decode("ascii"))}


def _lone_error(group: BaseExceptionGroup[BaseException]) -> Exception | None:
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    if isinstance(error, Exception) and not isinstance(error, BaseExceptionGroup):
        return error
    return None


async def _lifespan(app: AnyASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run ``app``'s lifespan; answer for it if it returns without answering.

    Hypercorn treats an app that raises on the lifespan scope as having no lifespan, but
    one that simply returns (``if scope["type"] != "http": return``, common in plain ASGI)
    makes its startup or shutdown fail on a closed channel.
    """
    received: set[str] = set()
    answered: set[str] = set()

    async def tracked_receive() -> Message:
        message = await receive()
        received.add(str(message.get("type")))
        return message

    async def tracked_send(message: Message) -> None:
        answered.add(str(message.get("type")))
        await send(message)

    await app(scope, tracked_receive, tracked_send)
    for step in ("startup", "shutdown"):
        if answered & {f"lifespan.{step}.complete", f"lifespan.{step}.failed"}:
            continue
        if f"lifespan.{step}" not in received:
            await receive()
        await send({"type": f"lifespan.{step}.complete"})


# ---------------------------------------------------------------------------- health_app


def _json(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str = _JSON,
    *,
    head: bool = False,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode("latin-1")),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body})


def _not_live_reason(tree: SupervisorTree) -> str:
    root = tree.info("")
    if root.last_error is not None:
        return f"root supervisor failed: {type(root.last_error).__name__}"
    if root.state is ChildState.STOPPED:
        return "root supervisor exited"
    return "root supervisor failed"


@final
class _HealthApp:
    """The ASGI app made by ``health_app``."""

    def __init__(
        self, app: AnyASGIApp | None, metrics: MetricsSource | None, drain: DrainDelay | None
    ) -> None:
        self._app = app
        self._metrics = metrics
        self._drain = drain
        self._routes: dict[str, Callable[[], tuple[int, bytes, str]]] = {
            LIVE_PATH: self._live,
            READY_PATH: self._ready,
            METRICS_PATH: self._metrics_page,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if route is not None:
            method = scope.get("method", "GET")
            if method not in _ALLOWED:
                # The words of the demo's own 405s: one format for every error a client sees.
                allowed = ", ".join(_ALLOWED)
                path = scope.get("path", "")
                body = _json({"error": f"method {method} not allowed on {path}; use {allowed}"})
                await _respond(send, 405, body, headers=[(b"allow", allowed.encode())])
                return
            status, body, content_type = route()
            await _respond(send, status, body, content_type, head=method == "HEAD")
        elif self._app is not None:
            await self._app(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(_no_lifespan, scope, receive, send)
        elif scope["type"] == "http":
            method, path = scope.get("method", "GET"), scope.get("path", "")
            body = _json({"error": f"no such endpoint: {method} {path}"})
            await _respond(send, 404, body, head=scope.get("method") == "HEAD")
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})  # refused: 403

    def _live(self) -> tuple[int, bytes, str]:
        tree = _tree_or_none()
        if tree is None:
            return 503, _json({"live": False, "reason": "not running in a supervisor tree"}), _JSON
        if tree.health().live:
            return 200, _json({"live": True}), _JSON
        return 503, _json({"live": False, "reason": _not_live_reason(tree)}), _JSON

    def _ready(self) -> tuple[int, bytes, str]:
        tree = _tree_or_none()
        if tree is None:
            reason = "not running in a supervisor tree"
        else:
            report = tree.health()
            if report.ready:
                return 200, _json({"ready": True}), _JSON
            if tree.shutting_down:
                reason = "shutting down"
                remaining = self._drain.remaining if self._drain is not None else None
                if remaining:
                    reason = f"shutting down: drain delay, {remaining:.1f} s left"
            elif not report.live:
                reason = _not_live_reason(tree)
            elif tree.info("").state is ChildState.STARTING:
                reason = "starting"
            else:
                reason = f"tree is {report.status.value}"
        return 503, _json({"ready": False, "reason": reason}), _JSON

    def _metrics_page(self) -> tuple[int, bytes, str]:
        if self._metrics is None:
            return 404, _json({"error": "no metrics source configured"}), _JSON
        try:
            body, content_type = self._metrics.exposition()
        except Exception as exc:
            log(
                logging.ERROR,
                "metrics exposition failed",
                path=current_child_path(),
                kind="METRICS_FAILED",
                exc_info=exc,
                to=logger,
            )
            return 500, _json({"error": f"metrics exposition failed: {type(exc).__name__}"}), _JSON
        return 200, body, content_type


async def _no_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    # Answered by _lifespan on its behalf.
    return


def health_app(
    app: AnyASGIApp | None = None,
    *,
    metrics: MetricsSource | None = None,
    drain: DrainDelay | None = None,
) -> ASGIApp:
    """An ASGI app that answers the health probes and passes everything else to ``app``.

    It finds the tree with ``current_tree()`` at request time, so it must be served from
    inside the tree (``HTTPServer`` does). Responses are JSON with ``Cache-Control:
    no-store``; ``HEAD`` is answered like ``GET`` without a body; any other method gets
    405 with an ``Allow`` header.

    * ``GET /health/live``: 200 ``{"live": true}`` while the tree is alive (its root has
      neither exited nor failed), else 503 ``{"live": false, "reason": ...}``.
    * ``GET /health/ready``: 200 ``{"ready": true}`` when ``tree.health().ready``, else
      503 ``{"ready": false, "reason": ...}`` with the reason: ``"starting"``,
      ``"shutting down: drain delay, 3.2 s left"`` (while ``drain`` runs), ``"shutting
      down"``, ``"root supervisor failed: ..."``.
    * ``GET /metrics``: ``metrics.exposition()`` with its content type; 404 when no
      ``metrics`` was given, 500 when it raised (logged).

    Other paths, WebSocket connections and the lifespan go to ``app``; without one,
    404 JSON (a WebSocket is refused).

    Args:
      app: the ASGI app behind it, or None.
      metrics: the source of ``/metrics`` (see ``MetricsSource``), or None.
      drain: the tree's ``DrainDelay``, for the time left in the readiness reason.

    Raises:
      SpecError: for an ``app`` that is not an async callable, a ``metrics`` without
        ``exposition()``, or a ``drain`` that is not a ``DrainDelay``.
    """
    if app is not None:
        _check_app("health_app", "app", app)
    if metrics is not None and not callable(getattr(metrics, "exposition", None)):
        raise SpecError(
            f"health_app: metrics must have an exposition() method returning (body,"
            f" content_type) (got {metrics!r})"
        )
    if drain is not None and not isinstance(drain, DrainDelay):
        raise SpecError(f"health_app: drain must be a DrainDelay or None (got {drain!r})")
    return _HealthApp(app, metrics, drain)
