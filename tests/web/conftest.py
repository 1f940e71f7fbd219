"""Fixtures shared by the browser test modules (tests/web/test_page*.py, test_time_page.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from tests.web.browser import ServerProcess, browser_missing, chromium


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    """One headless Chromium per module."""
    missing = browser_missing()
    if missing:  # under CI: fail with the reason in the summary line, not a traceback
        pytest.fail(missing, pytrace=False)
    with chromium() as d:
        yield d


@pytest.fixture
def start_monitor(db_url: str, tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start a zkserver process with the given extra options; all are stopped after the test."""
    started: list[ServerProcess] = []

    def start(*extra: str) -> ServerProcess:
        server = ServerProcess(db=db_url, data_dir=tmp_path / "data", extra=extra)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
