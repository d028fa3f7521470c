"""Targets (``_dsn``): which database a path, URL or DSN names, shown without its password."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from trio_supervise.integrations.database import open_database
from trio_supervise.integrations.database._dsn import parse_target, redact

ACCEPTED = re.escape(
    "a SQLite file path such as 'data/app.db', 'sqlite:///relative/app.db',"
    " 'sqlite:////absolute/app.db', ':memory:', or a PostgreSQL DSN such as"
    " 'postgresql://user:password@localhost:5432/dbname'"
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("app.db", ("sqlite", "app.db")),
        ("/var/lib/app/app.db", ("sqlite", "/var/lib/app/app.db")),
        ("sqlite:///data/app.db", ("sqlite", "data/app.db")),
        ("sqlite:////var/lib/app.db", ("sqlite", "/var/lib/app.db")),
        ("SQLite:///app.db", ("sqlite", "app.db")),
        (":memory:", ("sqlite", ":memory:")),
        ("sqlite://", ("sqlite", ":memory:")),
        ("sqlite:///:memory:", ("sqlite", ":memory:")),
        (Path("data") / "app.db", ("sqlite", "data/app.db")),
        ("postgresql://u:p@db:5432/app", ("postgresql", "postgresql://u:p@db:5432/app")),
        ("postgres://db/app", ("postgresql", "postgres://db/app")),
        ("PostgreSQL://db/app", ("postgresql", "PostgreSQL://db/app")),
    ],
)
def test_accepted_targets(given: object, expected: tuple[str, str]) -> None:
    assert parse_target(given) == expected


@pytest.mark.parametrize(
    ("given", "error", "message"),
    [
        ("", ValueError, rf"^open_database: target is empty; give {ACCEPTED}$"),
        ("   ", ValueError, rf"^open_database: target is empty; give {ACCEPTED}$"),
        (None, TypeError, rf"^open_database: target must be {ACCEPTED} \(got None\)$"),
        (42, TypeError, rf"^open_database: target must be {ACCEPTED} \(got 42\)$"),
        (b"app.db", TypeError, rf"^open_database: target must be {ACCEPTED} \(got b'app.db'\)$"),
        (
            "mysql://root:secret@db/app",
            ValueError,
            r"^open_database: unsupported database URL scheme 'mysql' in"
            rf" 'mysql://root:\*\*\*@db/app'; give {ACCEPTED}$",
        ),
        (
            "sqlite://server/app.db",
            ValueError,
            r"^open_database: SQLite URL 'sqlite://server/app.db' names no file; write"
            r" 'sqlite:///relative/app.db' \(three slashes\) or 'sqlite:////absolute/app.db'"
            r" \(four\), or 'sqlite:///:memory:'$",
        ),
        ("sqlite:///", ValueError, r"^open_database: SQLite URL 'sqlite:///' names no file"),
        (
            "host=db dbname=app password=secret",
            ValueError,
            r"^open_database: 'host=db dbname=app password=secret' looks like a libpq"
            r" 'key=value' connection string; write it as a URL such as"
            r" 'postgresql://user:password@host:5432/dbname'$",
        ),
    ],
)
async def test_bad_targets(given: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        await open_database(given)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://app:secret@db/app", "postgresql://app:***@db/app"),
        (
            "postgresql://app:s%40cr3t@db:5432/app?sslmode=require",
            "postgresql://app:***@db:5432/app?sslmode=require",
        ),
        (
            "postgresql://db/app?user=app&password=secret&x=1",
            "postgresql://db/app?user=app&password=***&x=1",
        ),
        ("postgresql://app@db/app", "postgresql://app@db/app"),
        ("data/app.db", "data/app.db"),
    ],
)
def test_passwords_are_redacted(given: str, expected: str) -> None:
    assert redact(given) == expected
