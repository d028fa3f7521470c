"""Migrations: the statements of a schema, each applied once, checked by their checksum."""

from __future__ import annotations

import hashlib
from typing import Protocol

from ._errors import DatabaseError
from ._statements import Row

#: The table ``Database.migrate`` records applied statements in.
MIGRATIONS_TABLE = "trio_supervise_migrations"

#: A fixed key for PostgreSQL's ``pg_advisory_xact_lock``: serialises ``migrate()`` across
#: processes.
MIGRATION_LOCK_KEY = int.from_bytes(hashlib.sha256(MIGRATIONS_TABLE.encode()).digest()[:4], "big")


class Connection(Protocol):
    """What migrating needs of a database's connection (called in its worker thread)."""

    def _begin_sync(self) -> None: ...
    def _migration_lock_sync(self) -> None: ...
    def _raw_sync(self, sql: str) -> None: ...
    def _execute_sync(self, sql: str, params: tuple[object, ...]) -> list[Row]: ...
    def _commit_sync(self) -> None: ...
    def _rollback_sync(self) -> None: ...


def migrate_sync(connection: Connection, statements: list[str], target: str) -> int:
    """Apply the statements not applied yet, in one transaction; how many were applied.

    Raises:
      DatabaseError: an applied statement was changed, or more are applied than given.
    """
    connection._begin_sync()
    try:
        connection._migration_lock_sync()
        connection._raw_sync(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}"
            " (version INTEGER PRIMARY KEY, checksum TEXT NOT NULL)"
        )
        applied = connection._execute_sync(
            f"SELECT version, checksum FROM {MIGRATIONS_TABLE} ORDER BY version", ()
        )
        checksums = [hashlib.sha256(s.encode()).hexdigest() for s in statements]
        if len(applied) > len(statements):
            raise DatabaseError(
                f"migrate(): {target!r} has {len(applied)} migrations applied but"
                f" only {len(statements)} were given; is this an older version of the"
                " program? Never remove an applied migration"
            )
        for version, checksum in applied:
            if checksums[version - 1] != checksum:
                raise DatabaseError(
                    f"migrate(): migration {version} was changed after it was applied to"
                    f" {target!r} (now {statements[version - 1].strip()[:60]!r});"
                    " restore its text and append a new statement for the change"
                )
        for index in range(len(applied), len(statements)):
            connection._raw_sync(statements[index])
            connection._execute_sync(
                f"INSERT INTO {MIGRATIONS_TABLE} (version, checksum) VALUES (?, ?)",
                (index + 1, checksums[index]),
            )
        connection._commit_sync()
    except BaseException:
        connection._rollback_sync()
        raise
    return len(statements) - len(applied)
