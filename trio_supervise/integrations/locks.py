"""Locks held across replicas, for children that must run on one replica at a time (§9).

``PostgresLock(dsn, key)`` is a PostgreSQL session advisory lock (the extra ``postgres``);
``EtcdLock(endpoints, key, ttl)`` an etcd v3 lease and key (the extra ``etcd``: httpx, through
etcd's JSON gateway; see ``EtcdLock``); ``FileLock(path)`` a lock file, for replicas on one
machine (``flock``).
``async with lock.hold(holder) as lease`` waits until this replica holds it, and releases
it on exit; ``lease.lost`` is set the moment the session that holds it is found broken (the
server has then released it, so the work must stop at once). ``await lock.holder()`` names
who holds it now, from the server's own view.

The key is mapped to the advisory lock's 64-bit integer by ``advisory_key``: the first 8 bytes
of the SHA-256 of the key's UTF-8, read as a signed big-endian integer. Other programs can
share the lock by computing the same, e.g. in SQL::

    SELECT ('x' || left(encode(sha256(convert_to('compaction', 'UTF8')), 'hex'), 16))
           ::bit(64)::bigint;

Each hold uses a connection of its own, named after the holder (``application_name``), which
is how ``holder()`` finds it. A waiting hold waits in the server (``pg_advisory_lock``), so
it gets the lock the moment the holder lets go, in rounds of ``WAIT_ROUND`` seconds (its
``lock_timeout``) between which it names the holder and can be cancelled. Every statement
is bounded, and runs in a worker thread.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, final

import trio

from .._context import current_child_path
from .._errors import SpecError
from .._events import log
from .._singleton import LockLease, ReportHolder, default_holder

__all__ = [
    "EtcdError",
    "EtcdLock",
    "FileLock",
    "LockLease",
    "PostgresLock",
    "advisory_key",
    "default_holder",
]

if TYPE_CHECKING:
    import psycopg

logger = logging.getLogger("trio_supervise.locks")

#: Seconds between two attempts to take the lock while another replica holds it (etcd), or
#: to reach the server after a failure (both).
POLL_EVERY: Final = 0.5
#: Seconds between two tries of a waiting ``FileLock``: a local system call, so often.
FILE_POLL_EVERY: Final = 0.05
#: Seconds one wait for a PostgreSQL lock lasts in the server: how late a cancelled waiting
#: hold returns.
WAIT_ROUND: Final = 0.5
#: Seconds between two pings of the holding session: how late a lost lock may be noticed.
PING_EVERY: Final = 0.5
#: Seconds a connect or a statement may take.
STATEMENT_TIMEOUT: Final = 5


def _here(kind: str) -> dict[str, Any]:
    """The fields of a lock's log record: the child that holds or waits, if any."""
    return {"path": current_child_path(), "kind": kind, "to": logger}


def advisory_key(key: str) -> int:
    """The advisory lock's integer for ``key`` (see the module docstring)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    value: int = struct.unpack(">q", digest[:8])[0]
    return value


@asynccontextmanager
async def _watched(lease: LockLease, watch: Callable[[], Any]) -> AsyncIterator[LockLease]:
    """Yield ``lease`` while ``watch()`` runs beside the body; the body's errors as themselves.

    A body that raises inside a nursery would come out wrapped in an ExceptionGroup; the
    watcher never raises (it loses the lease instead), so the body's error is the only one.
    """
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            try:
                yield lease
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


@final
class PostgresLock:
    """A PostgreSQL session advisory lock named ``key``.

    Raises:
      SpecError: for a DSN or key that is not a non-empty str.
    """

    def __init__(self, dsn: str, key: str) -> None:
        for name, value in (("dsn", dsn), ("key", key)):
            if not isinstance(value, str) or not value:
                raise SpecError(f"PostgresLock: {name} must be a non-empty str (got {value!r})")
        self.dsn = dsn
        self.key = key
        self.number = advisory_key(key)

    def __repr__(self) -> str:
        return f"PostgresLock(key={self.key!r}, number={self.number})"

    @asynccontextmanager
    async def hold(
        self, holder: str | None = None, *, report_holder: ReportHolder | None = None
    ) -> AsyncIterator[LockLease]:
        """Wait until this replica holds the lock; release it on exit.

        While waiting, ``report_holder`` gets the holder's name after each attempt; a
        server that cannot be reached is waited out (logged), as another holder is.
        """
        import psycopg

        lease = LockLease(holder or default_holder())
        connection: psycopg.Connection[Any] | None = None
        try:
            while True:
                try:
                    if connection is None or connection.closed:
                        connection = await trio.to_thread.run_sync(self._connect, lease.holder)
                    held, other = await trio.to_thread.run_sync(self._wait_round, connection)
                except psycopg.OperationalError as exc:
                    if connection is not None:
                        connection.close()
                        connection = None
                    log(
                        logging.INFO,
                        "%r: still waiting (%s)",
                        self,
                        str(exc).strip(),
                        **_here("LOCK_WAITING"),
                    )
                    await trio.sleep(POLL_EVERY)
                    continue
                if held:
                    break
                if report_holder is not None:
                    report_holder(other)
                await trio.lowlevel.checkpoint()
            assert connection is not None
            async with _watched(lease, lambda: self._watch(connection, lease)):
                yield lease
        finally:
            if connection is not None:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(self._release, connection, lease)

    async def holder(self) -> str | None:
        """The ``application_name`` of the session that holds the lock now, or None."""
        return await trio.to_thread.run_sync(self._holder)

    # ------------------------------------------------------------- in worker threads

    def _connect(self, holder: str) -> psycopg.Connection[Any]:
        import psycopg

        return psycopg.connect(
            self.dsn,
            autocommit=True,
            application_name=holder[:63],
            connect_timeout=STATEMENT_TIMEOUT,
            options=(
                f"-c statement_timeout={STATEMENT_TIMEOUT * 1000}"
                f" -c lock_timeout={int(WAIT_ROUND * 1000)}"
            ),
        )

    def _wait_round(self, connection: psycopg.Connection[Any]) -> tuple[bool, str | None]:
        """Wait up to ``WAIT_ROUND`` for the lock; if it is still held, name the holder."""
        import psycopg

        try:
            connection.execute("SELECT pg_advisory_lock(%s)", (self.number,))
        except psycopg.errors.LockNotAvailable:
            row = connection.execute(_HOLDER_SQL, self._halves()).fetchone()
            return False, None if row is None else str(row[0])
        return True, None

    def _halves(self) -> tuple[int, int]:
        """The (classid, objid) under which pg_locks shows a one-integer advisory lock."""
        unsigned = self.number & 0xFFFF_FFFF_FFFF_FFFF
        return unsigned >> 32, unsigned & 0xFFFF_FFFF

    async def _watch(self, connection: psycopg.Connection[Any], lease: LockLease) -> None:
        import psycopg

        while True:
            # A session the server ends (terminated, or the server stopping) makes the
            # socket readable at once: noticed then, not at the next ping. The ping finds
            # the rest (a dead network) and reads whatever arrived.
            with trio.move_on_after(PING_EVERY):
                await trio.lowlevel.wait_readable(connection.fileno())
            try:
                await trio.to_thread.run_sync(self._ping, connection)
            except psycopg.Error as exc:
                lease.lose(f"the session holding {self!r} broke: {str(exc).strip()}")
                log(logging.INFO, "%s", lease.lost_reason, **_here("LOCK_LOST"))
                return

    def _ping(self, connection: psycopg.Connection[Any]) -> None:
        connection.execute("SELECT 1").fetchone()

    def _release(self, connection: psycopg.Connection[Any], lease: LockLease) -> None:
        import psycopg

        try:
            if not lease.lost.is_set() and not connection.closed:
                connection.execute("SELECT pg_advisory_unlock(%s)", (self.number,))
        except psycopg.Error:
            pass  # the session is gone: the server released the lock with it
        finally:
            connection.close()

    def _holder(self) -> str | None:
        import psycopg

        with psycopg.connect(
            self.dsn, autocommit=True, connect_timeout=STATEMENT_TIMEOUT
        ) as connection:
            row = connection.execute(_HOLDER_SQL, self._halves()).fetchone()
        return None if row is None else str(row[0])


# The session holding a one-integer advisory lock, by the halves of its number.
_HOLDER_SQL: Final = (
    "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
    " AND l.classid = %s AND l.objid = %s LIMIT 1"
)


# ------------------------------------------------------------------------------- file


@final
class FileLock:
    """An exclusive ``flock`` on ``path``, for replicas on one machine (systemd instances).

    The holder writes its name into the file, which is how ``holder()`` and the waiting
    replicas name it. The kernel releases the lock when the holder's process ends however
    it ends, so a killed holder's lock is free at once; it cannot be lost while held. A
    waiting replica tries every ``FILE_POLL_EVERY`` seconds. The file is created if missing and
    left in place (removing it would let two processes lock two different files).

    Raises:
      SpecError: for a path that is not a non-empty str or path.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise SpecError(f"FileLock: path must be a non-empty file path (got {path!r})")
        self.path = os.fspath(path)

    def __repr__(self) -> str:
        return f"FileLock({self.path!r})"

    @asynccontextmanager
    async def hold(
        self, holder: str | None = None, *, report_holder: ReportHolder | None = None
    ) -> AsyncIterator[LockLease]:
        """Wait until this replica holds the lock; release it on exit."""
        lease = LockLease(holder or default_holder())
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        locked = False
        try:
            while not _try_flock(fd):
                if report_holder is not None:
                    report_holder(_read_holder(fd))
                await trio.sleep(FILE_POLL_EVERY)
            locked = True
            os.ftruncate(fd, 0)
            os.pwrite(fd, lease.holder.encode("utf-8"), 0)
            yield lease
        finally:
            if locked:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    async def holder(self) -> str | None:
        """The name the holder wrote into the file, or None when nobody holds the lock."""
        await trio.lowlevel.checkpoint()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            if _try_flock(fd):
                fcntl.flock(fd, fcntl.LOCK_UN)
                return None
            return _read_holder(fd)
        finally:
            os.close(fd)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_holder(fd: int) -> str | None:
    name = os.pread(fd, 256, 0).decode("utf-8", "replace")
    return name or None  # empty for the moment between the holder's flock and its write


# ------------------------------------------------------------------------------- etcd


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _value(range_answer: dict[str, Any]) -> str | None:
    """The value of the first key of a range answer (the holder's name), or None."""
    kvs = range_answer.get("kvs") or []
    if not kvs:
        return None
    return base64.b64decode(kvs[0].get("value", "")).decode("utf-8", "replace")


@final
class EtcdLock:
    """An etcd v3 lock: a key put only if absent, bound to a lease of ``ttl`` seconds.

    ``hold()`` grants a lease and puts the key in a transaction that succeeds only when the
    key does not exist, polling until it does; it renews the lease every third of ``ttl``.
    The lease is lost when a renewal fails or answers TTL 0, and also when no renewal has
    succeeded for two thirds of ``ttl``: the lease may still live on the server, so stopping
    then leaves the work stopped while at least a third of the ttl is left, before another
    replica could be granted the key. On exit the lease is revoked, which deletes the key:
    a graceful stop hands over at once. Each call tries the endpoints in turn.

    Raises:
      SpecError: for no endpoints, an empty key, or a ttl that is not a whole number of
        seconds >= 1 (etcd leases are whole seconds).
    """

    def __init__(self, endpoints: Sequence[str], key: str, ttl: float = 10.0) -> None:
        if isinstance(endpoints, str) or not endpoints:
            raise SpecError(
                f"EtcdLock: endpoints must be a non-empty sequence of URLs such as"
                f" ['http://127.0.0.1:2379'] (got {endpoints!r})"
            )
        for endpoint in endpoints:
            if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
                raise SpecError(
                    f"EtcdLock: each endpoint must be an http:// or https:// URL (got {endpoint!r})"
                )
        if not isinstance(key, str) or not key:
            raise SpecError(f"EtcdLock: key must be a non-empty str (got {key!r})")
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl != int(ttl) or ttl < 1:
            raise SpecError(
                f"EtcdLock: ttl must be a whole number of seconds >= 1 (got {ttl!r}); etcd"
                " leases are whole seconds"
            )
        self.endpoints = tuple(endpoint.rstrip("/") for endpoint in endpoints)
        self.key = key
        self.ttl = int(ttl)

    def __repr__(self) -> str:
        return f"EtcdLock(key={self.key!r}, ttl={self.ttl})"

    @asynccontextmanager
    async def hold(
        self, holder: str | None = None, *, report_holder: ReportHolder | None = None
    ) -> AsyncIterator[LockLease]:
        """Wait until this replica holds the key; revoke its lease on exit.

        While waiting, ``report_holder`` gets the holder's name after each attempt.
        """
        import httpx

        lease = LockLease(holder or default_holder())
        async with httpx.AsyncClient(trust_env=False, timeout=self.ttl / 3) as client:
            lease_id: str | None = None
            try:
                while True:
                    try:
                        granted = await self._call(client, "/v3/lease/grant", {"TTL": self.ttl})
                        lease_id = str(granted["ID"])
                        held, other = await self._put_if_absent(client, lease.holder, lease_id)
                        if held:
                            break
                        await self._call(client, "/v3/lease/revoke", {"ID": lease_id})
                        if report_holder is not None:
                            report_holder(other)
                    except (httpx.HTTPError, EtcdError) as exc:
                        # Waiting goes on through an election or an unreachable member; a
                        # lease granted before the failure expires by itself.
                        log(
                            logging.INFO,
                            "%r: still waiting (%s: %s)",
                            self,
                            type(exc).__name__,
                            exc,
                            **_here("LOCK_WAITING"),
                        )
                    lease_id = None
                    await trio.sleep(POLL_EVERY)
                held_id = lease_id
                async with _watched(lease, lambda: self._renew(client, held_id, lease)):
                    yield lease
            finally:
                if lease_id is not None:
                    with (
                        trio.CancelScope(shield=True),
                        trio.move_on_after(self.ttl / 3),
                        contextlib.suppress(httpx.HTTPError, EtcdError),
                    ):
                        await self._call(client, "/v3/lease/revoke", {"ID": lease_id})

    async def holder(self) -> str | None:
        """The holder's name stored in the key, or None when nobody holds it."""
        import httpx

        async with httpx.AsyncClient(trust_env=False, timeout=self.ttl / 3) as client:
            found = await self._call(client, "/v3/kv/range", {"key": _b64(self.key)})
        return _value(found)

    async def _put_if_absent(
        self, client: Any, holder: str, lease_id: str
    ) -> tuple[bool, str | None]:
        """Put the key if absent; else read who holds it, in the same transaction."""
        key = _b64(self.key)
        answer = await self._call(
            client,
            "/v3/kv/txn",
            {
                "compare": [{"target": "CREATE", "key": key, "createRevision": "0"}],
                "success": [{"requestPut": {"key": key, "value": _b64(holder), "lease": lease_id}}],
                "failure": [{"requestRange": {"key": key}}],
            },
        )
        if answer.get("succeeded"):
            return True, None
        responses = answer.get("responses") or [{}]
        return False, _value(responses[0].get("response_range", {}))

    async def _renew(self, client: Any, lease_id: str, lease: LockLease) -> None:
        import httpx

        renewed = trio.current_time()
        while True:
            await trio.sleep_until(renewed + self.ttl / 3)
            problem = "no answer"
            with trio.move_on_at(renewed + 2 * self.ttl / 3):
                while True:
                    try:
                        answer = await self._call(client, "/v3/lease/keepalive", {"ID": lease_id})
                    except (httpx.HTTPError, EtcdError) as exc:
                        problem = f"{type(exc).__name__}: {exc}"
                        await trio.sleep(0.1)
                        continue
                    if int(answer.get("result", {}).get("TTL", 0)) > 0:
                        renewed, problem = trio.current_time(), ""
                    else:
                        problem = "the lease expired"
                    break
            if problem:
                lease.lose(
                    f"{self!r}: its lease was not renewed ({problem}); stopped while at least"
                    " a third of the ttl was left"
                )
                log(logging.INFO, "%s", lease.lost_reason, **_here("LOCK_LOST"))
                return

    async def _call(self, client: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``path`` on the first endpoint that answers."""
        import httpx

        failure: BaseException | None = None
        for endpoint in self.endpoints:
            try:
                response = await client.post(f"{endpoint}{path}", json=body)
            except httpx.HTTPError as exc:
                failure = exc
                continue
            if response.status_code != 200:
                raise EtcdError(
                    f"{endpoint}{path} answered {response.status_code}: {response.text}"
                )
            answer: dict[str, Any] = response.json()
            return answer
        assert failure is not None
        raise failure


@final
class EtcdError(Exception):
    """etcd answered a request with an error."""
