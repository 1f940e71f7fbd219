"""Fixtures shared by every test package: real databases and a real running server."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_twisted
from hypothesis import settings
from twisted.logger import globalLogPublisher

from tests.databases import BACKENDS, database
from tests.harness import RunningServer, start_server

# Property tests assert behaviour, never speed: no per-example deadline (a loaded CI machine
# would fail them for nothing). Under CI the examples are derandomized, so a run is
# reproducible; locally each run explores new ones.
settings.register_profile("zkserver", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "zkserver")


@pytest.fixture
def log_events() -> Iterator[list[dict[str, Any]]]:
    """Every log event emitted during the test (twisted.logger's global publisher)."""
    caught: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(caught.append)
    yield caught
    globalLogPublisher.removeObserver(caught.append)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def db_url(backend: str, tmp_path) -> Iterator[str]:
    with database(backend, tmp_path) as url:
        yield url


@pytest_twisted.async_yield_fixture
async def server(db_url: str, tmp_path) -> AsyncIterator[RunningServer]:
    """zkserver with auto-approval, on loopback ports, against the backend under test."""
    running = await start_server(db_url, str(tmp_path / "data"), "--auto-approve")
    yield running
    await running.stop()
