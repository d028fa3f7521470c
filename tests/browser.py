"""A real browser for the tests: Debian's headless Chromium, driven through Selenium.

It runs from the system binaries only, ``/usr/bin/chromium`` and ``/usr/bin/chromedriver``
(``.ci/install-chromium``); where they are missing, ``Unavailable`` says why and how to
install them (``conftest`` skips then). Nothing is ever downloaded: Selenium asks Selenium
Manager (which downloads drivers and browsers) only for a driver whose path it was not given,
and it is given both paths.

The helpers read the browser's console (``console_errors``), save screenshots
(``save_screenshot``) and wait for the page (``wait_until``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, TypeVar

from servers import Unavailable

if TYPE_CHECKING:
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.chrome.webdriver import WebDriver

#: The browser and its WebDriver: Debian's ``chromium`` and ``chromium-driver`` packages.
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

CHROMIUM_INSTALL_HINT = (
    "install Chromium and its driver with `.ci/install-chromium` (on Debian or Ubuntu:"
    " `apt-get install chromium chromium-driver`)"
)

#: The browser window's outer size in pixels (width, height).
WINDOW_SIZE = (1400, 900)

#: The first bytes of every PNG file.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Seconds the console may take to hand over what was logged before a read.
_CONSOLE_FLUSH_TIMEOUT = 5.0
# Seconds the browser's processes may take to exit after ``quit``; then they are killed.
_EXIT_TIMEOUT = 5.0

T = TypeVar("T")


def chromium_options() -> Options:
    """Headless Chromium from ``CHROMIUM``, its console logged for ``console_errors``.

    ``--no-sandbox``: Chromium's sandbox refuses to run as root, which the tests may be.
    ``--disable-dev-shm-usage``: shared memory in the temporary directory, not in
    ``/dev/shm``, which containers keep small (Chromium crashes when it fills up).
    """
    from selenium.webdriver.chrome.options import Options

    options = Options()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return options


def chromedriver_service(root: Path) -> Service:
    """``CHROMEDRIVER``, logging to ``root/chromedriver.log``, with ``root/tmp`` as TMPDIR.

    Chromium keeps its profile and shared memory in TMPDIR and leaves a directory behind
    there on every run; in ``root`` they are removed with it.
    """
    from selenium.webdriver.chrome.service import Service

    tmp = root / "tmp"
    tmp.mkdir(exist_ok=True)
    return Service(
        executable_path=str(CHROMEDRIVER),
        log_output=str(root / "chromedriver.log"),
        env={**os.environ, "TMPDIR": str(tmp)},
    )


def _check_installed() -> None:
    for binary, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(binary, os.X_OK):
            raise Unavailable(
                f"{binary} (Debian's {package} package) is missing; {CHROMIUM_INSTALL_HINT}"
            )
    if importlib.util.find_spec("selenium") is None:
        raise Unavailable("selenium is missing; install it with `pip install -e '.[test]'`")


def _process_start(pid: int) -> str | None:
    """The start time of a live process ``pid`` (telling it from a later one of that pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name, in parentheses, may hold spaces: the fields follow its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, start = fields[0], fields[19]
    return None if state in ("Z", "X") else start


def _descendants(pid: int) -> dict[int, str]:
    """The live processes below ``pid``, with their start times (empty without /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: dict[int, str] = {}
    pending = list(children.get(pid, []))
    while pending:
        child = pending.pop()
        start = _process_start(child)
        if start is not None:
            found[child] = start
        pending.extend(children.get(child, []))
    return found


def _quit(driver: WebDriver) -> None:
    """Quit the browser and its driver, and kill whatever of the browser outlives them."""
    process = driver.service.process
    browser_processes = _descendants(process.pid) if process is not None else {}
    driver.quit()
    deadline = time.monotonic() + _EXIT_TIMEOUT
    while browser_processes and time.monotonic() < deadline:
        browser_processes = {
            pid: start for pid, start in browser_processes.items() if _process_start(pid) == start
        }
        time.sleep(0.05)
    for pid in browser_processes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def chromium() -> Iterator[WebDriver]:
    """A headless Chromium (``chromium_options``) behind chromedriver, quit at the end.

    Raises:
      Unavailable: Chromium, chromedriver or selenium is not installed.
      RuntimeError: they are installed but the browser did not start (with the driver's log).
    """
    _check_installed()
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.webdriver import WebDriver

    root = Path(tempfile.mkdtemp(prefix="trio-supervise-chromium-"))
    try:
        try:
            driver = WebDriver(options=chromium_options(), service=chromedriver_service(root))
        except WebDriverException as exc:
            log = root / "chromedriver.log"
            text = log.read_text(errors="replace")[-5000:] if log.exists() else ""
            raise RuntimeError(f"Chromium did not start: {exc}\nchromedriver log:\n{text}") from exc
        try:
            yield driver
        finally:
            _quit(driver)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def fresh_tab(driver: WebDriver) -> WebDriver:
    """Make ``driver`` as good as new for the next test: one new blank tab, no site data.

    Every other tab is closed, all cookies and storage of every origin are cleared, and the
    console entries so far are dropped. An alert a test left open is dismissed.
    """
    from selenium.common.exceptions import UnexpectedAlertPresentException

    for _attempt in range(3):
        try:
            _reset(driver)
            break
        except UnexpectedAlertPresentException:
            # chromedriver dismissed it, failing the command: the next attempt goes through.
            continue
    else:
        _reset(driver)
    return driver


def _reset(driver: WebDriver) -> None:
    old = driver.window_handles
    driver.switch_to.new_window("tab")
    new = driver.current_window_handle
    for handle in old:
        driver.switch_to.window(handle)
        driver.close()
    driver.switch_to.window(new)
    driver.execute_cdp_cmd("Storage.clearDataForOrigin", {"origin": "*", "storageTypes": "all"})
    _read_log(driver)


# --------------------------------------------------------------------------- the console


class ConsoleEntry(TypedDict):
    """An entry of the browser's console, as chromedriver reports it."""

    #: ``SEVERE`` (``console.error``, uncaught exceptions, failed loads), ``WARNING``,
    #: ``INFO`` (``console.log``, ``console.info``) or ``DEBUG``.
    level: str
    #: Where and what, e.g. ``http://127.0.0.1:8000/ 12:9 "boom"`` for ``console.error``.
    message: str
    #: ``console-api``, ``javascript`` (uncaught exceptions), ``network``, …
    source: str
    #: Milliseconds since the epoch.
    timestamp: int


def _read_log(driver: WebDriver) -> list[ConsoleEntry]:
    """The console entries logged since the last read (chromedriver hands each over once)."""
    # WebDriver.get_log is not annotated; its value is a list of JSON objects.
    get_log: Callable[[str], object] = driver.get_log
    raw = get_log("browser")
    if not isinstance(raw, list):
        raise TypeError(f"chromedriver returned a {type(raw).__name__} for the browser log")
    entries: list[ConsoleEntry] = []
    for item in raw:
        if not isinstance(item, dict):
            raise TypeError(f"unexpected browser log entry: {item!r}")
        entries.append(
            ConsoleEntry(
                level=str(item["level"]),
                message=str(item["message"]),
                source=str(item.get("source", "")),
                timestamp=int(item["timestamp"]),
            )
        )
    return entries


def console_entries(driver: WebDriver) -> list[ConsoleEntry]:
    """Every console entry logged since the last call (or since the test's ``fresh_tab``).

    Whatever the page logged before the call is in: a marker logged now is awaited, and the
    entries before it are returned (chromedriver hands each entry over once, so the next
    call returns only newer ones).
    """
    marker = f"trio-supervise-console-flush-{uuid.uuid4().hex}"
    driver.execute_script("console.debug(arguments[0])", marker)
    entries: list[ConsoleEntry] = []
    deadline = time.monotonic() + _CONSOLE_FLUSH_TIMEOUT
    while True:
        batch = _read_log(driver)
        entries.extend(entry for entry in batch if marker not in entry["message"])
        if any(marker in entry["message"] for entry in batch):
            return entries
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the browser console never reported a marker logged {_CONSOLE_FLUSH_TIMEOUT}s"
                f" ago; entries so far: {entries!r}"
            )
        time.sleep(0.02)


def console_errors(driver: WebDriver) -> list[ConsoleEntry]:
    """The ``SEVERE`` console entries logged since the last read (see ``console_entries``).

    They are ``console.error`` calls, uncaught exceptions and failed loads, such as a 404 of
    the ``/favicon.ico`` the browser asks for unless the page names an icon.
    """
    return [entry for entry in console_entries(driver) if entry["level"] == "SEVERE"]


# ------------------------------------------------------------------- screenshots, waiting


def save_screenshot(driver: WebDriver, path: Path) -> Path:
    """Save a PNG screenshot of the window's page at ``path`` (its directory made); return it."""
    png = driver.get_screenshot_as_png()
    if not png.startswith(PNG_SIGNATURE):
        raise RuntimeError(f"the browser returned no PNG for a screenshot: {png[:16]!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def wait_until(
    driver: WebDriver, predicate: Callable[[WebDriver], T], timeout: float, what: str
) -> T:
    """Poll ``predicate(driver)`` until it returns something true, and return that.

    A WebDriver error it raises (an element not there yet, say) counts as "not yet". After
    ``timeout`` seconds it fails with an ``AssertionError`` naming ``what`` was awaited, the
    page and the last result or error.
    """
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout
    while True:
        last: str
        try:
            result = predicate(driver)
        except WebDriverException as exc:
            last = f"raised {type(exc).__name__}: {exc.msg}"
        else:
            if result:
                return result
            last = f"returned {result!r}"
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what} on {driver.current_url}"
                f" (the last check {last})"
            )
        time.sleep(0.05)
