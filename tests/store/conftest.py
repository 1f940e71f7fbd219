"""Real databases for the store tests: every test runs against SQLite and PostgreSQL.

PostgreSQL comes from ``ZKSERVER_TEST_POSTGRES`` (default
``postgresql://postgres@127.0.0.1:5432/test``); each test gets a fresh, uniquely named
schema (others run tests against the same database concurrently), dropped afterwards.
Unreachable PostgreSQL skips those tests, or fails them when ``CI`` is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from attrs import define, field
from txpostgres import txpostgres

from tests.databases import POSTGRES_URL, with_schema
from tests.harness import wait_until
from zkserver.store import PostgresStore, Store, open_store

__all__ = ["Stores", "wait_until"]


@define
class Stores:
    """Opens stores on the test's database and stops them all in teardown."""

    kind: str  # "sqlite" | "postgres"
    url: str  # the --db value
    data_dir: str
    schema: str | None = None
    opened: list[Store] = field(factory=list)

    def make(self, url: str | None = None, **options: Any) -> Store:
        """A store that is not started yet (``options`` go to PostgresStore)."""
        if options:
            assert self.kind == "postgres"
            store: Store = PostgresStore(url or self.url, **options)
        else:
            store = open_store(url or self.url, self.data_dir)
        self.opened.append(store)
        return store

    async def open(self, url: str | None = None, **options: Any) -> Store:
        store = self.make(url, **options)
        await store.start()
        return store

    async def close_all(self) -> None:
        while self.opened:
            store = self.opened.pop()
            try:
                await store.stop()
            except Exception:
                pass


async def _admin() -> txpostgres.Connection:
    conn = txpostgres.Connection()
    try:
        await conn.connect(POSTGRES_URL, connect_timeout=5)
    except Exception as e:
        message = f"PostgreSQL unreachable at {POSTGRES_URL}: {e}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return conn


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest_twisted.async_yield_fixture
async def stores(store_kind: str, tmp_path: Any) -> AsyncIterator[Stores]:
    data_dir = str(tmp_path / "data")
    if store_kind == "sqlite":
        found = Stores("sqlite", "sqlite:zkserver.sqlite3", data_dir)
        yield found
        await found.close_all()
        return
    admin = await _admin()
    schema = "zks_" + uuid.uuid4().hex[:16]
    await admin.runOperation(f"CREATE SCHEMA {schema}")
    found = Stores("postgres", with_schema(POSTGRES_URL, schema), data_dir, schema)
    try:
        yield found
    finally:
        await found.close_all()
        await admin.runOperation(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        admin.close()


@pytest_twisted.async_yield_fixture
async def store(stores: Stores) -> AsyncIterator[Store]:
    """A started store on a fresh database (stopped by ``stores``)."""
    yield await stores.open()
