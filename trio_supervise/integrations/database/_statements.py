"""The statements a call is given: their checks, what kind they are, and the rows they give."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ... import _checks
from ._errors import DatabaseError

#: One result row.
Row = tuple[Any, ...]

NO_ROW = (
    "insert(): the statement inserted no row (did INSERT OR IGNORE or ON CONFLICT DO"
    " NOTHING skip it?), so there is no id to return; use execute() for statements that"
    " may insert nothing"
)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.S)
_INSERT_KEYWORD = re.compile(r"(?:insert|replace|with)\b", re.I)
# What a query starts with. ``WITH`` may also begin an INSERT, UPDATE or DELETE: such a
# statement is refused by the read-only connection and runs on the write connection.
_QUERY_KEYWORD = re.compile(r"(?:select|with|values)\b", re.I)


def check_sql(what: str, sql: object) -> str:
    if not isinstance(sql, str):
        raise TypeError(f"{what}: sql must be a string of SQL (got {sql!r})")
    if not sql.strip():
        raise ValueError(f"{what}: sql is empty; give one SQL statement")
    return sql


def check_params(what: str, params: object) -> tuple[object, ...]:
    if isinstance(params, str | bytes | bytearray) or not isinstance(params, Sequence):
        raise TypeError(
            f"{what}: params must be a tuple or list of values, one per '?' placeholder"
            f" (got {params!r}); for a single value write (value,)"
        )
    return tuple(params)


def _first_keyword_at(sql: str) -> int:
    start = _LEADING_NOISE.match(sql)
    return start.end() if start else 0


def check_insert(sql: str, id_column: object) -> None:
    if not isinstance(id_column, str) or not _IDENTIFIER.match(id_column):
        raise ValueError(
            f"insert(): id_column must be a plain column name such as 'id' (got {id_column!r})"
        )
    if not _INSERT_KEYWORD.match(sql, _first_keyword_at(sql)):
        raise ValueError(
            f"insert(): expected an INSERT statement (got {sql.strip()[:60]!r});"
            " use execute() for other statements"
        )


def may_be_query(sql: str) -> bool:
    """Whether ``sql`` starts as a query does (``SELECT``, ``WITH``, ``VALUES``)."""
    return _QUERY_KEYWORD.match(sql, _first_keyword_at(sql)) is not None


def as_id(value: object) -> int:
    if not _checks.is_int(value):
        raise DatabaseError(
            f"insert(): the statement's RETURNING clause gave {value!r} as the new row's id,"
            " not an integer; return the integer id column first"
        )
    return value
