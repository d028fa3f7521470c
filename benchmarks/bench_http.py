"""(g) HTTP: the supervised server's request throughput, and SIGTERM to exit with clients.

Part 1, throughput. A tiny plain-ASGI app answers every ``GET`` with a 13-byte 200. The
load client (``benchmarks/_http_client.py``) runs in its own process, so that it shares
neither the server's event loop nor its interpreter lock: ``load_connections`` (16)
keep-alive connections over loopback, each sending its next request as soon as its
response is complete, for ``duration`` seconds after a warm-up; it reports the responses
per second.

* supervise: the app wrapped by ``health_app`` (with a ``TreeMetrics`` attached to the
  tree), served by ``HTTPServer(...).child_spec()`` in a ``supervisor_tree`` with the
  server's shutdown hook; requests to ``/``.
* bare: the same app served by ``hypercorn.trio.serve(app, config)`` directly.

Both use the same hypercorn settings. Target: supervise / bare requests per second >= 0.9.
``Reporter.target`` checks ``<=``, so the target is registered on the inverse, the time per
request supervise / bare (``http_time_per_request_ratio_median``), at ``1 / 0.9``: the same
condition. The supervised server is also loaded on ``/health/ready``, which walks the tree
for every request (information).

Part 2, SIGTERM to exit. A service process runs ``trio_supervise.run(spec, hooks=...)``:
an ``HTTPServer`` (the app behind ``health_app``) and a ``WebSocketServer`` (an idle
handler) under one root, with a ``DrainDelay(0)`` so that the time is the machinery's, not
a delay's. The benchmark opens ``idle_http`` (100) keep-alive HTTP connections (each
made one request and stays idle) and ``ws_clients`` (100) WebSocket clients, sends
SIGTERM, and times until the process has exited (``pidfd``); it checks that the exit
code is 0, every WebSocket client got the shutdown notice and close code 1001, and every
HTTP connection was closed by the server (an orderly EOF).

* supervise: as above.
* idle: the same process with no connection (the interpreter's exit, the tree's shutdown
  with nothing to drain).
* bare: hypercorn and trio-websocket's ``serve_websocket`` in one nursery, cancelled as a
  whole on SIGTERM, with the same connections (the clients see their TCP connections
  drop: WebSocket code 1006, not 1001).

Most of the time to exit is the interpreter's own exit, so each process also times its
shutdown itself (``sigterm_in_process_*``): with trio_supervise, the tree's
``SHUTDOWN_STARTED`` to ``SHUTDOWN_FINISHED``; bare, from the signal's arrival in its loop
to the end of the cancelled nursery. No target is given for part 2; the values are
printed for information.

Every repetition starts a fresh server (part 1: its own ``trio.run`` in this process; part
2: its own process); the variants are interleaved; every value is the median over the
repetitions. ``--quick`` (a config with fewer children than the default) uses
``QUICK_SIZES``: 2 load connections, 0.05 s counted after 0.02 s, 3 + 3 clients at the
SIGTERM and one repetition of part 2.

The service processes are this module run as ``python -m benchmarks.bench_http --serve
supervise|bare``; they print ``ready HTTP_PORT WS_PORT`` once both servers listen.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from time import perf_counter
from typing import Any, Final, cast

import hypercorn.trio
import trio
import trio_websocket
from hypercorn.config import Config as HypercornConfig
from hypercorn.typing import ASGIFramework
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest

import trio_supervise
from benchmarks._common import Config, Reporter, fresh_heap, median, ratio
from trio_supervise import (
    ChildSpec,
    DrainDelay,
    Event,
    EventKind,
    SupervisorSpec,
    current_tree,
    supervisor_tree,
)
from trio_supervise.integrations.http import HTTPServer, health_app
from trio_supervise.integrations.metrics import TreeMetrics
from trio_supervise.integrations.websocket import GOING_AWAY, WebSocketServer

HOST: Final = "127.0.0.1"
ROOT: Final = Path(__file__).resolve().parent.parent
CLIENT: Final = Path(__file__).resolve().with_name("_http_client.py")
#: The target: supervise / bare requests per second at least this.
TARGET_RPS_RATIO: Final = 0.9
#: Seconds any one step may take before the benchmark gives up (a fail-safe, never a pace).
FAIL_SAFE: Final = 60.0
#: The text every WebSocket client gets before its 1001 (the integration's default).
NOTICE: Final = '{"type": "server_shutdown"}'
BODY: Final = b"Hello, world!"

#: Hypercorn's error log on both sides of part 1: a logger without handlers (the benchmarks
#: never configure logging), as ``HTTPServer`` uses by default.
_ERRORLOG: Final = logging.getLogger("benchmarks.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class Sizes:
    """The sizes of one run of this benchmark."""

    #: Keep-alive connections of the load client.
    load_connections: int
    #: Seconds of load before the counting starts, and seconds counted.
    warmup: float
    duration: float
    #: Idle keep-alive HTTP connections and WebSocket clients at the SIGTERM.
    idle_http: int
    ws_clients: int
    #: Repetitions of part 2 (three processes each); None: ``config.reps``.
    sigterm_reps: int | None = None


FULL_SIZES: Final = Sizes(
    load_connections=16, warmup=0.25, duration=1.0, idle_http=100, ws_clients=100
)
QUICK_SIZES: Final = Sizes(
    load_connections=2, warmup=0.02, duration=0.05, idle_http=3, ws_clients=3, sigterm_reps=1
)


def sizes(config: Config) -> Sizes:
    """``FULL_SIZES`` at the default number of children or more, else ``QUICK_SIZES``."""
    return FULL_SIZES if config.children >= Config().children else QUICK_SIZES


# ----------------------------------------------------------------------------- the servers


async def hello_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The app of every variant: 200 ``Hello, world!``; an orderly lifespan."""
    if scope["type"] == "http":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"content-length", str(len(BODY)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": BODY})
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def server_config() -> HypercornConfig:
    """The hypercorn settings of every variant (``bind`` unset: each variant binds)."""
    config = HypercornConfig()
    # The idle connections of part 2 must stay open until the SIGTERM, however long the
    # clients take to connect; part 1 measures the steady state, not reconnections.
    config.keep_alive_timeout = 600
    config.keep_alive_max_requests = 10**9
    config.errorlog = _ERRORLOG
    return config


def _bare_config() -> HypercornConfig:
    config = server_config()
    config.bind = [f"{HOST}:0"]
    return config


def _port_of(binds: Sequence[str]) -> int:
    return int(binds[0].rsplit(":", 1)[1])


async def _idle_ws_handler(conn: WebSocketConnection) -> None:
    """The WebSocket handler of both service variants: read until the connection closes."""
    while True:
        await conn.get_message()


# --------------------------------------------------------------------- part 1: throughput


async def _load(port: int, path: str, size: Sizes) -> float:
    """Run the load client against ``port``; return its responses per second."""
    command = [
        sys.executable,
        str(CLIENT),
        *("--host", HOST, "--port", str(port), "--path", path),
        *("--connections", str(size.load_connections)),
        *("--warmup", str(size.warmup), "--duration", str(size.duration)),
    ]
    with trio.fail_after(FAIL_SAFE):
        done = await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False
        )
    if done.returncode != 0 or done.stderr:
        raise RuntimeError(
            f"the load client failed ({done.returncode}): {done.stderr.decode(errors='replace')}"
        )
    result = json.loads(done.stdout)
    if result["errors"] or not result["requests"]:
        raise RuntimeError(f"the load on {path} went wrong: {result}")
    return float(result["requests"]) / float(result["seconds"])


async def _bare_rps(size: Sizes) -> float:
    app = cast(ASGIFramework, hello_app)  # hypercorn types scopes as TypedDicts
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(hypercorn.trio.serve, app, _bare_config(), shutdown_trigger=stop.wait)
        )
        try:
            return await _load(_port_of(binds), "/", size)
        finally:
            stop.set()


async def _supervised_rps(size: Sizes) -> tuple[float, float]:
    """Requests per second on ``/`` and on ``/health/ready``."""
    metrics = TreeMetrics()
    server = HTTPServer(
        health_app(hello_app, metrics=metrics), host=HOST, port=0, config=server_config()
    )
    spec = SupervisorSpec("bench-http", [server.child_spec()])
    async with supervisor_tree(spec, hooks=[server.shutdown_hook()]) as tree:
        metrics.attach(tree)
        app = await _load(server.port, "/", size)
        ready = await _load(server.port, "/health/ready", size)
    report = tree.shutdown_report
    if report is None or not report.ok:
        raise RuntimeError(f"the shutdown did not end well: {report}")
    return app, ready


# ---------------------------------------------------------------- part 2: SIGTERM to exit


@dataclass
class _Clients:
    """What the clients of one part-2 run saw."""

    #: Per HTTP connection: "eof" (closed in order), "reset", or "data" (unexpected bytes).
    http: list[str] = field(default_factory=list)
    #: Per WebSocket client: (the close code, the messages it read).
    ws: list[tuple[int, list[str | bytes]]] = field(default_factory=list)


async def _idle_http(port: int, clients: _Clients, *, task_status: trio.TaskStatus[None]) -> None:
    """One request, then idle until the server closes the connection."""
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        await stream.send_all(f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
        response = b""
        while not (response.endswith(BODY) and response.startswith(b"HTTP/1.1 200")):
            data = await stream.receive_some()
            if not data:
                raise RuntimeError(f"the server closed before its response: {response!r}")
            response += data
        task_status.started()
        try:
            data = await stream.receive_some()
        except trio.BrokenResourceError:
            clients.http.append("reset")
        else:
            clients.http.append("data" if data else "eof")


async def _ws_client(port: int, clients: _Clients, *, task_status: trio.TaskStatus[None]) -> None:
    """A WebSocket client that reads until closed; it owns (and closes) its TCP stream.

    ``open_websocket()`` would leave its socket open after a close begun by the server.
    """
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream, trio.open_nursery() as nursery:
        ws = await trio_websocket.wrap_client_stream(nursery, stream, f"{HOST}:{port}", "/ws")
        task_status.started()
        messages: list[str | bytes] = []
        try:
            while True:
                messages.append(await ws.get_message())
        except ConnectionClosed as exc:
            code = exc.reason.code if exc.reason is not None else -1
            clients.ws.append((code, messages))
        finally:
            with trio.move_on_after(FAIL_SAFE, shield=True):
                await ws.aclose()
            nursery.cancel_scope.cancel()


async def _collect(
    stream: trio.abc.ReceiveStream, into: bytearray, line: trio.Event | None = None
) -> None:
    """Read ``stream`` to its end into ``into``; set ``line`` at the first newline or EOF."""
    async with stream:
        async for chunk in stream:
            into += chunk
            if line is not None and b"\n" in into:
                line.set()
    if line is not None:
        line.set()


def _service_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


async def _sigterm_to_exit(
    variant: str, http_connections: int, ws_clients: int
) -> tuple[float, float]:
    """Start a service, connect the clients, send SIGTERM.

    Returns:
      Seconds from the SIGTERM to the exit, and the seconds of the shutdown as the process
      itself timed it: ``supervise``, the tree's ``SHUTDOWN_STARTED`` to its
      ``SHUTDOWN_FINISHED``; ``bare``, from the signal's arrival in its loop to the end of
      the cancelled nursery.
    """
    command = [sys.executable, "-m", "benchmarks.bench_http", "--serve", variant]
    process = await trio.lowlevel.open_process(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_service_env(),
    )
    assert process.stdout is not None
    assert process.stderr is not None
    out, err = bytearray(), bytearray()
    ready = trio.Event()
    clients = _Clients()
    try:
        async with trio.open_nursery() as readers:
            readers.start_soon(_collect, process.stdout, out, ready)
            readers.start_soon(_collect, process.stderr, err)
            with trio.fail_after(FAIL_SAFE):
                await ready.wait()
            words = out.split(b"\n", 1)[0].split()
            if len(words) != 3 or words[0] != b"ready":
                raise RuntimeError(f"the {variant} service did not start: {bytes(err)!r}")
            http_port, ws_port = int(words[1]), int(words[2])
            # The nursery ends once every client has seen its connection close.
            with trio.fail_after(FAIL_SAFE):
                async with trio.open_nursery() as nursery:
                    for _ in range(http_connections):
                        await nursery.start(_idle_http, http_port, clients)
                    for _ in range(ws_clients):
                        await nursery.start(_ws_client, ws_port, clients)
                    start = perf_counter()
                    process.send_signal(signal.SIGTERM)
                    code = await process.wait()
                    elapsed = perf_counter() - start
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    if code != 0 or err:
        raise RuntimeError(f"the {variant} service exited with {code}: {bytes(err)!r}")
    _check_clients(variant, clients, http_connections, ws_clients)
    shutdown = [line.split()[1] for line in out.splitlines() if line.startswith(b"shutdown ")]
    if len(shutdown) != 1:
        raise RuntimeError(f"the {variant} service did not time its shutdown: {bytes(out)!r}")
    return elapsed, float(shutdown[0])


def _check_clients(variant: str, clients: _Clients, http: int, ws: int) -> None:
    if len(clients.http) != http or len(clients.ws) != ws:
        raise RuntimeError(f"{variant}: not every client ended: {clients}")
    if variant == "supervise":
        closed_in_order = clients.http.count("eof") == http
        said_goodbye = all(code == GOING_AWAY and msgs == [NOTICE] for code, msgs in clients.ws)
    else:  # cancelled: the connections just drop, in any way
        closed_in_order = "data" not in clients.http
        said_goodbye = True
    if not (closed_in_order and said_goodbye):
        raise RuntimeError(f"{variant}: the clients did not see the expected close: {clients}")


# ------------------------------------------------------------- the service processes


def _serve_supervised() -> int:
    drain = DrainDelay(0)
    metrics = TreeMetrics()
    http = HTTPServer(
        health_app(hello_app, metrics=metrics, drain=drain),
        host=HOST,
        port=0,
        drain=drain,
        config=server_config(),
    )
    ws = WebSocketServer(_idle_ws_handler, host=HOST, port=0, drain=drain)

    started: list[float] = []

    def on_event(event: Event) -> None:
        if event.kind is EventKind.SHUTDOWN_STARTED:
            started.append(event.time)
        elif event.kind is EventKind.SHUTDOWN_FINISHED and started:
            print(f"shutdown {event.time - started[0]:.6f}", flush=True)

    async def announce(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # The last child: every server listens once it runs.
        tree = current_tree()
        metrics.attach(tree)
        tree.add_event_listener(on_event)
        task_status.started()
        print(f"ready {http.port} {ws.port}", flush=True)
        await trio.sleep_forever()

    spec = SupervisorSpec(
        "bench-http", [http.child_spec(), ws.child_spec(), ChildSpec("announce", announce)]
    )
    return trio_supervise.run(spec, hooks=[drain.hook, http.shutdown_hook(), ws.shutdown_hook()])


async def _bare_ws_handler(request: WebSocketRequest) -> None:
    await _idle_ws_handler(await request.accept())


async def _serve_bare() -> None:
    app = cast(ASGIFramework, hello_app)
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(
                partial(hypercorn.trio.serve, app, _bare_config())
            )
            ws: trio_websocket.WebSocketServer = await nursery.start(
                partial(trio_websocket.serve_websocket, _bare_ws_handler, HOST, 0, None)
            )
            print(f"ready {_port_of(binds)} {ws.port}", flush=True)
            async for _ in signals:
                break
            start = trio.current_time()
            nursery.cancel_scope.cancel()
        print(f"shutdown {trio.current_time() - start:.6f}", flush=True)


def service_main(argv: Sequence[str] | None = None) -> int:
    """The service process of part 2: ``--serve supervise`` or ``--serve bare``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_http")
    parser.add_argument("--serve", choices=("supervise", "bare"), required=True)
    args = parser.parse_args(argv)
    if args.serve == "supervise":
        return _serve_supervised()
    trio.run(_serve_bare)
    return 0


# ------------------------------------------------------------------------------ the run


def run(config: Config, reporter: Reporter) -> None:
    """Parts 1 and 2; target: supervise / bare requests per second >= 0.9."""
    size = sizes(config)
    # No warm-up runs: the load client's own warm-up window covers each server's first
    # requests (and the first run's lazy imports).
    supervised: list[float] = []
    ready: list[float] = []
    bare: list[float] = []
    for _ in range(config.reps):
        fresh_heap()
        app_rps, ready_rps = trio.run(_supervised_rps, size)
        supervised.append(app_rps)
        ready.append(ready_rps)
        fresh_heap()
        bare.append(trio.run(_bare_rps, size))

    n_http, n_ws = size.idle_http, size.ws_clients
    at_sigterm: dict[str, list[float]] = {"loaded": [], "idle": [], "bare": []}
    in_process: dict[str, list[float]] = {"loaded": [], "idle": [], "bare": []}
    for _ in range(size.sigterm_reps or config.reps):
        for key, variant, n, m in (
            ("loaded", "supervise", n_http, n_ws),
            ("idle", "supervise", 0, 0),
            ("bare", "bare", n_http, n_ws),
        ):
            fresh_heap()
            exit_after, shutdown = trio.run(_sigterm_to_exit, variant, n, m)
            at_sigterm[key].append(exit_after)
            in_process[key].append(shutdown)

    r = reporter
    r.comment(
        f"http: {size.load_connections} keep-alive connections from a client process,"
        f" {size.duration:g} s counted after {size.warmup:g} s"
    )
    sup, base = median(supervised), median(bare)
    r.metric("http_rps_supervise_median", sup, "req/s", digits=0)
    r.metric("http_rps_bare_median", base, "req/s", digits=0)
    r.metric("http_rps_ratio_median", ratio(sup, base), "x")
    r.metric("http_time_per_request_ratio_median", ratio(base, sup), "x")
    r.target("http_time_per_request_ratio_median", 1 / TARGET_RPS_RATIO)
    ready_rps = median(ready)
    r.metric("http_ready_rps_supervise_median", ready_rps, "req/s", digits=0)
    r.metric("http_ready_rps_ratio_vs_app_median", ratio(ready_rps, sup), "x")

    r.comment(
        f"sigterm: {n_http} idle keep-alive HTTP connections and {n_ws} WebSocket clients;"
        " no target"
    )
    ms = 1e3
    loaded, idle, cancelled = (median(at_sigterm[k]) for k in ("loaded", "idle", "bare"))
    r.metric("sigterm_to_exit_supervise_ms_median", loaded * ms, "ms")
    r.metric("sigterm_to_exit_idle_ms_median", idle * ms, "ms")
    r.metric("sigterm_to_exit_bare_ms_median", cancelled * ms, "ms")
    r.metric("sigterm_to_exit_ratio_vs_idle_median", ratio(loaded, idle), "x")
    r.metric("sigterm_to_exit_ratio_vs_bare_median", ratio(loaded, cancelled), "x")
    r.metric(
        "sigterm_to_exit_extra_per_connection_us_median",
        (loaded - idle) / (n_http + n_ws) * 1e6,
        "us",
    )
    loaded, idle, cancelled = (median(in_process[k]) for k in ("loaded", "idle", "bare"))
    r.metric("sigterm_in_process_supervise_ms_median", loaded * ms, "ms")
    r.metric("sigterm_in_process_idle_ms_median", idle * ms, "ms")
    r.metric("sigterm_in_process_bare_ms_median", cancelled * ms, "ms")
    r.metric("sigterm_in_process_ratio_vs_bare_median", ratio(loaded, cancelled), "x")


if __name__ == "__main__":
    raise SystemExit(service_main())
