"""The observer's page in a real browser (Debian's Chromium), on a running demo.

The page is loaded once and never reloaded: every change must arrive over its stream.
Screenshots go to pytest's tmp_path, and to ``$TRIO_SUPERVISE_SCREENSHOTS`` when set (the
README's picture is made so).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import trio
from browser import console_errors, save_screenshot, wait_until
from servers import free_port
from test_demo import HOST, http_client, run_demo_process

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

TOKEN = "page-token"
FLAKY = "workers/flaky/worker"


def row(driver: WebDriver, path: str) -> object:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, f'[data-path="{path}"]')


def cell(driver: WebDriver, path: str, name: str) -> str:
    from selenium.webdriver.common.by import By

    text: str = driver.find_element(By.CSS_SELECTOR, f'[data-path="{path}"] .{name}').text
    return text


def visible_paths(driver: WebDriver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [
        element.get_attribute("data-path") or ""
        for element in driver.find_elements(By.CSS_SELECTOR, "[data-path]")
        if element.is_displayed()
    ]


def screenshot(driver: WebDriver, tmp_path: Path, name: str) -> None:
    save_screenshot(driver, tmp_path / name)
    if directory := os.environ.get("TRIO_SUPERVISE_SCREENSHOTS"):
        save_screenshot(driver, Path(directory) / name)


async def api_restarts(client: httpx.AsyncClient, base: str, path: str) -> int:
    response = await client.get(f"{base}/api/tree")

    def find(node: dict[str, object]) -> int:
        if node["path"] == path:
            restarts = node["restarts"]
            assert isinstance(restarts, int)
            return restarts
        for child in node["children"]:  # type: ignore[attr-defined]
            if path.startswith(child["path"]):
                return find(child)
        raise AssertionError(f"no {path} in the tree")

    return find(response.json())


async def test_the_page_follows_the_tree_live_filters_and_acts_with_the_token(
    tmp_path: Path, browser: WebDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from selenium.webdriver.common.by import By

    monkeypatch.setenv("TRIO_SUPERVISE_OBSERVER_TOKEN", TOKEN)
    options = ("--observer-port", "0", "--flaky-period", "2", "--drain-delay", "0")
    async with (
        run_demo_process(tmp_path, str(tmp_path / "demo.db"), *options) as demo,
        http_client() as client,
    ):
        base = demo.observer
        assert base.startswith(f"http://{HOST}:")
        browser.get(f"{base}/")
        wait_until(
            browser,
            lambda d: "live" in d.find_element(By.ID, "connection").text,
            10,
            "the stream connected",
        )
        wait_until(browser, lambda d: row(d, FLAKY), 10, "the flaky worker's row")
        for path in ("workers", "workers/notes-counter", "workers/compaction", "http"):
            assert row(browser, path), path
        browser.execute_script("window.notReloaded = true")

        # A crash shows without a reload, within 1 s of the tree's own count.
        shown = int(cell(browser, FLAKY, "restarts"))
        while (crashed := await api_restarts(client, base, FLAKY)) <= shown:  # noqa: ASYNC110 - another process
            await trio.sleep(0.02)
        seen_at = time.monotonic()
        wait_until(
            browser,
            lambda d: int(cell(d, FLAKY, "restarts")) >= crashed,
            1.0,
            "the new restart count on the page",
        )
        assert time.monotonic() - seen_at <= 1.0
        assert browser.execute_script("return window.notReloaded") is True
        browser.find_element(By.CSS_SELECTOR, f'[data-path="{FLAKY}"] .restarts').click()
        wait_until(browser, lambda d: "DemoCrash" in d.page_source, 2, "the crash's details")
        await trio.sleep(0.5)  # the traceback arrives
        screenshot(browser, tmp_path, "observer.png")  # the README's picture

        # The filter keeps the matching rows (and the branches that lead to them).
        search = browser.find_element(By.ID, "filter")
        search.send_keys("compaction")
        wait_until(browser, lambda d: FLAKY not in visible_paths(d), 2, "the filter applied")
        assert "workers/compaction" in visible_paths(browser)
        screenshot(browser, tmp_path, "observer-filtered.png")
        search.clear()
        search.send_keys(" ")
        search.clear()

        # An action is refused without the token, done with it.
        counter = "workers/notes-counter"
        wait_until(browser, lambda d: row(d, counter), 5, "the counter's row")
        button = f'[data-path="{counter}"] [data-action="restart"]'
        before = await api_restarts(client, base, counter)
        browser.find_element(By.CSS_SELECTOR, button).click()
        await trio.sleep(0.5)
        assert await api_restarts(client, base, counter) == before  # 401: no token given
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, button).click()
        with trio.fail_after(5):
            while await api_restarts(client, base, counter) == before:  # noqa: ASYNC110 - another process
                await trio.sleep(0.05)
        wait_until(
            browser,
            lambda d: int(cell(d, counter, "restarts")) == before + 1,
            2,
            "the restart on the page",
        )
        assert browser.execute_script("return window.notReloaded") is True
        assert console_errors(browser) == []


PROGRAM = Path(__file__).resolve().parents[1] / "benchmarks" / "_observer_program.py"


@contextlib.contextmanager
def observed_program(port: int, children: int = 3) -> Iterator[subprocess.Popen[str]]:
    """A tree with its observer on 127.0.0.1:port, as a process of its own."""
    process = subprocess.Popen(
        [sys.executable, str(PROGRAM), str(children), "3600", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("ready ")
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_the_page_reconnects_by_itself_after_a_server_restart(browser: WebDriver) -> None:
    from selenium.webdriver.common.by import By

    port = free_port()

    def connection(driver: WebDriver) -> str:
        text: str = driver.find_element(By.ID, "connection").text
        return text

    with observed_program(port):
        browser.get(f"http://127.0.0.1:{port}/")
        wait_until(browser, lambda d: "live" in connection(d), 10, "the stream connected")
        wait_until(browser, lambda d: row(d, "pool/w2"), 5, "the pool's rows")
        browser.execute_script("window.notReloaded = true")
    wait_until(browser, lambda d: "live" not in connection(d), 10, "the page to see it is gone")
    with observed_program(port, children=4):  # the new server has one more child
        wait_until(browser, lambda d: "live" in connection(d), 15, "the stream connected again")
        wait_until(browser, lambda d: row(d, "pool/w3"), 5, "the new tree's rows")
    assert browser.execute_script("return window.notReloaded") is True
    # Everything the page loaded came from the observer itself: no CDN, no font service.
    origins = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)"
    )
    assert set(origins) <= {f"http://127.0.0.1:{port}"}, origins
    assert console_errors(browser) == [] or all(
        "ERR_CONNECTION_REFUSED" in entry["message"] or "api/stream" in entry["message"]
        for entry in console_errors(browser)
    )
