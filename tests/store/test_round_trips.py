"""How a transaction script travels to PostgreSQL (zkserver.store.postgres._drive):
statements grouped into round trips. Pure (a recording cursor), then counted on a real
server."""

from __future__ import annotations

import time
from typing import Any

import psycopg2
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater
from txpostgres import txpostgres as txpg

from tests.databases import POSTGRES_URL
from tests.store.conftest import Stores
from zkserver.records import Punch
from zkserver.store.base import StoreUnavailable
from zkserver.store.dialect import Q, Rows, Script
from zkserver.store.postgres import _drive, _Transaction


class RecordingCursor:
    """Records what would be sent; every statement returns one row naming its round trip."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.description: Any = None

    def mogrify(self, sql: str, params: Any) -> bytes:
        return (sql % params if params else sql).encode()

    def execute(self, sql: bytes) -> Deferred[None]:
        self.sent.append(sql)
        self.description = () if sql.endswith(b"COMMIT") else ("column",)
        return succeed(None)

    def fetchall(self) -> Rows:
        return [(len(self.sent),)]


def run(script: Script[Any]) -> tuple[Any, list[bytes]]:
    cursor = RecordingCursor()
    results: list[Any] = []
    tx = _Transaction(script)
    Deferred.fromCoroutine(_drive(cursor, tx)).addBoth(results.append)  # type: ignore[arg-type]
    assert not tx.retryable or not cursor.sent  # once anything is answered or committed
    return results[0], cursor.sent


def test_unread_statements_travel_with_the_next_read_or_with_commit() -> None:
    got: list[Rows] = []

    def script() -> Script[str]:
        got.append((yield Q("A")))
        got.append((yield Q("B %s", (1,), fetch=False)))
        got.append((yield Q("C")))
        got.append((yield Q("D", fetch=False)))
        got.append((yield Q("E", fetch=False)))
        return "done"

    result, sent = run(script())
    assert result == "done"
    assert sent == [b"BEGIN;\nA", b"B 1;\nC", b"D;\nE;\nCOMMIT"]
    assert got == [[(1,)], [], [(2,)], [], []]


def test_a_transaction_is_retryable_until_answered_or_committing() -> None:
    """The pool may run a transaction again on a new connection only while nothing of it
    was answered and no COMMIT was sent."""

    class Dead(RecordingCursor):
        def execute(self, sql: bytes) -> Deferred[None]:
            self.sent.append(sql)
            raise ConnectionError("stale socket")

    def unread_only() -> Script[None]:
        yield Q("A", fetch=False)

    for script, retryable in ((iter([Q("A")]), True), (unread_only(), False)):
        tx = _Transaction(script)  # type: ignore[arg-type]
        failures: list[Any] = []
        Deferred.fromCoroutine(_drive(Dead(), tx)).addErrback(failures.append)  # type: ignore[arg-type]
        assert failures and tx.retryable is retryable
        assert tx.first == Q("A", fetch=retryable)  # kept for the retry


def test_an_after_commit_statement_goes_with_commit_and_ends_the_script() -> None:
    def script() -> Script[Rows]:
        yield Q("A", fetch=False)
        return (yield Q("B", after_commit=True))

    result, sent = run(script())
    assert sent == [b"BEGIN;\nA;\nCOMMIT;\nB"] and result == [(1,)]

    def goes_on() -> Script[None]:
        yield Q("A", after_commit=True)
        yield Q("C")

    failure, _ = run(goes_on())
    assert failure.check(RuntimeError)


def test_a_script_without_statements_sends_nothing() -> None:
    def script() -> Script[int]:
        return 7
        yield Q("never")

    assert run(script()) == (7, [])


def record_round_trips(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """What every txpostgres cursor sends from now on, one query string per round trip."""
    sent: list[bytes] = []
    execute = txpg.Cursor.execute

    def recording(self: txpg.Cursor, query: Any, params: Any = None) -> Deferred[Any]:
        sent.append(bytes(query) if isinstance(query, bytes) else query.encode())
        return execute(self, query, params)

    monkeypatch.setattr(txpg.Cursor, "execute", recording)
    return sent


@pytest_twisted.ensureDeferred
async def test_a_punch_batch_is_two_round_trips(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Punches (with BEGIN); then the suspect count, the events lock, the events with
    their outbox rows, NOTIFY, COMMIT and the ids (currval, after COMMIT). A batch that is
    all duplicates: the punches, then COMMIT."""
    if stores.kind != "postgres":
        pytest.skip("round trips are PostgreSQL's (SQLite runs in-process)")
    store = await stores.open(pool_size=1)
    device = await store.add_device(serial_number="RT1")
    sent = record_round_trips(monkeypatch)
    batch = [Punch(str(i), "1999-01-01 08:00:00", 0, 1, raw={"n": i}) for i in range(150)]
    events = await store.save_punches(device, batch)  # suspect (too old) too
    assert [e.payload["user_id"] for e in events] == [str(i) for i in range(150)]
    ids = [e.id for e in events]
    assert ids == list(range(ids[0], ids[0] + 150))
    # The inserts are prepared statements (the first use on a session prepares them).
    assert [q.split(b" ", 1)[0] for q in sent] == [b"BEGIN;\nPREPARE", b"UPDATE"]
    assert b" AS INSERT INTO punches " in sent[0] and b"EXECUTE zk_" in sent[0]
    last = sent[1].split(b";\n")
    assert b"pg_advisory_xact_lock" in last[1] and b"INSERT INTO events " in last[2]
    assert b"webhook_deliveries" in last[2] and b"pg_notify" in last[4]
    assert last[5] == b"COMMIT" and last[6].startswith(b"SELECT currval('")
    stored = await store.events_after(ids[0] - 1, 200)
    assert [(e.id, e.payload) for e in stored] == [(e.id, e.payload) for e in events]
    sent.clear()
    assert await store.save_punches(device, batch) == []
    assert [q.split(b" ", 1)[0] for q in sent] == [b"BEGIN;\nEXECUTE", b"COMMIT"]


@pytest_twisted.ensureDeferred
async def test_a_connection_found_dead_at_the_first_round_trip_is_replaced(
    stores: Stores,
) -> None:
    """The pool's connections die while idle (the database restarted) and the reactor has
    not noticed yet: the first round trip (BEGIN and the first statement, never committed)
    fails on the stale socket and the transaction runs again on a new connection, so the
    caller sees no error."""
    if stores.kind != "postgres":
        pytest.skip("PostgreSQL connections only")
    store = await stores.open(pool_size=1)
    device = await store.add_device(serial_number="STALE")
    # The session that dies has prepared the punch statements: the new one must again.
    await store.save_punches(device, [Punch("0", "2025-01-01 07:00:00", 0, 1)])
    pool = store._pool  # type: ignore[attr-defined]
    pids = [c._connection.get_backend_pid() for c in pool.connections]
    # Blocking on purpose: the reactor must not see the sockets close before the save.
    admin = psycopg2.connect(POSTGRES_URL)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
        for _ in range(500):
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))
            if cur.fetchone()[0] == 0:
                break
            time.sleep(0.01)
    admin.close()
    events = await store.save_punches(device, [Punch("1", "2025-01-01 08:00:00", 0, 1)])
    assert [e.payload["user_id"] for e in events] == ["1"]


def prepared_names(store: Any) -> Deferred[list[str]]:
    def script() -> Script[list[str]]:
        rows = yield Q("SELECT name FROM pg_prepared_statements ORDER BY name")
        return [row[0] for row in rows]

    return store._run(script(), write=False)  # type: ignore[no-any-return]


@pytest_twisted.ensureDeferred
async def test_each_session_plans_the_upload_statements_once(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A one-punch upload, over and over: PREPARE on the session's first, EXECUTE after."""
    if stores.kind != "postgres":
        pytest.skip("prepared statements are PostgreSQL's")
    store = await stores.open(pool_size=1)
    device = await store.add_device(serial_number="PREP")
    sent = record_round_trips(monkeypatch)
    for i in range(5):
        events = await store.save_punches(device, [Punch(str(i), "2026-11-01 08:00:00", 0, 1)])
        assert [e.payload["user_id"] for e in events] == [str(i)]
    prepares = [q.count(b"PREPARE ") for q in sent]
    assert len(sent) == 10 and sum(prepares) == sum(prepares[:2]) == 2  # punches, events
    assert all(b"EXECUTE zk_" in q for q in sent[2:4])
    assert len(await prepared_names(store)) == 2


@pytest_twisted.ensureDeferred
async def test_a_failed_transaction_starts_the_prepared_statements_over(
    stores: Stores,
) -> None:
    """PREPARE is not undone by ROLLBACK, and after a failure nobody knows which ones
    ran: the rollback deallocates them all, and the next upload prepares again."""
    if stores.kind != "postgres":
        pytest.skip("prepared statements are PostgreSQL's")
    store = await stores.open(pool_size=1)
    device = await store.add_device(serial_number="PREPFAIL")
    await store.save_punches(device, [Punch("1", "2026-11-01 08:00:00", 0, 1)])
    assert len(await prepared_names(store)) == 2

    def failing() -> Script[None]:
        yield Q("SELECT %s::int + 1", (1,), prepare=True)  # prepared, then the failure
        yield Q("SELECT 1 / 0")

    with pytest.raises(psycopg2.DataError):
        await store._run(failing())  # type: ignore[attr-defined]
    assert await prepared_names(store) == []
    events = await store.save_punches(device, [Punch("2", "2026-11-01 08:00:00", 0, 1)])
    assert [e.payload["user_id"] for e in events] == ["2"]
    assert len(await prepared_names(store)) == 2


@pytest_twisted.ensureDeferred
async def test_an_after_commit_statement_reads_the_committed_state(stores: Stores) -> None:
    """Both backends: the statement runs after COMMIT (a read on another connection sees
    the write by then), in the same session, and a script going on after it fails."""
    store = await stores.open()

    def script() -> Script[Rows]:
        yield Q(
            "INSERT INTO events (type, serial_number, payload, created_at)"
            " VALUES ('probe', '', '{}', 'now')",
            fetch=False,
        )
        return (yield Q("SELECT COUNT(*) FROM events", after_commit=True))

    assert await store._run(script()) == [(1,)]  # type: ignore[attr-defined]
    assert [e.type for e in await store.events_after(0)] == ["probe"]

    def goes_on() -> Script[None]:
        yield Q("SELECT 1", after_commit=True)
        yield Q("SELECT 2")

    with pytest.raises(RuntimeError, match="after its after-commit statement"):
        await store._run(goes_on())  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_a_failure_in_the_round_trip_of_a_sessions_first_prepare_is_forgotten(
    stores: Stores,
) -> None:
    """A session's first PREPARE runs, then a statement of the same round trip fails
    (its EXECUTE here; a deadlock, a timeout or a cancel in production). The statement
    stays prepared on the server though the record never confirmed it: the rollback must
    deallocate it too, or every later use on that session sends the same PREPARE again
    and fails ("prepared statement ... already exists")."""
    if stores.kind != "postgres":
        pytest.skip("prepared statements are PostgreSQL's")
    store = await stores.open(pool_size=1)

    def add(n: int) -> Script[Rows]:
        return (yield Q("SELECT %s::int + 1", (n,), prepare=True))

    with pytest.raises(psycopg2.DataError):  # integer out of range, at EXECUTE
        await store._run(add(2**40))  # type: ignore[attr-defined]
    assert await store._run(add(1)) == [(2,)]  # type: ignore[attr-defined]
    assert await store._run(add(2)) == [(3,)]  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_a_query_cancelled_by_the_server_fails_once_and_keeps_its_connection(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator's pg_cancel_backend (or a statement_timeout) stops an upload that waits
    on another transaction's uncommitted copy of its punch: the caller is told, the
    transaction is not sent again (it would wait on the same row until the deadline),
    and the connection stays in the pool."""
    if stores.kind != "postgres":
        pytest.skip("PostgreSQL connections only")
    store = await stores.open(pool_size=1, op_timeout=5.0)
    device = await store.add_device(serial_number="CANCEL")
    await store.save_punches(device, [Punch("0", "2025-01-01 07:00:00", 0, 1)])
    (conn,) = store._pool.connections  # type: ignore[attr-defined]
    pid = conn._connection.get_backend_pid()
    other = psycopg2.connect(stores.url)  # holds the same punch, uncommitted
    with other.cursor() as cur:
        cur.execute(
            "INSERT INTO punches (device_id, serial_number, received_at, user_id, timestamp,"
            " status, verify) VALUES (%s, 'CANCEL', '', '1', '2025-01-01 08:00:00', 0, 1)",
            (device.id,),
        )
    sent = record_round_trips(monkeypatch)
    saving = store.save_punches(device, [Punch("1", "2025-01-01 08:00:00", 0, 1)])
    admin = psycopg2.connect(POSTGRES_URL)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            for _ in range(500):  # until the upload waits on the row
                cur.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,))
                if cur.fetchone()[0] == "Lock":
                    break
                await deferLater(reactor, 0.01, lambda: None)
            cur.execute("SELECT pg_cancel_backend(%s)", (pid,))
        with pytest.raises(StoreUnavailable):
            await saving
        assert sum(q.startswith(b"BEGIN") for q in sent) == 1  # not sent again
    finally:
        other.rollback()
        other.close()
        admin.close()
    events = await store.save_punches(device, [Punch("1", "2025-01-01 08:00:00", 0, 1)])
    assert [e.payload["user_id"] for e in events] == ["1"]
    assert store._pool.connections == {conn}  # type: ignore[attr-defined]
    assert conn._connection.get_backend_pid() == pid
