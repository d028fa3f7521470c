"""The real-browser test infrastructure (``browser``, the ``browser`` fixture) works.

Pages with a few lines of JavaScript come from a real HTTP server on 127.0.0.1; headless
Chromium loads them, runs their scripts and reports their console.
"""

from __future__ import annotations

import http.server
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import browser as browser_module
import pytest
from browser import (
    CHROMIUM,
    PNG_SIGNATURE,
    chromedriver_service,
    chromium,
    chromium_options,
    console_entries,
    console_errors,
    fresh_tab,
    save_screenshot,
    wait_until,
)
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.driver_finder import DriverFinder
from selenium.webdriver.common.selenium_manager import SeleniumManager
from servers import Unavailable

# An icon of the page's own: else the browser asks for /favicon.ico, and its 404 is a
# console error.
_HEAD = '<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,">'

PAGES: dict[str, tuple[str, str]] = {
    # The script fetches data from the server and renders it, as a web page of the project's
    # server would.
    "/workers": (
        "text/html",
        _HEAD
        + """<title>workers</title>
<ul id="workers"><li>loading</li></ul>
<script>
fetch("/workers.json")
  .then((response) => response.json())
  .then((workers) => {
    const list = document.getElementById("workers");
    list.replaceChildren(...workers.map((name) => {
      const item = document.createElement("li");
      item.textContent = name;
      return item;
    }));
    list.dataset.loaded = "yes";
    console.log("clean page ready");
  });
</script>""",
    ),
    "/workers.json": ("application/json", '["alpha", "beta", "gamma"]'),
    "/errors": (
        "text/html",
        _HEAD
        + """<title>errors</title>
<script>
console.error("a deliberate console.error");
setTimeout(() => {
  document.body.dataset.done = "yes";
  throw new Error("a deliberate uncaught error");
});
</script>""",
    ),
}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        page = PAGES.get(self.path)
        if page is None:
            self.send_error(404)
            return
        content_type, text = page
        body = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def site() -> Iterator[str]:
    """``PAGES`` served on 127.0.0.1 (a free port) from a thread: the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="test-http-server"
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _worker_names(driver: WebDriver) -> list[str]:
    return [item.text for item in driver.find_elements(By.CSS_SELECTOR, "#workers li")]


def test_the_script_renders_data_from_the_server(browser: WebDriver, site: str) -> None:
    browser.get(f"{site}/workers")
    wait_until(
        browser,
        lambda driver: driver.find_element(By.ID, "workers").get_attribute("data-loaded"),
        10.0,
        "the worker list to load",
    )
    assert browser.title == "workers"
    assert _worker_names(browser) == ["alpha", "beta", "gamma"]


def test_a_clean_page_logs_no_error(browser: WebDriver, site: str) -> None:
    browser.get(f"{site}/workers")
    wait_until(browser, lambda driver: len(_worker_names(driver)) == 3, 10.0, "three workers")
    entries = console_entries(browser)
    # The console is read: the page's console.log is there.
    assert any("clean page ready" in entry["message"] for entry in entries), entries
    assert [entry for entry in entries if entry["level"] == "SEVERE"] == []


def test_console_errors_are_captured(browser: WebDriver, site: str) -> None:
    browser.get(f"{site}/errors")
    wait_until(
        browser,
        lambda driver: driver.execute_script("return document.body.dataset.done"),
        10.0,
        "the uncaught error",
    )
    errors = console_errors(browser)
    assert [(entry["source"], entry["level"]) for entry in errors] == [
        ("console-api", "SEVERE"),
        ("javascript", "SEVERE"),
    ], errors
    assert "a deliberate console.error" in errors[0]["message"]
    assert "a deliberate uncaught error" in errors[1]["message"]
    # Each entry is reported once.
    assert console_errors(browser) == []


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """The (type, data) chunks of a PNG file, their CRCs checked, up to IEND."""
    assert data.startswith(PNG_SIGNATURE)
    chunks: list[tuple[bytes, bytes]] = []
    offset = len(PNG_SIGNATURE)
    while not chunks or chunks[-1][0] != b"IEND":
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in the {kind!r} chunk"
        chunks.append((kind, body))
        offset += 12 + length
    assert offset == len(data)
    return chunks


def test_a_screenshot_is_a_png_of_the_page(browser: WebDriver, site: str, tmp_path: Path) -> None:
    browser.get(f"{site}/workers")
    wait_until(browser, lambda driver: len(_worker_names(driver)) == 3, 10.0, "three workers")
    path = save_screenshot(browser, tmp_path / "shots" / "workers.png")
    assert path == tmp_path / "shots" / "workers.png"
    chunks = _png_chunks(path.read_bytes())
    assert chunks[0][0] == b"IHDR"
    width, height = struct.unpack(">II", chunks[0][1][:8])
    viewport = browser.execute_script(
        "return [window.innerWidth * devicePixelRatio, window.innerHeight * devicePixelRatio]"
    )
    assert [width, height] == viewport
    assert sum(len(body) for kind, body in chunks if kind == b"IDAT") > 0


def test_each_test_has_a_fresh_tab(browser: WebDriver, site: str) -> None:
    browser.get(f"{site}/workers")
    browser.execute_script("localStorage.setItem('k', 'v'); document.cookie = 'c=1'")
    browser.switch_to.new_window("tab")
    browser.execute_script("console.error('left over'); setTimeout(() => alert('left open'))")
    wait_until(browser, lambda driver: driver.switch_to.alert, 10.0, "the alert")
    fresh_tab(browser)
    assert len(browser.window_handles) == 1
    assert browser.current_url == "about:blank"
    assert console_errors(browser) == []
    browser.get(f"{site}/workers")
    assert browser.execute_script("return [localStorage.getItem('k'), document.cookie]") == [
        None,
        "",
    ]


def test_wait_until_says_what_it_waited_for(browser: WebDriver, site: str) -> None:
    browser.get(f"{site}/workers")
    with pytest.raises(AssertionError, match=r"waiting for a missing element on http.*NoSuch"):
        wait_until(
            browser,
            lambda driver: driver.find_element(By.ID, "missing"),
            0.2,
            "a missing element",
        )


def test_selenium_manager_is_never_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Selenium Manager, which downloads browsers and drivers, is not run: paths are given."""

    def refuse(self: SeleniumManager, args: list[str]) -> dict[str, str]:
        raise AssertionError(f"Selenium Manager was asked for {args}")

    monkeypatch.setattr(SeleniumManager, "binary_paths", refuse)
    # A stand-in for /usr/bin/chromedriver, which this test needs not be installed.
    driver = tmp_path / "chromedriver"
    driver.touch()
    monkeypatch.setattr(browser_module, "CHROMEDRIVER", driver)
    finder = DriverFinder(chromedriver_service(tmp_path), chromium_options())
    assert finder.get_driver_path() == str(driver)
    # No browser path of Selenium Manager's: the options' own, /usr/bin/chromium, stays.
    assert finder.get_browser_path() == ""
    assert chromium_options().binary_location == str(CHROMIUM)


def test_a_missing_chromium_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browser_module, "CHROMIUM", Path("/nonexistent/chromium"))
    with (
        pytest.raises(Unavailable, match=r"/nonexistent/chromium .*\.ci/install-chromium"),
        chromium(),
    ):
        pass
