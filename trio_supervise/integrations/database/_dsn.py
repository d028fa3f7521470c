"""Targets: which database a path, URL or DSN names, and how to show it without a password."""

from __future__ import annotations

import os
import re
from typing import Literal

ACCEPTED = (
    "a SQLite file path such as 'data/app.db', 'sqlite:///relative/app.db',"
    " 'sqlite:////absolute/app.db', ':memory:', or a PostgreSQL DSN such as"
    " 'postgresql://user:password@localhost:5432/dbname'"
)

_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_CONNINFO = re.compile(r"^\s*(host|hostaddr|port|dbname|user|password|service)\s*=", re.I)


def redact(target: str) -> str:
    """The target with any password replaced by ``***``, for messages and logs."""
    target = re.sub(r"(://[^:/@?#]*:)[^@/?#]*@", r"\1***@", target)
    return re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", target)


def parse_target(target: object) -> tuple[Literal["sqlite", "postgresql"], str]:
    """Which database ``target`` names, and its path (SQLite) or DSN (PostgreSQL).

    Raises:
      TypeError, ValueError: ``target`` is none of the ``ACCEPTED`` forms.
    """
    if isinstance(target, os.PathLike):
        target = os.fspath(target)
    if not isinstance(target, str):
        raise TypeError(f"open_database: target must be {ACCEPTED} (got {target!r})")
    if not target.strip():
        raise ValueError(f"open_database: target is empty; give {ACCEPTED}")
    match = _URL_SCHEME.match(target)
    if match:
        scheme = match.group(1).lower()
        if scheme in ("postgresql", "postgres"):
            return "postgresql", target
        if scheme != "sqlite":
            raise ValueError(
                f"open_database: unsupported database URL scheme {scheme!r} in"
                f" {redact(target)!r}; give {ACCEPTED}"
            )
        rest = target[len(match.group(0)) :]
        if rest == "":
            return "sqlite", ":memory:"
        if not rest.startswith("/") or rest == "/":
            raise ValueError(
                f"open_database: SQLite URL {target!r} names no file; write"
                " 'sqlite:///relative/app.db' (three slashes) or 'sqlite:////absolute/app.db'"
                " (four), or 'sqlite:///:memory:'"
            )
        return "sqlite", rest[1:]
    if _CONNINFO.match(target):
        raise ValueError(
            f"open_database: {redact(target)!r} looks like a libpq 'key=value' connection"
            " string; write it as a URL such as 'postgresql://user:password@host:5432/dbname'"
        )
    return "sqlite", target
