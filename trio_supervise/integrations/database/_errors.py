"""The database integration's own errors (errors of the SQL itself are the driver's)."""

from __future__ import annotations


class DatabaseError(Exception):
    """The database cannot be opened or used as asked (not an error of the SQL itself)."""


class DatabaseClosedError(DatabaseError):
    """A call on a database that ``aclose()`` has closed (or is closing)."""


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached now; the same call may succeed later.

    Raised for a PostgreSQL server that refuses or drops the connection (down, restarting,
    unreachable, or refusing this user or database), and for a SQLite database whose write
    lock another connection held for longer than ``SQLITE_BUSY_TIMEOUT``. The driver's error
    is the ``__cause__``. A write that raised it on SQLite was not made; on PostgreSQL it
    was not made either, unless the connection was lost after the server had received the
    statement (then the client cannot know whether it was committed).

    Attributes:
      reason: a short reason without the DSN or the path, fit to show a client or a
        readiness probe: ``"cannot connect to the PostgreSQL server"``, ``"lost the
        connection to the PostgreSQL server"``, ``"the SQLite database is locked by another
        connection"``. The message (``str(exc)``) names the database and the driver's words.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
