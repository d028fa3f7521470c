"""Hooks that take a set time and record when they ran (shutdown and reload hook tests)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

#: hook name -> (start, end), in trio.current_time().
Spans = dict[str, tuple[float, float]]


def timed(spans: Spans, name: str, seconds: float) -> Callable[[], Awaitable[None]]:
    """A hook that takes ``seconds`` and records when it started and ended."""

    async def hook() -> None:
        start = trio.current_time()
        await trio.sleep(seconds)
        spans[name] = (start, trio.current_time())

    return hook
