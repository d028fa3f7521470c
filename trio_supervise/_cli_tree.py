"""``trio-supervise tree URL``: the live tree of a running service, from its observer API.

For a terminal (over SSH, say): it reads ``/api/tree`` once and prints it indented, or with
``--watch`` redraws it on every event of ``/api/events/stream`` until Ctrl+C. Only the
standard library: it runs wherever the package is installed, without any extra.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, Final, TextIO
from urllib.parse import urlsplit

#: Seconds a request may take before the observer counts as unreachable.
TIMEOUT: Final = 10.0
#: Seconds ``--watch`` gathers events before it redraws (a burst of events draws once).
REDRAW_EVERY: Final = 0.2


class TreeError(Exception):
    """The observer cannot be read: exit code 1 with this message."""


def base_url(text: str) -> str:
    """The observer's base URL, without a trailing slash.

    Raises:
      ValueError: not an http:// or https:// URL.
    """
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"not an http:// or https:// URL: {text!r}; give the observer's address, such as"
            " http://127.0.0.1:9100"
        )
    return text.rstrip("/")


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        raise TreeError(f"{url} answered {exc.code} {exc.reason}: is it an observer?") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TreeError(f"cannot reach {url}: {reason}") from None
    except ValueError:
        raise TreeError(f"{url} did not answer JSON: is it an observer?") from None


def _describe(node: dict[str, Any], now: float | None) -> str:
    state = node["state"]
    if state == "restarting" and node.get("restart_at") is not None and now is not None:
        state = f"restarting in {max(node['restart_at'] - now, 0):.1f} s"
    parts = [node["kind"], state]
    if node["path"]:
        parts.append(f"restarts={node['restarts']}")
    parts.append(node["health"])
    if node.get("pid") is not None:
        parts.append(f"pid={node['pid']}")
    if node.get("lock_holder"):
        parts.append(f"lock held by {node['lock_holder']}")
    line = f"{node['name']} ({', '.join(parts)})"
    if node.get("last_error"):
        line += f"  last error: {node['last_error']}"
    return line


def render(tree: dict[str, Any], now: float | None = None) -> str:
    """The tree as indented lines: name, kind, state, restarts, health and the last error."""

    def lines(node: dict[str, Any], depth: int) -> Iterator[str]:
        yield "  " * depth + _describe(node, now)
        for child in node.get("children", []):
            yield from lines(child, depth + 1)

    return "\n".join(lines(tree, 0))


def snapshot(base: str) -> str:
    info = _get(f"{base}/api/info")
    return render(_get(f"{base}/api/tree"), info.get("now"))


def _events(base: str) -> Iterator[None]:
    """Yields once per event of the observer's event stream (ends when the service does)."""
    try:
        with urllib.request.urlopen(f"{base}/api/events/stream", timeout=None) as stream:
            for line in stream:
                if line.startswith(b"data:"):
                    yield None
    except (urllib.error.URLError, OSError) as exc:
        raise TreeError(f"lost {base}/api/events/stream: {getattr(exc, 'reason', exc)}") from None


def show(base: str, *, watch: bool, out: TextIO) -> None:
    """Print the tree; with ``watch``, redraw it after events until interrupted.

    Raises:
      TreeError: the observer cannot be reached or does not answer as one.
    """
    print(("\x1b[H\x1b[2J" if watch else "") + snapshot(base), file=out, flush=True)
    if not watch:
        return
    # The stream is read in a thread that only flags news; this one redraws at most every
    # REDRAW_EVERY, and always once after the last event of a burst.
    news = threading.Event()
    failure: list[TreeError] = []

    def follow() -> None:
        try:
            for _ in _events(base):
                news.set()
            failure.append(TreeError(f"{base} closed its event stream: the service stopped"))
        except TreeError as exc:
            failure.append(exc)
        news.set()

    threading.Thread(target=follow, name="trio-supervise tree --watch", daemon=True).start()
    while True:
        if not news.wait(timeout=1.0):  # a timeout, so that Ctrl+C is seen at once
            continue
        time.sleep(REDRAW_EVERY)
        news.clear()
        if failure:
            raise failure[0]
        print("\x1b[H\x1b[2J" + snapshot(base), file=out, flush=True)
