"""Statements (``_statements``): which ones are queries, for the read connections.

The argument checks are tested through the API, on both databases, in ``test_database.py``.
"""

from __future__ import annotations

import pytest

from trio_supervise.integrations.database._statements import may_be_query


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "select id from notes",
        "  \n\tSELECT 1",
        "-- a comment\nSELECT 1",
        "/* a\ncomment */ SELECT 1",
        "WITH t(x) AS (SELECT 1) SELECT x FROM t",
        "VALUES (1), (2)",
        # Starts as a query does, writes: the read connection refuses it, unchanged.
        "WITH t(x) AS (SELECT 1) INSERT INTO notes (text) SELECT x FROM t",
    ],
)
def test_queries_are_recognised_by_their_first_word(sql: str) -> None:
    assert may_be_query(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO notes (text) VALUES ('a')",
        "UPDATE notes SET text = 'b'",
        "PRAGMA journal_mode",
        "CREATE TABLE t (x INTEGER)",
        "BEGIN",
        "SELECTED",  # not the keyword
        "EXPLAIN SELECT 1",
        "-- SELECT 1\nDELETE FROM notes",
    ],
)
def test_other_statements_run_on_the_write_connection(sql: str) -> None:
    assert not may_be_query(sql)
