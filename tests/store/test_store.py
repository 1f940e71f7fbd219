"""The Store contract, run against SQLite and PostgreSQL (see conftest.py)."""

from __future__ import annotations

import gc
import json
import os
import sqlite3
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, DeferredList, gatherResults
from twisted.internet.task import deferLater
from txpostgres import txpostgres

from tests.store.conftest import Stores, wait_until
from tests.tcpproxy import TCPProxy
from zkserver.events import attendance_payload, device_status_payload, encode_payload
from zkserver.records import DeviceUser, Punch, Rejected
from zkserver.store import (
    DuplicateDevice,
    PostgresStore,
    ReplayPage,
    SqliteStore,
    Store,
    StoreUnavailable,
    check_db,
    open_store,
    redact_db,
)
from zkserver.store.dialect import Q, Script, utc_now
from zkserver.store.schema import MIGRATIONS


def punch(user_id: str, timestamp: str, status: int = 0, verify: int = 15) -> Punch:
    return Punch(user_id=user_id, timestamp=timestamp, status=status, verify=verify)


async def raises(exc: type[BaseException], d: Any) -> BaseException:
    """Await ``d`` and return the exception it fails with (AssertionError otherwise)."""
    try:
        result = await d
    except exc as e:
        return e
    raise AssertionError(f"expected {exc.__name__}, got {result!r}")


# --- open_store (no database needed) --------------------------------------------------


def test_open_store_parses_db_option(tmp_path: Any) -> None:
    data = str(tmp_path)
    default = os.path.join(data, "zkserver.sqlite3")
    assert isinstance(open_store("", data), SqliteStore)
    assert open_store("", data).path == default  # type: ignore[attr-defined]
    assert open_store("sqlite:", data).path == default  # type: ignore[attr-defined]
    assert open_store("sqlite:db/x.db", data).path == os.path.join(data, "db/x.db")  # type: ignore[attr-defined]
    assert open_store("sqlite:/abs/x.db", data).path == "/abs/x.db"  # type: ignore[attr-defined]
    assert open_store("sqlite:///abs/x.db", data).path == "/abs/x.db"  # type: ignore[attr-defined]
    pg = open_store("postgresql://u@h:5433/db?options=-csearch_path%3Ds", data)
    assert isinstance(pg, PostgresStore)
    with pytest.raises(ValueError):
        open_store("mysql://x", data)
    with pytest.raises(ValueError):
        open_store("sqlite:x.db?bogus=1", data)


def test_open_store_decodes_percent_escapes_in_a_sqlite_path(tmp_path: Any) -> None:
    """``sqlite:`` takes a URL: ``%20`` is a space (``%25`` a percent sign), as the
    query after ``?`` is decoded too; a literal space works as well."""
    data = str(tmp_path)
    for db in ("sqlite:///srv/my%20data/x.db", "sqlite:/srv/my data/x.db"):
        assert open_store(db, data).path == "/srv/my data/x.db"  # type: ignore[attr-defined]
    assert open_store("sqlite:a%2525.db", data).path == os.path.join(data, "a%25.db")  # type: ignore[attr-defined]


def test_a_slash_in_a_postgres_password_is_refused_without_showing_it() -> None:
    """A generated (base64) password often holds a ``/``. libpq ends the host at the first
    ``/``: ``zk:Ab12/xyZ@db/zk`` connects to host ``zk`` port ``Ab12``, and its message
    (logged every 5 s) held half the password. Refused like an unencoded ``@``, with the
    password shown as ``***``."""
    db = "postgresql://zk:Ab12/xyZ@127.0.0.1/zk"
    with pytest.raises(ValueError, match="%2F") as info:
        check_db(db)
    assert "Ab12" not in str(info.value) and "xyZ" not in str(info.value), info.value
    assert redact_db(db) == "postgresql://zk:***@127.0.0.1/zk"
    # Still accepted: what a valid URL may hold after its host.
    for good in (
        "postgresql:///test?host=/var/run/postgresql",
        "postgresql://zk:Ab12%2FxyZ@127.0.0.1/zk?options=-csearch_path%3Ds",
        "postgresql://zk@127.0.0.1/zk?application_name=a@b",
        "postgresql://zk:s?cret@127.0.0.1/zk",
    ):
        check_db(good)


# --- life cycle and migrations --------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_migrations_are_applied_once_and_data_survives_restart(stores: Stores) -> None:
    versions = [m.version for m in MIGRATIONS]
    first = await stores.open()
    assert await first.schema_versions() == versions  # type: ignore[attr-defined]
    device = await first.add_device(serial_number="SN1")
    await first.stop()

    again = await stores.open()
    assert await again.schema_versions() == versions  # type: ignore[attr-defined]
    assert await again.device(device.id) == device
    await again.ping()


@pytest_twisted.ensureDeferred
async def test_concurrent_starts_migrate_once(stores: Stores) -> None:
    one, two = stores.make(), stores.make()
    await gatherResults([one.start(), two.start()])
    assert await one.schema_versions() == [m.version for m in MIGRATIONS]  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_start_fails_unavailable_then_succeeds(stores: Stores, tmp_path: Any) -> None:
    if stores.kind == "sqlite":
        (tmp_path / "file").write_text("not a directory")
        store = stores.make(f"sqlite:{tmp_path}/file/zk.sqlite3")
        await raises(StoreUnavailable, store.start())
        await raises(StoreUnavailable, store.ping())
        return
    target = urlsplit(stores.url)
    proxy = TCPProxy(target.hostname or "127.0.0.1", target.port or 5432)
    port = await proxy.start()
    try:
        store = stores.make(_via(stores.url, port), connect_timeout=2.0)
        proxy.cut()
        await raises(StoreUnavailable, store.start())
        await raises(StoreUnavailable, store.ping())
        proxy.restore()
        await store.start()
        await store.ping()
    finally:
        await stores.close_all()
        await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_stopped_store_is_unavailable(stores: Stores) -> None:
    store = await stores.open()
    await store.stop()
    await raises(StoreUnavailable, store.ping())
    if stores.kind == "postgres":  # a device-lock call after stop connects no session
        await raises(StoreUnavailable, store.try_lock_device("D"))
        assert store._device_locks.conn is None  # type: ignore[attr-defined]
        await store.start()
        assert await store.try_lock_device("D")


def slow_script(dialect: str) -> Script[Any]:
    """A read that takes a while (~0.3 s) on either backend."""
    if dialect == "postgresql":
        rows = yield Q("SELECT pg_sleep(0.3)")
    else:
        rows = yield Q(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
            " WHERE x < 2000000) SELECT count(*) FROM c"
        )
    return rows


def unhandled(log_events: list[dict[str, Any]]) -> list[str]:
    """The "Unhandled error in Deferred" reports (and their failures) logged so far."""
    gc.collect()  # a failing Deferred nobody holds is reported when it is collected
    return [
        str(e.get("log_failure") or e.get("log_format"))
        for e in log_events
        if e.get("log_format") == "Unhandled error in Deferred:"
        or (e.get("log_failure") is not None and "debugInfo" in e)
    ]


@pytest_twisted.ensureDeferred
async def test_a_cancelled_call_fails_at_once_and_stop_waits_for_its_query(
    stores: Stores, log_events: list[dict[str, Any]]
) -> None:
    """Cancelling a store call (Klein does when the client goes away; a stopping service
    does to its workers) fails it with CancelledError at once; its query runs to its end
    on its connection, and stop() waits for it; nothing is left failing in the garbage.
    (PostgreSQL: the cancellation reached txpostgres mid-query, its ROLLBACK failed, the
    connection was closed and the transaction run again on another, its result handed to
    the caller that had cancelled. SQLite: stop() did not wait for the query's thread.)"""
    store = await stores.open()
    # Every pooled connection open, so the query below is sent at once.
    await gatherResults([store.ping() for _ in range(4)])
    dialect = store.dialect  # type: ignore[attr-defined]
    d = store._run(slow_script(dialect), write=False)  # type: ignore[attr-defined]
    d.cancel()
    await raises(CancelledError, d)
    assert await gatherResults([store.ping() for _ in range(6)]) == [None] * 6
    stopping = store.stop()
    assert not stopping.called  # the cancelled query is still running
    await stopping
    assert unhandled(log_events) == []


@pytest.mark.parametrize("write", [False, True])
@pytest_twisted.ensureDeferred
async def test_a_call_cancelled_as_its_answer_arrives_leaves_nothing_failing(
    stores: Stores, log_events: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, write: bool
) -> None:
    """txpostgres hands a statement's answer over one reactor turn after reading it. A
    caller that cancelled in between (the interleaving behind the "Unhandled error in
    Deferred ... no results to fetch / cursor already closed" printed at the end of some
    test runs) reached txpostgres, whose ROLLBACK then ran while the transaction's
    coroutine went on reading a cursor that was no longer its own, with nobody to tell
    when that failed. Now the caller is told CancelledError, the transaction ends as it
    would have, and the connection serves the next calls."""
    if stores.kind == "sqlite":
        pytest.skip("txpostgres' poll cycle (adbapi has no cancellation to reach)")
    store = await stores.open()
    await gatherResults([store.ping() for _ in range(4)])  # the pool's connections open
    cancel: list[Deferred[Any]] = []
    original = txpostgres.Cursor.continuePolling

    def answered_then_cancelled(self: Any, swallowErrors: bool = False) -> None:
        waiting = self._pollingD
        original(self, swallowErrors)
        if waiting is not None and self._pollingD is None and cancel:
            cancel.pop().cancel()  # the answer is read; its callback is one turn away

    monkeypatch.setattr(txpostgres.Cursor, "continuePolling", answered_then_cancelled)
    if write:
        device = await store.add_device(serial_number="CANCEL")
        d: Deferred[Any] = store.save_punches(device, [punch("1", "2025-01-01 08:00:00")])
    else:
        d = store.ping()
    cancel.append(d)
    told: list[Any] = []
    d.addBoth(told.append)
    await wait_until(lambda: not cancel)  # its first answer came in: cancelled then
    monkeypatch.undo()
    pings = await DeferredList([store.ping() for _ in range(8)], consumeErrors=True)
    await store.stop()
    assert unhandled(log_events) == []
    assert len(told) == 1 and told[0].check(CancelledError), told
    assert [ok for ok, _ in pings] == [True] * 8
    # The transaction was not cut short: a write's punch and event are there.
    again = await stores.open()
    assert [e.type for e in await again.events_after(0)] == (["attendance"] if write else [])


# --- devices --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_devices_add_find_update_delete(store: Store) -> None:
    push = await store.add_device(serial_number="PYA1", name="", status="pending")
    assert len(push.id) == 36 and push.kind == "push" and not push.approved
    assert push.display_name == "Push Device PYA1"
    pull = await store.add_device(
        serial_number="", kind="pull", host="10.0.0.5", port=4370, comm_key=123, status="offline"
    )
    assert pull.comm_key == 123

    assert await store.device_by_serial("PYA1") == push
    assert await store.device_by_serial("nope") is None
    assert await store.device("00000000-0000-4000-8000-000000000000") is None
    assert {d.id for d in await store.devices()} == {push.id, pull.id}
    assert [d.id for d in await store.devices("pull")] == [pull.id]

    await raises(DuplicateDevice, store.add_device(serial_number="PYA1"))
    await raises(DuplicateDevice, store.add_device(serial_number="", kind="pull", host="10.0.0.5"))
    await raises(ValueError, store.add_device(serial_number="X", kind="weird"))

    updated = await store.update_device(
        push.id, name="Front door", approved=True, status="online", info={"fw": "1.0"}
    )
    assert updated is not None
    assert (updated.name, updated.approved, updated.status) == ("Front door", True, "online")
    merged = await store.update_device(
        push.id, info={"users": 3}, last_seen="2025-01-01T00:00:00+00:00"
    )
    assert merged is not None and merged.info == {"fw": "1.0", "users": 3}
    assert merged.last_seen == "2025-01-01T00:00:00+00:00"
    await raises(DuplicateDevice, store.update_device(pull.id, serial_number="PYA1"))
    await raises(TypeError, store.update_device(push.id, colour="red"))
    assert await store.update_device("00000000-0000-4000-8000-000000000000", name="x") is None

    assert await store.delete_device(pull.id) is True
    assert await store.delete_device(pull.id) is False
    assert await store.device(pull.id) is None


# --- punches and events ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_save_punches_dedups_and_returns_events_ascending(store: Store) -> None:
    device = await store.add_device(serial_number="PYA8252300166", status="online")
    batch = [
        punch("1001", "2025-10-09 18:30:45"),
        punch("1002", "2025-10-09 18:31:00", status=1),
        punch("1001", "2025-10-09 18:30:45"),  # repeated inside the batch
    ]
    events = await store.save_punches(device, batch)
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert len(events) == 2 and events[1].id == events[0].id + 1
    # Punches saved without a time reading are read by the store's time policy.
    timeless = {"timestamp_utc", "time_ambiguous", "suspect_time"}
    assert [{k: v for k, v in e.payload.items() if k not in timeless} for e in events] == [
        {k: v for k, v in attendance_payload(device, p).items() if k not in timeless}
        for p in batch[:2]
    ]
    assert all(e.payload["timestamp_utc"].startswith("2025-10-09T") for e in events)
    assert all(e.type == "attendance" and e.serial_number == device.serial_number for e in events)
    assert b"id: %d\n" % events[0].id in events[0].frame

    assert await store.save_punches(device, batch) == []  # resent batch: nothing new
    more = await store.save_punches(device, [batch[0], punch("1003", "2025-10-09 18:32:00")])
    assert [e.payload["user_id"] for e in more] == ["1003"]
    assert more[0].id == events[-1].id + 1
    assert await store.save_punches(device, []) == []
    assert await store.last_event_id() == more[0].id

    # The same punch from another device is a different punch.
    other = await store.add_device(serial_number="OTHER")
    assert len(await store.save_punches(other, [batch[0]])) == 1


@pytest_twisted.ensureDeferred
async def test_large_batch_is_one_transaction(store: Store) -> None:
    device = await store.add_device(serial_number="BIG")
    batch = [punch(str(i), "2025-10-09 08:00:00") for i in range(1, 451)]
    events = await store.save_punches(device, batch)
    assert [e.id for e in events] == list(range(events[0].id, events[0].id + 450))
    assert {e.payload["user_id"] for e in events} == {str(i) for i in range(1, 451)}
    # Each event has its own punch's id: as the database holds them.
    assert [e.payload["user_id"] for e in events] == [p.user_id for p in batch]
    stored = await store.events_after(0, limit=1000)
    assert [(e.id, e.data) for e in stored] == [(e.id, e.data) for e in events]


@pytest_twisted.ensureDeferred
async def test_punch_text_is_stored_and_published_exactly(store: Store) -> None:
    """Quotes, backslashes, JSON-looking text, %s, controls, NUL and non-ASCII in a
    punch's fields: the event's data is its payload's one JSON form, and the database
    gives back the same punch and the same event text (a NUL in a text column is stored
    as the four characters \\x00 on both: PostgreSQL text cannot hold it)."""
    device = await store.add_device(serial_number="ODD", name='Gate "B" \\ %s')
    odd = 'a"b\\c {"x": [1]} %s %(n)s \t\x01 é 漢 🙂'
    raw = {"user_id": odd, "note": odd, "nul": "x\x00y", "n": 3, "list": [odd, None]}
    batch = [
        Punch(odd, "2025-03-01 08:00:00", 1, 15, odd + "\x00", raw),
        Punch("2", "2025-03-01 08:00:01", 0, 1),  # no raw fields
    ]
    events = await store.save_punches(device, batch)
    assert [e.payload["user_id"] for e in events] == [odd, "2"]
    assert events[0].payload["raw_data"] == raw and events[0].payload["device_name"] == device.name
    for event in events:
        assert event.data == encode_payload(event.payload)
    assert await store.events_after(0) == events
    assert [e.data for e in await store.events_after(0)] == [e.data for e in events]
    rows, _ = await store.attendance(device_id=device.id)
    mine = next(r for r in rows if r["timestamp"] == "2025-03-01 08:00:00")
    assert (mine["user_id"], mine["workcode"], mine["action"]) == (odd, odd + "\\x00", 1)
    stored = await store._run(_raw_of(device.id), write=False)  # type: ignore[attr-defined]
    assert json.loads(stored) == raw  # NUL inside JSON text is the escape \\u0000


def _raw_of(device_id: str) -> Script[str]:
    rows = yield Q("SELECT raw FROM punches WHERE device_id = %s AND status = 1", (device_id,))
    return str(rows[0][0])


@pytest_twisted.ensureDeferred
async def test_a_failing_unread_statement_fails_the_transaction(store: Store) -> None:
    """A statement whose rows the script does not read (sent later on PostgreSQL, with
    the next statement or COMMIT) still fails the whole transaction."""
    device = await store.add_device(serial_number="F1")

    def script() -> Script[None]:
        yield Q("UPDATE devices SET name = 'changed' WHERE id = %s", (device.id,), fetch=False)
        rows = yield Q("SELECT name FROM devices WHERE id = %s", (device.id,))
        assert rows == [("changed",)]  # the unread statement ran first
        yield Q("SELECT no_such_column FROM devices", fetch=False)

    await raises(Exception, store._run(script()))  # type: ignore[attr-defined]
    assert (await store.device(device.id)).name == ""  # type: ignore[union-attr]

    def unread() -> Script[Any]:
        return (yield Q("SELECT 1", fetch=False))

    assert await store._run(unread()) == []  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_events_after_and_append_event(store: Store) -> None:
    assert await store.last_event_id() == 0
    assert await store.events_after(0) == []
    device = await store.add_device(serial_number="SN")
    punched = await store.save_punches(device, [punch("1", "2025-01-01 08:00:00")])
    status = device_status_payload(device, "online", "2025-01-01T08:00:00+00:00")
    appended = await store.append_event(status, serial_number="SN")
    assert appended.id == punched[0].id + 1 and appended.payload == status

    events = await store.events_after(0)
    assert [e.id for e in events] == [punched[0].id, appended.id]
    assert [e.type for e in events] == ["attendance", "device_status"]
    assert events[1] == appended and events[1].serial_number == "SN"
    assert events[0].payload == punched[0].payload
    assert await store.events_after(punched[0].id) == [appended]
    assert await store.events_after(0, limit=1) == [events[0]]
    assert await store.events_after(appended.id) == []
    assert await store.last_event_id() == appended.id
    await raises(ValueError, store.append_event({"no": "type"}))


@pytest_twisted.ensureDeferred
async def test_replay_page_reads_events_the_pruned_mark_and_the_newest_id(store: Store) -> None:
    assert await store.replay_page(0) == ReplayPage([], 0, 0)
    device = await store.add_device(serial_number="SN")
    events = await store.save_punches(
        device, [punch(str(n), "2025-01-01 08:00:00") for n in range(3)]
    )
    ids = [e.id for e in events]
    page = await store.replay_page(0, 2)
    assert page == ReplayPage(events[:2], 0, ids[-1])
    assert page.events[0].payload == events[0].payload
    assert await store.replay_page(ids[-1]) == ReplayPage([], 0, ids[-1])
    await deferLater(reactor, 0.01, lambda: None)  # created_at strictly before the cutoff
    assert await store.prune_events(utc_now(), 2) == 2
    assert await store.replay_page(0) == ReplayPage(events[2:], ids[1], ids[-1])
    assert await store.prune_events(utc_now(), 2) == 1
    # Every event pruned: the newest id is still the highest one given out.
    assert await store.replay_page(0) == ReplayPage([], ids[-1], ids[-1])
    assert await store.replay_page(ids[-1] + 5) == ReplayPage([], ids[-1], ids[-1])
    status = device_status_payload(device, "online", "2025-01-01T08:00:00+00:00")
    later = await store.append_event(status, serial_number="SN")
    assert await store.replay_page(ids[-1]) == ReplayPage([later], ids[-1], later.id)


@pytest_twisted.ensureDeferred
async def test_concurrent_writers_commit_gap_free_ids_in_order(stores: Stores) -> None:
    """Two store instances (two processes' worth of pools) write at once while a third
    reads: every read continues exactly where the previous one stopped."""
    one, two, reader = await stores.open(), await stores.open(), await stores.open()
    dev_one = await one.add_device(serial_number="ONE")
    dev_two = await two.add_device(serial_number="TWO")
    seen: list[int] = []
    done = False

    async def poll() -> None:
        while True:
            finished = done
            for event in await reader.events_after(seen[-1] if seen else 0):
                expected = seen[-1] + 1 if seen else 1
                assert event.id == expected, f"saw {event.id} after {seen[-1:]}"
                seen.append(event.id)
            if finished:
                return

    polling = Deferred.fromCoroutine(poll())
    writes = []
    for i in range(12):
        stamp = f"2025-01-01 08:{i:02d}:00"
        writes.append(one.save_punches(dev_one, [punch(str(u), stamp) for u in range(3)]))
        writes.append(two.save_punches(dev_two, [punch(str(u), stamp) for u in range(2)]))
        writes.append(one.append_event({"type": "user_sync", "n": i}))
    results = await gatherResults(writes)
    done = True
    await polling
    returned = [e for r in results for e in (r if isinstance(r, list) else [r])]
    written = sorted(e.id for e in returned)
    assert written == list(range(1, 12 * 6 + 1))
    assert seen == written
    # Each writer was told the right id of each of its events (PostgreSQL derives a
    # batch's ids from the sequence after COMMIT).
    stored = {e.id: e.payload for e in await reader.events_after(0, 1000)}
    assert all(stored[e.id] == e.payload for e in returned)


@pytest_twisted.ensureDeferred
async def test_watch_reports_events_committed_by_another_store(stores: Stores) -> None:
    watcher, writer = await stores.open(), await stores.open()
    got: list[int] = []
    watcher.watch(got.append)
    device = await writer.add_device(serial_number="W")
    if stores.kind == "sqlite":  # one process owns the file: nothing to watch
        await writer.save_punches(device, [punch("1", "2025-01-01 08:00:00")])
        assert got == []
        return
    await wait_until(lambda: watcher.listening)  # type: ignore[attr-defined]
    events = await writer.save_punches(device, [punch(str(u), "2025-01-01 08:00:00") for u in "12"])
    await wait_until(lambda: events[-1].id in got)
    event = await writer.append_event({"type": "user_sync"})
    await wait_until(lambda: event.id in got)
    # A store's own commits are published by its process directly: its watcher skips them.
    own = await watcher.append_event({"type": "user_sync"})
    marker = await writer.append_event({"type": "user_sync"})
    await wait_until(lambda: marker.id in got)
    assert own.id not in got


# --- attendance queries, users, photos ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_attendance_filters_and_cursor_paging(store: Store) -> None:
    a = await store.add_device(serial_number="A", name="Lobby")
    b = await store.add_device(serial_number="B")
    await store.save_punches(
        a,
        [
            punch("1", "2025-01-01 08:00:00"),
            punch("2", "2025-01-01 08:00:00"),
            punch("1", "2025-01-01 17:00:00", status=1),
            punch("1", "2025-01-02 08:00:00"),
        ],
    )
    await store.save_punches(
        b, [punch("1", "2025-01-01 12:00:00"), punch("3", "2025-01-03 09:00:00")]
    )

    rows, cursor = await store.attendance()
    assert cursor is None and len(rows) == 6
    keys = [(r["timestamp"], r["id"]) for r in rows]
    assert keys == sorted(keys, reverse=True)
    first = rows[0]
    assert set(first) == {
        "id", "device_id", "device_name", "serial_number", "user_id", "user_name",
        "timestamp", "action", "method", "workcode", "photo_id", "received_at",
        "timestamp_utc", "time_ambiguous", "suspect_time",
    }  # fmt: skip
    assert (first["device_id"], first["device_name"], first["serial_number"]) == (
        b.id,
        "Push Device B",
        "B",
    )
    assert (first["user_id"], first["method"], first["photo_id"]) == ("3", 15, None)

    only_a, _ = await store.attendance(device_id=a.id)
    assert {r["device_name"] for r in only_a} == {"Lobby"} and len(only_a) == 4
    user_1, _ = await store.attendance(user_id="1")
    assert [r["timestamp"] for r in user_1] == [
        "2025-01-02 08:00:00", "2025-01-01 17:00:00", "2025-01-01 12:00:00", "2025-01-01 08:00:00"
    ]  # fmt: skip
    assert user_1[1]["action"] == 1
    day, _ = await store.attendance(since="2025-01-01", until="2025-01-01")
    assert len(day) == 4
    window, _ = await store.attendance(since="2025-01-01 12:00:00", until="2025-01-02 08:00:00")
    assert [r["timestamp"] for r in window] == [
        "2025-01-02 08:00:00", "2025-01-01 17:00:00", "2025-01-01 12:00:00"
    ]  # fmt: skip

    paged: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10):
        page, cursor = await store.attendance(limit=4 if not paged else 1, cursor=cursor)
        paged.extend(page)
        if cursor is None:
            break
    assert [r["id"] for r in paged] == [r["id"] for r in rows]
    filtered_page, next_cursor = await store.attendance(user_id="1", limit=3)
    rest, end = await store.attendance(user_id="1", limit=3, cursor=next_cursor)
    assert [r["id"] for r in filtered_page + rest] == [r["id"] for r in user_1] and end is None
    await raises(ValueError, store.attendance(cursor="not-a-cursor"))


@pytest_twisted.ensureDeferred
async def test_users_upsert_replace_delete_and_names_in_attendance(store: Store) -> None:
    device = await store.add_device(serial_number="U")
    other = await store.add_device(serial_number="V")
    users = [DeviceUser("10", name="Ann", privilege=14, card="123"), DeviceUser("2", name="Bob")]
    assert await store.save_users(device.id, users) == 2
    assert await store.users(device.id) == [users[1], users[0]]  # numeric order
    assert await store.save_users(device.id, [DeviceUser("2", name="Bobby", uid=7)]) == 1
    assert [(u.user_id, u.name, u.uid) for u in await store.users(device.id)] == [
        ("2", "Bobby", 7), ("10", "Ann", None)
    ]  # fmt: skip

    await store.save_users(other.id, [DeviceUser("10", name="Ann Other")])
    await store.save_punches(
        device, [punch("10", "2025-01-01 08:00:00"), punch("9", "2025-01-01 08:01:00")]
    )
    await store.save_punches(other, [punch("2", "2025-01-01 09:00:00")])
    rows, _ = await store.attendance()
    assert {(r["serial_number"], r["user_id"]): r["user_name"] for r in rows} == {
        ("U", "10"): "Ann", ("U", "9"): None, ("V", "2"): "Bobby"  # known on another device
    }  # fmt: skip

    assert await store.save_users(device.id, [DeviceUser("3", name="Cy")], replace=True) == 1
    assert [u.user_id for u in await store.users(device.id)] == ["3"]
    assert await store.delete_user(device.id, "3") is True
    assert await store.delete_user(device.id, "3") is False
    assert await store.users(device.id) == []
    assert [u.name for u in await store.users(other.id)] == ["Ann Other"]


@pytest_twisted.ensureDeferred
async def test_photos_are_stored_and_linked_to_punches(store: Store) -> None:
    device = await store.add_device(serial_number="P")
    jpeg = bytes(range(256)) * 40  # binary, with NUL bytes
    photo_id = await store.save_photo(
        device.id, "7", "2025-01-01 08:00:00", "20250101080000-7.jpg", jpeg
    )
    assert await store.photo(photo_id) == ("20250101080000-7.jpg", jpeg)
    assert await store.photo(photo_id + 1000) is None
    await store.save_punches(
        device, [punch("7", "2025-01-01 08:00:00"), punch("7", "2025-01-01 09:00:00")]
    )
    rows, _ = await store.attendance()
    assert [r["photo_id"] for r in rows] == [None, photo_id]
    # A resent photo replaces the stored one.
    assert (
        await store.save_photo(
            device.id, "7", "2025-01-01 08:00:00", "20250101080000-7.jpg", b"new"
        )
        == photo_id
    )
    assert await store.photo(photo_id) == ("20250101080000-7.jpg", b"new")


@pytest_twisted.ensureDeferred
async def test_rejected_input_and_operlog(store: Store) -> None:
    items = [Rejected("ATTLOG", "garbage\tline", "bad timestamp"), Rejected("cdata", "x", "why")]
    assert await store.save_rejected("SN1", items) == 2
    assert await store.save_rejected("SN2", [Rejected("pull", "\x00\x01", "short")]) == 1
    assert await store.save_rejected("SN1", []) == 0
    newest = await store.rejected()
    assert [(r["serial_number"], r["source"]) for r in newest] == [
        ("SN2", "pull"), ("SN1", "cdata"), ("SN1", "ATTLOG")
    ]  # fmt: skip
    assert set(newest[0]) == {"id", "serial_number", "source", "raw", "reason", "received_at"}
    sn1 = await store.rejected("SN1", limit=1)
    assert [(r["raw"], r["reason"]) for r in sn1] == [("x", "why")]
    assert (await store.rejected("SN2"))[0]["raw"] == "\\x00\x01"  # NUL is escaped

    device = await store.add_device(serial_number="OP")
    entries = [
        {"op": "4", "operator": "0", "timestamp": "2025-01-01 08:00:00", "obj": "1",
         "values": ["0", "0", "0"], "raw": "OPLOG 4\t0\t2025-01-01 08:00:00\t1\t0\t0\t0"},
        {"op": "30", "operator": "1", "timestamp": "2025-01-01 08:05:00", "obj": "2",
         "values": [], "raw": "OPLOG 30\t1\t2025-01-01 08:05:00\t2"},
    ]  # fmt: skip
    assert await store.save_operlog(device.id, entries) == 2
    assert await store.save_operlog(device.id, entries) == 0  # resent batch


# --- command queue --------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_command_queue_take_finish_and_restart(stores: Stores) -> None:
    store = await stores.open()
    device = await store.add_device(serial_number="CMD")
    queued = [
        await store.queue_command(device.id, "INFO"),
        await store.queue_command(device.id, "DATA QUERY ATTLOG StartTime=x\tEndTime=y"),
        await store.queue_command(device.id, "REBOOT"),
    ]
    assert all(c.status == "queued" and c.id.isalnum() and len(c.id) <= 16 for c in queued)
    assert len({c.id for c in queued}) == 3
    await raises(ValueError, store.queue_command(device.id, "A\nB"))

    fits_two = sum(len(f"C:{c.id}:{c.command}\n".encode()) for c in queued[:2])
    taken = await store.take_commands(device.id, max_bytes=fits_two)
    assert [c.id for c in taken] == [c.id for c in queued[:2]]
    assert all(c.status == "sent" and c.sent_at for c in taken)
    assert [c.id for c in await store.take_commands(device.id, max_bytes=1)] == [queued[2].id]
    assert await store.take_commands(device.id) == []

    done = await store.finish_command(device.id, queued[0].id, 0, "ok")
    assert done is not None and (done.status, done.return_code, done.result) == ("done", 0, "ok")
    failed = await store.finish_command(device.id, queued[1].id, -1002)
    assert failed is not None and failed.status == "failed" and failed.finished_at
    assert await store.finish_command(device.id, "999999", 0) is None
    assert await store.finish_command(device.id, "abc", 0) is None
    other = await store.add_device(serial_number="OTHER")
    assert await store.finish_command(other.id, queued[2].id, 0) is None

    await store.stop()
    store = await stores.open()
    history = await store.commands(device.id)
    assert [c.id for c in history] == [c.id for c in reversed(queued)]
    assert [c.status for c in history] == ["sent", "failed", "done"]
    new = await store.queue_command(device.id, "CHECK")
    assert new.id not in {c.id for c in queued} and int(new.id) > int(queued[-1].id)
    assert [c.id for c in await store.take_commands(device.id)] == [new.id]
    assert await store.commands(device.id, limit=1) == [await store.commands(device.id)][0][:1]


# --- outages ------------------------------------------------------------------------------


def _via(url: str, port: int) -> str:
    """``url`` pointing at 127.0.0.1:``port`` instead of its own host and port."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


@pytest_twisted.ensureDeferred
async def test_outage_maps_to_store_unavailable_and_recovers(stores: Stores) -> None:
    if stores.kind == "sqlite":
        await _sqlite_locked(stores)
    else:
        await _postgres_cut(stores)


async def _sqlite_locked(stores: Stores) -> None:
    store = await stores.open(stores.url + "?timeout=0.2")
    device = await store.add_device(serial_number="L")
    path = store.path  # type: ignore[attr-defined]
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        error = await raises(
            StoreUnavailable, store.save_punches(device, [punch("1", "2025-01-01 08:00:00")])
        )
        assert "locked" in str(error)
        await raises(StoreUnavailable, store.queue_command(device.id, "INFO"))
        assert await store.events_after(0) == []  # WAL: readers are not blocked
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    events = await store.save_punches(device, [punch("1", "2025-01-01 08:00:00")])
    assert [e.id for e in events] == [1]


async def _postgres_cut(stores: Stores) -> None:
    target = urlsplit(stores.url)
    proxy = TCPProxy(target.hostname or "127.0.0.1", target.port or 5432)
    port = await proxy.start()
    try:
        store = await stores.open(
            _via(stores.url, port), pool_size=2, connect_timeout=2.0, probe_interval=0.5
        )
        direct = await stores.open()
        got: list[int] = []
        store.watch(got.append)
        await wait_until(lambda: store.listening)  # type: ignore[attr-defined]
        device = await store.add_device(serial_number="CUT")
        before = await direct.save_punches(device, [punch("1", "2025-01-01 08:00:00")])
        await wait_until(lambda: before[0].id in got)

        proxy.cut()
        await raises(
            StoreUnavailable, store.save_punches(device, [punch("2", "2025-01-01 08:01:00")])
        )
        await raises(StoreUnavailable, store.ping())
        await raises(StoreUnavailable, store.events_after(0))
        await wait_until(lambda: not store.listening)  # type: ignore[attr-defined]
        # Meanwhile another process commits an event this LISTEN connection cannot see.
        missed = await direct.append_event({"type": "user_sync"})

        proxy.restore()
        await wait_until(lambda: store.listening)  # type: ignore[attr-defined]
        await wait_until(lambda: missed.id in got)  # caught up after reconnecting
        after = await store.save_punches(device, [punch("2", "2025-01-01 08:01:00")])
        assert [e.id for e in after] == [missed.id + 1]
        assert [e.id for e in await store.events_after(0)] == [before[0].id, missed.id, after[0].id]
        later = await direct.append_event({"type": "user_sync"})
        await wait_until(lambda: later.id in got)

        # Cut and restored while idle: the stale pool sockets are replaced transparently.
        proxy.cut()
        await wait_until(lambda: not store.listening)  # type: ignore[attr-defined]
        proxy.restore()
        await store.ping()
        assert len(await store.events_after(0)) == 4
    finally:
        await stores.close_all()
        await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_silent_network_times_out_and_recovers(stores: Stores) -> None:
    """A database that stops answering (no RST, no FIN) must not hang callers forever."""
    if stores.kind == "sqlite":
        store = await stores.open()
        await store.ping()  # no network; a slow disk is covered by the busy timeout
        return
    # Migrate first with the usual timeouts: the schema's migrations are one transaction
    # that a loaded machine may not finish within this test's 0.5 s operation timeout.
    await stores.open()
    target = urlsplit(stores.url)
    proxy = TCPProxy(target.hostname or "127.0.0.1", target.port or 5432)
    port = await proxy.start()
    try:
        store = await stores.open(
            _via(stores.url, port),
            pool_size=1,
            connect_timeout=0.5,
            op_timeout=0.5,
            probe_interval=0.2,
        )
        store.watch(lambda _: None)
        await wait_until(lambda: store.listening)  # type: ignore[attr-defined]
        device = await store.add_device(serial_number="FROZEN")
        proxy.freeze()
        await raises(
            StoreUnavailable, store.save_punches(device, [punch("1", "2025-01-01 08:00:00")])
        )
        await wait_until(lambda: not store.listening)  # type: ignore[attr-defined]
        proxy.restore()
        await wait_until(lambda: store.listening)  # type: ignore[attr-defined]
        events = await store.save_punches(device, [punch("1", "2025-01-01 08:00:00")])
        assert len(events) == 1
    finally:
        await stores.close_all()
        await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_parallel_operations_share_the_pool(store: Store) -> None:
    device = await store.add_device(serial_number="PAR")
    results = await DeferredList(
        [store.save_punches(device, [punch(str(i), "2025-01-01 08:00:00")]) for i in range(20)]
        + [store.attendance(limit=5) for _ in range(10)],
        consumeErrors=True,
    )
    assert all(ok for ok, _ in results)
    assert await store.last_event_id() == 20


@pytest_twisted.ensureDeferred
async def test_one_process_holds_each_pull_device(stores: Stores) -> None:
    if stores.kind == "sqlite":
        store = await stores.open()  # one process owns the file: it holds every device
        assert await store.try_lock_device("dev-a")
        assert await store.try_lock_device("dev-a")
        await store.unlock_device("dev-a")
        await store.unlock_device("never-locked")
        assert await store.try_lock_device("dev-a")
        return
    first, second = await stores.open(), await stores.open()
    assert await first.try_lock_device("dev-a")
    assert await first.try_lock_device("dev-a")  # idempotent while held
    assert not await second.try_lock_device("dev-a")
    assert await second.try_lock_device("dev-b")
    await first.unlock_device("dev-a")
    assert await second.try_lock_device("dev-a")
    assert not await first.try_lock_device("dev-a")
    await second.stop()  # its session ends: PostgreSQL releases its locks
    # ... once its backend has seen the connection close, a moment after stop() returns.
    for _ in range(250):
        if await first.try_lock_device("dev-a"):
            break
        await deferLater(reactor, 0.02, lambda: None)
    else:
        raise AssertionError("dev-a still locked after the other store stopped")
    assert await first.try_lock_device("dev-b")


@pytest_twisted.ensureDeferred
async def test_device_locks_are_per_schema(stores: Stores) -> None:
    """Advisory locks are per database: two deployments in two schemas never share one."""
    if stores.kind == "sqlite":
        return
    from tests.databases import postgres_schema

    with postgres_schema() as other_url:
        here, there = await stores.open(), await stores.open(other_url)
        try:
            assert await here.try_lock_device("same-device-id")
            assert await there.try_lock_device("same-device-id")
            # The events and migrations locks are namespaced too: a write in each schema
            # while the other's transaction is open must not wait (both just succeed).
            assert await here.last_event_id() == 0
        finally:
            await there.stop()


@pytest_twisted.ensureDeferred
async def test_batch_ids_are_right_with_a_sequence_that_caches_ids(stores: Stores) -> None:
    """A sequence with CACHE > 1 (a DBA's tuning) hands each session ids ahead of time,
    so one transaction's ids need not be consecutive, even under the events lock: every
    event returned from concurrent batches must still carry its own id."""
    if stores.kind != "postgres":
        pytest.skip("the events' id sequence is PostgreSQL's")
    await stores.open()  # migrates

    conn = psycopg2.connect(stores.url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("ALTER SEQUENCE events_id_seq CACHE 4")
    conn.close()
    one, two = await stores.open(), await stores.open()
    dev_one = await one.add_device(serial_number="ONE")
    dev_two = await two.add_device(serial_number="TWO")
    writes = []
    for i in range(10):
        stamp = f"2025-01-01 08:{i:02d}:00"
        writes.append(one.save_punches(dev_one, [punch(str(u), stamp) for u in range(3)]))
        writes.append(two.save_punches(dev_two, [punch(str(u), stamp) for u in range(3)]))
    returned = [e for r in await gatherResults(writes) for e in r]
    stored = {e.id: e.payload for e in await one.events_after(0, 1000)}
    assert len(returned) == 60 and all(stored.get(e.id) == e.payload for e in returned)
