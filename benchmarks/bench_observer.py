"""(n) The observer's page in a real browser: time to first render and cost per update, at
100 and 10,000 children.

A tree (``_observer_program.py``: a pool of N sleeping children and a child that crashes
every 0.2 s) serves its observer; headless Chromium (``tests/browser.py``, Debian's) loads
the page. The page itself measures (``window.observerStats``): ``firstRenderMs`` from the
navigation to the first tree on screen (the page and its script loaded, the stream opened,
the snapshot received, parsed and laid out), ``snapshotMs`` for the page's own part of that
(parsing the snapshot and drawing it), and ``lastUpdateMs`` for each delta applied (a crash
and its restart: the model updated and the visible rows redrawn). The floor is a bare client
in the same page: ``fetch("api/tree")`` and its JSON parsed, the same tree from the same
server, from the request to the parsed object: no client can show a tree it has not
received. Information only (issue 13 asks for the figures).
"""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Final

from benchmarks._common import Config, Reporter, median, ratio, stop_process

TESTS: Final = Path(__file__).resolve().parent.parent / "tests"
PROGRAM: Final = Path(__file__).with_name("_observer_program.py")
CRASH_EVERY: Final = 0.2
TIMEOUT: Final = 60.0

sys.path.insert(0, str(TESTS))
import browser  # noqa: E402  (tests/browser.py: Debian's Chromium through Selenium)
import servers  # noqa: E402

_FLOOR_JS: Final = """
const done = arguments[arguments.length - 1];
const start = performance.now();
fetch("api/tree").then(r => r.json()).then(() => done(performance.now() - start));
"""


def _stats(driver: Any) -> dict[str, Any]:
    stats = driver.execute_script("return window.observerStats || null")
    return stats if isinstance(stats, dict) else {}


def _measure(driver: Any, children: int, updates: int) -> tuple[float, float, list[float], float]:
    """First render, the snapshot's own handling, per-update times and the fetch floor, in
    ms, for one page load."""
    port = servers.free_port()
    program = subprocess.Popen(
        [sys.executable, str(PROGRAM), str(children), str(CRASH_EVERY), str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert program.stdout is not None
        line = program.stdout.readline()
        assert line.startswith("ready "), line
        driver.get(f"http://127.0.0.1:{port}/")
        deadline = time.monotonic() + TIMEOUT
        while _stats(driver).get("firstRenderMs") is None:
            assert time.monotonic() < deadline, "the page never rendered"
            time.sleep(0.01)
        first = float(_stats(driver)["firstRenderMs"])
        snapshot = float(_stats(driver)["snapshotMs"])
        costs: list[float] = []
        seen = int(_stats(driver).get("updates", 0))
        while len(costs) < updates:
            assert time.monotonic() < deadline, "the page stopped updating"
            stats = _stats(driver)
            if int(stats.get("updates", 0)) > seen:
                seen = int(stats["updates"])
                costs.append(float(stats["lastUpdateMs"]))
            time.sleep(0.005)
        driver.set_script_timeout(TIMEOUT)
        floor = float(driver.execute_async_script(_FLOOR_JS))
        return first, snapshot, costs, floor
    finally:
        stop_process(program)


def run(config: Config, reporter: Reporter) -> None:
    r = reporter
    quick = config.reps < 3
    sizes, loads, updates = ((100,), 1, 3) if quick else ((100, 10_000), 5, 20)
    r.comment(
        f"(n) the observer's page in Chromium: first render and per-update cost, {loads}"
        f" page loads per size, {updates} updates each"
    )
    with ExitStack() as stack:
        try:
            driver = stack.enter_context(browser.chromium())
        except servers.Unavailable as exc:
            r.comment(f"skipped: {exc}")
            return
        for children in sizes:
            firsts, snapshots, costs, floors = [], [], [], []
            for _ in range(loads):
                first, snapshot, per_update, floor = _measure(driver, children, updates)
                firsts.append(first)
                snapshots.append(snapshot)
                costs.extend(per_update)
                floors.append(floor)
            name = f"observer_{children}"
            r.metric(f"{name}_first_render_ms_median", median(firsts), "ms")
            r.metric(f"{name}_snapshot_render_ms_median", median(snapshots), "ms")
            r.metric(f"{name}_fetch_floor_ms_median", median(floors), "ms")
            r.metric(
                f"{name}_first_render_ratio_to_fetch_median",
                ratio(median(firsts), median(floors)),
                "x",
            )
            r.metric(f"{name}_update_ms_median", median(costs), "ms")
            r.metric(f"{name}_update_ms_max", max(costs), "ms")
