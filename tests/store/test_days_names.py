"""Names on /api/days rows: the people registry's where it has one (once a ``persons`` table
exists), else the device users'. Driven through the scripts with a stand-in runner."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred, fail, succeed

from zkserver.store.base import StoreUnavailable
from zkserver.store.days import _all_names
from zkserver.store.dialect import Script

USERS = [("1", "Ann (terminal)"), ("2", "Bob (terminal)")]
PERSONS = [("2", "Robert Stone")]


def runner(persons: Any) -> Any:
    """Runs a script: device users from USERS; ``persons`` rows, or raises it."""

    def run(script: Script[Any]) -> Deferred[Any]:
        query = next(script)
        if "FROM persons" in query.sql:
            if isinstance(persons, Exception):
                script.close()
                return fail(persons)
            rows = persons
        else:
            rows = USERS
        try:
            script.send([r for r in rows if r[0] in query.params])
        except StopIteration as stop:
            return succeed(stop.value)
        raise AssertionError("one statement per chunk expected")

    return run


@pytest_twisted.ensureDeferred
async def test_registry_names_win_over_device_users() -> None:
    names = await _all_names(runner(PERSONS), ["1", "2", "3"])
    assert names == {"1": "Ann (terminal)", "2": "Robert Stone"}


@pytest_twisted.ensureDeferred
async def test_without_a_registry_device_users_name_people() -> None:
    missing = Exception("no such table: persons")
    names = await _all_names(runner(missing), ["1", "2"])
    assert names == {"1": "Ann (terminal)", "2": "Bob (terminal)"}


@pytest_twisted.ensureDeferred
async def test_a_database_outage_is_not_mistaken_for_a_missing_registry() -> None:
    try:
        await _all_names(runner(StoreUnavailable("down")), ["1"])
    except StoreUnavailable:
        return
    raise AssertionError("StoreUnavailable swallowed")
