"""Names on /api/days rows: the people registry's where it has one (once a ``persons`` table
exists), else the device users'. Driven through the scripts with a stand-in runner."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet.defer import Deferred, fail, succeed

from zkserver.store.base import StoreUnavailable
from zkserver.store.days import _all_names
from zkserver.store.dialect import Q, Script

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


# --- on real databases ----------------------------------------------------------------


def _failures(store: Any) -> list[str]:
    """Record every script of ``store`` that fails (a failed statement is an ERROR in
    PostgreSQL's server log and an aborted transaction)."""
    failed: list[str] = []
    original = store._run

    def run(script: Script[Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        def record(failure: Any) -> Any:
            failed.append(str(failure.value))
            return failure

        return original(script, *args, **kwargs).addErrback(record)

    store._run = run
    return failed


@pytest_twisted.ensureDeferred
async def test_days_without_a_registry_run_no_failing_statement(store: Any) -> None:
    from datetime import date

    from zkserver.records import Punch

    device = await store.add_device(serial_number="NAMES1", status="online")
    await store.save_punches(
        device,
        [Punch("7", "2026-06-01 08:00:00", 0, 1), Punch("7", "2026-06-01 17:00:00", 1, 1)],
    )

    # A database without the registry (as before migration 0006, or with it dropped).
    def drop() -> Script[None]:
        yield Q("DROP TABLE IF EXISTS persons")

    await store._run(drop())
    failed = _failures(store)
    for _ in range(2):
        rows = await store.days(first=date(2026, 6, 1), last=date(2026, 6, 1))
        assert [(r["user_id"], r["punches"], r["name"]) for r in rows] == [("7", 2, None)]
    assert failed == []

    # Once the registry exists (migration 0006), its names are used.
    def registry() -> Script[None]:
        yield Q(
            "CREATE TABLE IF NOT EXISTS persons (user_id TEXT PRIMARY KEY,"
            " name TEXT NOT NULL DEFAULT '')"
        )
        yield Q("INSERT INTO persons (user_id, name) VALUES ('7', 'Grace Hopper')")

    await store._run(registry())
    rows = await store.days(first=date(2026, 6, 1), last=date(2026, 6, 1))
    assert rows[0]["name"] == "Grace Hopper"
    assert failed == []
