"""The command line's log lines (``_logs``): one per record, as text, logfmt or JSON."""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

import pytest

from trio_supervise._logs import LogFormatter


class Expected(Exception):
    """A crash on purpose: logged without its traceback."""


def test_log_lines_are_one_per_record() -> None:
    def record(**extra: Any) -> logging.LogRecord:
        made = logging.LogRecord("trio_supervise", logging.WARNING, __file__, 1, "%s", ("x",), None)
        for key, value in extra.items():
            setattr(made, key, value)
        return made

    try:
        raise ValueError("two\nlines")
    except ValueError:
        error_info = sys.exc_info()
    crash = record(kind="CRASHED", path="workers/flaky/worker")
    crash.exc_info = (Expected, Expected("on purpose"), None)
    failed = record(kind="FAILED", path="")
    failed.exc_info = error_info
    plain = record()
    plain.msg, plain.args = 'say "hi" = 1', ()
    logfmt = LogFormatter(expected=(Expected,))
    as_json = LogFormatter("json")
    text = LogFormatter("text")
    line = logfmt.format(crash)
    assert "\n" not in line
    assert line.endswith(
        " level=WARNING logger=trio_supervise kind=CRASHED path=workers/flaky/worker msg=x"
        ' error="Expected: on purpose"'
    )
    assert re.fullmatch(r"time=20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line.split()[0])
    failed_line = logfmt.format(failed)
    assert "\n" not in failed_line
    assert ' path="" msg=x error="ValueError: two\\nlines" traceback="Traceback' in failed_line
    assert logfmt.format(plain).endswith(' msg="say \\"hi\\" = 1"')
    decoded = json.loads(as_json.format(failed))
    assert list(decoded) == ["time", "level", "logger", "kind", "path", "msg", "error", "traceback"]
    assert decoded["traceback"].startswith("Traceback (most recent call last):\n")
    text_line = text.format(failed)
    assert text_line.split("\n")[0].endswith(" WARNING  trio_supervise [(root)] x: ValueError: two")
    assert "Traceback (most recent call last):" in text_line
    assert text.format(plain).endswith(' WARNING  trio_supervise say "hi" = 1')
    with pytest.raises(
        ValueError, match=r"^log format must be 'text', 'logfmt' or 'json' \(got 'xml'\)$"
    ):
        LogFormatter("xml")
