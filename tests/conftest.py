"""Fixtures shared by the test suite: real servers from ``servers`` and a real browser from
``browser``, skipped where missing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from browser import chromium, fresh_tab
from servers import (
    POSTGRES_TEST_DATABASE,
    EtcdMember,
    PostgresServer,
    Unavailable,
    postgres_server,
)
from servers import (
    etcd_cluster as start_etcd_cluster,
)

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver


@contextlib.contextmanager
def _skipped_if_unavailable() -> Iterator[None]:
    try:
        yield
    except Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A DSN for a fresh database on a real PostgreSQL server started for this session."""
    with _skipped_if_unavailable(), postgres_server() as server:
        yield server.create_database(POSTGRES_TEST_DATABASE)


@pytest.fixture
def own_postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own, for a test that stops and starts it."""
    with _skipped_if_unavailable(), postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[EtcdMember]]:
    """Three etcd members on 127.0.0.1, for the session."""
    with _skipped_if_unavailable(), start_etcd_cluster(tmp_path_factory.mktemp("etcd")) as members:
        yield members


@pytest.fixture(scope="session")
def chromium_session() -> Iterator[WebDriver]:
    """One headless Chromium for the session, quit at its end; tests take ``browser``."""
    with _skipped_if_unavailable(), chromium() as driver:
        yield driver


@pytest.fixture
def browser(chromium_session: WebDriver) -> WebDriver:
    """The session's headless Chromium (``browser.chromium``), as good as new for the test.

    The test has one new blank tab, no cookies or storage of any origin, and a console read
    from now on (``browser.console_errors``).
    """
    return fresh_tab(chromium_session)
