"""The command line's logging: one line per record, as text, logfmt or JSON.

The library never configures logging; ``trio-supervise run`` and ``demo`` are applications
and do, with ``configure_logging``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Final, TextIO, final

#: The formats of ``--log-format``.
LOG_FORMATS: Final = ("text", "logfmt", "json")


def _logfmt_value(value: str) -> str:
    if value and not any(c in value for c in ' "=\\') and value.isprintable():
        return value
    return json.dumps(value, ensure_ascii=False)


@final
class LogFormatter(logging.Formatter):
    """One line per record: text, logfmt (``key=value``) or a JSON object.

    Fields: ``time`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``, ``kind``, ``path``
    and ``hook`` when the record has them (the ``extra`` fields trio_supervise's records
    carry; ``path`` ``""`` is the root), ``msg``, and for a record with an exception ``error``
    (``Type: message``) and ``traceback`` (escaped onto the same line in logfmt and JSON).
    ``expected`` exceptions (crashes on purpose) get no traceback. ``text`` is for a person
    at a terminal: ``time level logger [path] msg``, a traceback on the lines after.
    """

    def __init__(
        self, style: str = "logfmt", *, expected: tuple[type[BaseException], ...] = ()
    ) -> None:
        if style not in LOG_FORMATS:
            raise ValueError(f"log format must be 'text', 'logfmt' or 'json' (got {style!r})")
        super().__init__()
        self._format_name = style
        self._expected = expected

    def fields(self, record: logging.LogRecord) -> dict[str, str]:
        """The record's fields, in order, as strings."""
        moment = datetime.fromtimestamp(record.created, UTC)
        fields = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
        }
        for key in ("kind", "path", "hook"):
            value = getattr(record, key, None)
            if value is not None:
                fields[key] = str(value)
        fields["msg"] = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            fields["error"] = f"{type(error).__name__}: {error}"
            if not isinstance(error, self._expected):
                fields["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            fields["stack"] = self.formatStack(record.stack_info)
        return fields

    def format(self, record: logging.LogRecord) -> str:
        fields = self.fields(record)
        if self._format_name == "json":
            return json.dumps(fields, ensure_ascii=False)
        if self._format_name == "logfmt":
            return " ".join(f"{key}={_logfmt_value(value)}" for key, value in fields.items())
        where = f" [{fields['path'] or '(root)'}]" if "path" in fields else ""
        line = f"{fields['time']} {fields['level']:<8} {fields['logger']}{where} {fields['msg']}"
        if "error" in fields and fields["error"] not in line:
            line += f": {fields['error']}"
        for key in ("traceback", "stack"):
            if key in fields:
                line += "\n" + fields[key]
        return line


def configure_logging(
    level: str = "INFO",
    style: str = "logfmt",
    stream: TextIO | None = None,
    *,
    expected: tuple[type[BaseException], ...] = (),
) -> None:
    """Send every log record at ``level`` or above to ``stream`` (stderr), one line each."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(LogFormatter(style, expected=expected))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def configure_worker_logging(
    level: str = "INFO", style: str = "logfmt", *, expected: tuple[type[BaseException], ...] = ()
) -> None:
    """A worker process's logging: below WARNING to stdout, the rest to stderr.

    Its parent logs a process child's stdout at INFO and its stderr at WARNING, so each
    line keeps its weight in the parent's log.
    """
    quiet = logging.StreamHandler(sys.stdout)
    quiet.addFilter(lambda record: record.levelno < logging.WARNING)
    loud = logging.StreamHandler(sys.stderr)
    loud.setLevel(logging.WARNING)
    for handler in (quiet, loud):
        handler.setFormatter(LogFormatter(style, expected=expected))
    logging.basicConfig(level=level.upper(), handlers=[quiet, loud], force=True)
