"""A simulated Kubernetes rolling update of the demo, under steady HTTP load (issue 12).

Two replicas (real demo processes on one SQLite database) behind a small load balancer that
routes new connections only to replicas whose ``/health/ready`` answered 200 at its last
poll, as kube-proxy follows the endpoints a readiness probe keeps. The update is Kubernetes'
order: the new pod starts and becomes ready; the old one gets SIGTERM while its removal from
the endpoints reaches the balancer only later; SIGKILL comes at the end of the grace period
``trio-supervise export kubernetes`` computes.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import httpx
import trio
from test_demo import FAIL_SAFE, HOST, Demo, http_client, run_demo_process

from trio_supervise._cli_export import stop_budget

#: How often the balancer asks each replica for its readiness (a readinessProbe period).
PROBE_EVERY = 0.2
#: How long the old pod's removal from the endpoints takes to reach the balancer.
ENDPOINTS_LAG = 1.0
DRAIN_DELAY = 2.0  # > ENDPOINTS_LAG + PROBE_EVERY: the old pod serves until nobody routes to it
SHUTDOWN_DEADLINE = 10.0


@attrs.define(eq=False)
class Backend:
    base: str
    port: int
    ready: bool = False
    removed: bool = False


@attrs.define(eq=False)
class Balancer:
    """Routes each new connection to the next ready backend; pumps bytes both ways."""

    backends: list[Backend] = attrs.Factory(list)
    port: int = 0
    routed: dict[int, int] = attrs.Factory(dict)
    _turn: int = 0

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host=HOST)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._probe)
            task_status.started()
            await trio.serve_listeners(self._route, listeners)

    def _pick(self) -> Backend | None:
        ready = [b for b in self.backends if b.ready and not b.removed]
        if not ready:
            return None
        self._turn += 1
        return ready[self._turn % len(ready)]

    async def _route(self, client: trio.SocketStream) -> None:
        async with client:
            backend = self._pick()
            if backend is None:
                return  # nobody ready: the connection is closed, the client sees a failure
            self.routed[backend.port] = self.routed.get(backend.port, 0) + 1
            try:
                server = await trio.open_tcp_stream(HOST, backend.port)
            except OSError:
                return
            async with server, trio.open_nursery() as nursery:

                async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
                    try:
                        while data := await source.receive_some(65536):
                            await sink.send_all(data)
                        await sink.send_eof()
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(pump, client, server)
                nursery.start_soon(pump, server, client)

    async def _probe(self) -> None:
        async with httpx.AsyncClient(trust_env=False, timeout=1.0) as probe:
            while True:
                for backend in self.backends:
                    try:
                        response = await probe.get(f"{backend.base}/health/ready")
                        backend.ready = response.status_code == 200
                    except httpx.TransportError:
                        backend.ready = False
                await trio.sleep(PROBE_EVERY)


@attrs.define(eq=False)
class Load:
    """Clients posting notes through the balancer, one connection per request."""

    acked: dict[int, str] = attrs.Factory(dict)
    failures: list[str] = attrs.Factory(list)
    latencies: list[float] = attrs.Factory(list)
    sent: int = 0
    stopping: bool = False

    async def client(self, url: str) -> None:
        async with http_client() as client:
            while not self.stopping:
                text = f"note {self.sent}"
                self.sent += 1
                start = time.monotonic()
                try:
                    response = await client.post(f"{url}/notes", json={"text": text})
                except httpx.TransportError as exc:
                    self.failures.append(repr(exc))
                    continue
                self.latencies.append(time.monotonic() - start)
                if response.status_code != 201:
                    self.failures.append(f"{response.status_code} {response.text}")
                    continue
                self.acked[response.json()["id"]] = text
                await trio.sleep(0.01)


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    """Poll ``predicate`` (another process's state); fail after ``FAIL_SAFE`` naming ``what``."""
    try:
        with trio.fail_after(FAIL_SAFE):
            while not predicate():  # noqa: ASYNC110 - another process's state
                await trio.sleep(0.01)
    except trio.TooSlowError:
        raise AssertionError(f"timed out waiting for {what}") from None


@attrs.define(eq=False)
class Rollout:
    """What a run of load through the balancer saw (a rolling update, or none)."""

    load: Load
    stored: dict[int, str]
    seconds: float
    grace: float = 0.0
    old_gone_after: float = 0.0
    old_exit: int | None = None
    routed: dict[int, int] = attrs.Factory(dict)

    def percentile(self, fraction: float) -> float:
        latencies = sorted(self.load.latencies)
        return latencies[min(int(len(latencies) * fraction), len(latencies) - 1)]


OPTIONS = ("--drain-delay", str(DRAIN_DELAY), "--shutdown-deadline", str(SHUTDOWN_DEADLINE))
CLIENTS = 4


def read_notes(db: str) -> dict[int, str]:
    with sqlite3.connect(db) as connection:
        stored = dict(connection.execute("SELECT id, text FROM notes").fetchall())
    connection.close()
    return stored


async def serve_under_load(
    nursery: trio.Nursery, balancer: Balancer, demo: Demo, load: Load, what: str
) -> Backend:
    """Route the balancer to ``demo``, wait until it is ready, then start the clients."""
    backend = Backend(demo.base, demo.http_port)
    balancer.backends.append(backend)
    await nursery.start(balancer.serve)
    await wait_for(lambda: backend.ready, f"{what} ready")
    for _ in range(CLIENTS):
        nursery.start_soon(load.client, f"http://{HOST}:{balancer.port}")
    return backend


async def rolling_update(tmp_path: Path, through_each: int = 50) -> Rollout:
    """Load through the old pod, a rolling update, load through the new one (``through_each``
    requests through each at least)."""
    db = str(tmp_path / "notes.db")
    grace = stop_budget({"drain-delay": DRAIN_DELAY, "shutdown-deadline": SHUTDOWN_DEADLINE})
    balancer = Balancer()
    load = Load()
    async with run_demo_process(tmp_path, db, *OPTIONS) as old, trio.open_nursery() as nursery:
        old_backend = await serve_under_load(nursery, balancer, old, load, "the old pod")
        began = time.monotonic()
        await wait_for(lambda: len(load.acked) >= through_each, "load through the old pod")
        async with run_demo_process(tmp_path, db, *OPTIONS) as new:
            new_backend = Backend(new.base, new.http_port)
            balancer.backends.append(new_backend)
            await wait_for(lambda: new_backend.ready, "the new pod ready")
            # Kubernetes: SIGTERM and the removal from the endpoints at once; the
            # removal reaches the proxies later.
            terminated_at = time.monotonic()
            old.process.send_signal(signal.SIGTERM)
            await trio.sleep(ENDPOINTS_LAG)
            old_backend.removed = True
            with trio.move_on_at(trio.current_time() + grace - ENDPOINTS_LAG):
                await old.process.wait()
            if old.process.returncode is None:
                old.process.kill()  # the kubelet's SIGKILL at the end of the grace period
                await old.process.wait()
            old_gone_after = time.monotonic() - terminated_at
            routed_before = dict(balancer.routed)
            await wait_for(
                lambda: (
                    balancer.routed.get(new_backend.port, 0)
                    > routed_before.get(new_backend.port, 0) + through_each
                ),
                "load through the new pod",
            )
            load.stopping = True
            await trio.sleep(0.5)  # the clients finish their last request
            seconds = time.monotonic() - began
            nursery.cancel_scope.cancel()
            await stop_new(new)
    return Rollout(
        load,
        read_notes(db),
        seconds,
        grace,
        old_gone_after,
        old.process.returncode,
        balancer.routed,
    )


async def steady_load(tmp_path: Path, seconds: float) -> Rollout:
    """The same load through the same balancer for ``seconds``, on one replica left alone."""
    db = str(tmp_path / "steady.db")
    balancer = Balancer()
    load = Load()
    async with run_demo_process(tmp_path, db, *OPTIONS) as only, trio.open_nursery() as nursery:
        await serve_under_load(nursery, balancer, only, load, "the replica")
        await trio.sleep(seconds - 0.5)
        load.stopping = True
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
        await stop_new(only)
    return Rollout(load, read_notes(db), seconds, routed=balancer.routed)


async def test_a_rolling_update_under_load_fails_no_request_and_loses_nothing(
    tmp_path: Path,
) -> None:
    rollout = await rolling_update(tmp_path)
    load = rollout.load
    print(
        f"\nrolling update: {load.sent} requests, {len(load.acked)} acknowledged,"
        f" {len(load.failures)} failed; old pod gone {rollout.old_gone_after:.2f}s after"
        f" SIGTERM (grace {rollout.grace}s, exit {rollout.old_exit}); latency p50"
        f" {rollout.percentile(0.5) * 1000:.1f} ms, p99 {rollout.percentile(0.99) * 1000:.1f} ms;"
        f" routed {rollout.routed}"
    )
    assert load.failures == []
    assert {k: rollout.stored.get(k) for k in load.acked} == load.acked
    assert rollout.old_exit == 0  # a clean shutdown, not the SIGKILL
    assert rollout.old_gone_after < rollout.grace


async def stop_new(new: Demo) -> None:
    new.process.send_signal(signal.SIGTERM)
    with trio.fail_after(FAIL_SAFE):
        await new.process.wait()
