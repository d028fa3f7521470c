"""PostgreSQL placeholders: ``?`` as psycopg's ``%s``, outside literals and comments.

The one SQL translation PostgreSQL needs, so that both databases take ``?``; and
``RETURNING`` appended to an INSERT, for ``insert()``'s id.
"""

from __future__ import annotations

import re

_RETURNING = re.compile(r"\breturning\b", re.I)
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$")


def _split_postgres(sql: str) -> list[tuple[str, bool]]:
    """Split ``sql`` into runs of ``(text, is_code)``.

    What is not code: string literals (``'...'`` with ``''``, ``E'...'`` with backslash
    escapes too), quoted identifiers, dollar-quoted strings, ``--`` and (nested) ``/* */``
    comments. An unterminated one runs to the end; the server reports it.
    """
    runs: list[tuple[str, bool]] = []
    n = len(sql)
    start = i = 0

    def word_char(index: int) -> bool:
        c = sql[index]
        return c.isalnum() or c in "_$" or ord(c) > 127

    while i < n:
        c = sql[i]
        if c == "'":
            backslash = i > 0 and sql[i - 1] in "eE" and not (i > 1 and word_char(i - 2))
            end = _end_of_quoted(sql, i, "'", backslash)
        elif c == '"':
            end = _end_of_quoted(sql, i, '"', False)
        elif sql.startswith("--", i):
            newline = sql.find("\n", i)
            end = n if newline < 0 else newline + 1
        elif sql.startswith("/*", i):
            end = _end_of_block_comment(sql, i)
        elif c == "$" and not (i > 0 and word_char(i - 1)) and (tag := _DOLLAR_TAG.match(sql, i)):
            close = sql.find(tag.group(0), tag.end())
            end = n if close < 0 else close + len(tag.group(0))
        else:
            i += 1
            continue
        if start < i:
            runs.append((sql[start:i], True))
        runs.append((sql[i:end], False))
        start = i = end
    if start < n:
        runs.append((sql[start:], True))
    return runs


def _end_of_quoted(sql: str, i: int, quote: str, backslash: bool) -> int:
    j = i + 1
    while j < len(sql):
        c = sql[j]
        if backslash and c == "\\":
            j += 2
        elif c == quote:
            if sql.startswith(quote, j + 1):
                j += 2
            else:
                return j + 1
        else:
            j += 1
    return len(sql)


def _end_of_block_comment(sql: str, i: int) -> int:
    depth = 0
    j = i
    while j < len(sql):
        if sql.startswith("/*", j):
            depth += 1
            j += 2
        elif sql.startswith("*/", j):
            depth -= 1
            j += 2
            if depth == 0:
                return j
        else:
            j += 1
    return len(sql)


def qmark_to_psycopg(sql: str) -> str:
    """``sql`` with ``?`` placeholders as psycopg's ``%s``, and literal ``%`` escaped."""
    parts: list[str] = []
    for text, is_code in _split_postgres(sql):
        text = text.replace("%", "%%")
        parts.append(text.replace("?", "%s") if is_code else text)
    return "".join(parts)


def _code_only(sql: str) -> str:
    """``sql`` with literals and comments blanked out (same length, same offsets)."""
    return "".join(text if is_code else " " * len(text) for text, is_code in _split_postgres(sql))


def with_returning(sql: str, id_column: str) -> str:
    """``sql`` with ``RETURNING id_column`` appended, unless it has its own RETURNING."""
    code = _code_only(sql)
    if _RETURNING.search(code):
        return sql
    # Cut after the last code: trailing comments and the closing ``;`` go.
    end = len(code.rstrip())
    if end and code[end - 1] == ";":
        end -= 1
    return f"{sql[:end].rstrip()}\nRETURNING {id_column}"
