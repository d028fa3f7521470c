"""PostgreSQL placeholders (``_placeholders``): ``?`` as ``%s``, outside literals and comments.

Pure text in, text out; ``test_database_postgres.py`` runs the quoting forms on a server.
"""

from __future__ import annotations

import pytest

from trio_supervise.integrations.database._placeholders import qmark_to_psycopg, with_returning


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT ?", "SELECT %s"),
        ("SELECT ?, ?", "SELECT %s, %s"),
        ("SELECT '?', ?", "SELECT '?', %s"),
        ("SELECT 'it''s ?', ?", "SELECT 'it''s ?', %s"),
        ('SELECT "we?rd", ?', 'SELECT "we?rd", %s'),
        ('SELECT "a""?", ?', 'SELECT "a""?", %s'),
        ("SELECT E'\\' ?', ?", "SELECT E'\\' ?', %s"),
        ("SELECT '\\', ?", "SELECT '\\', %s"),
        ("SELECT $$ ? $$, $t$ ?$$ $t$, ?", "SELECT $$ ? $$, $t$ ?$$ $t$, %s"),
        ("SELECT $1, a$b, ?", "SELECT $1, a$b, %s"),
        ("SELECT 1 -- ?\n, ?", "SELECT 1 -- ?\n, %s"),
        ("SELECT /* ? /* ? */ ? */ ?", "SELECT /* ? /* ? */ ? */ %s"),
        ("SELECT 10 % 3, '5%', ?", "SELECT 10 %% 3, '5%%', %s"),
        ("SELECT 'unterminated ?", "SELECT 'unterminated ?"),
    ],
)
def test_question_marks_become_psycopg_placeholders(sql: str, expected: str) -> None:
    assert qmark_to_psycopg(sql) == expected


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("INSERT INTO t (a) VALUES (?)", "INSERT INTO t (a) VALUES (?)\nRETURNING id"),
        ("INSERT INTO t (a) VALUES (?) ;  \n", "INSERT INTO t (a) VALUES (?)\nRETURNING id"),
        ("INSERT INTO t (a) VALUES (?); -- c", "INSERT INTO t (a) VALUES (?)\nRETURNING id"),
        ("INSERT INTO t (a) -- c\nVALUES (?)", "INSERT INTO t (a) -- c\nVALUES (?)\nRETURNING id"),
        (
            "INSERT INTO t (a) VALUES ('returning')",
            "INSERT INTO t (a) VALUES ('returning')\nRETURNING id",
        ),
        ("INSERT INTO t (a) VALUES (?) RETURNING a", "INSERT INTO t (a) VALUES (?) RETURNING a"),
        (
            "insert into t (returning_x) values (1)",
            "insert into t (returning_x) values (1)\nRETURNING id",
        ),
    ],
)
def test_insert_appends_returning_on_postgres(sql: str, expected: str) -> None:
    assert with_returning(sql, "id") == expected
