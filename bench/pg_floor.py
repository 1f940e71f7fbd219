"""Benchmark: the database's own share of ingest, without the server.

Run by hand (pytest never collects bench/):

    python bench/pg_floor.py                          # 10 terminals, 100-line batches
    python bench/pg_floor.py --punches 50000 --terminals 10 --batch 100

The store's own punch transaction (``SQLStore._save_punches``: the punches, the suspect
count, the events lock, the events, the webhook outbox, NOTIFY), run by the store's own
PostgreSQL driver (``zkserver.store.postgres._drive``: the same statements in the same
round trips as the server sends) over plain blocking psycopg2 connections: one
connection and one thread per terminal, each committing its own batches one after
another. No HTTP, no Twisted reactor, no SSE: what is left is PostgreSQL's work per punch
(and this process's, building the statements), i.e. the floor of what ingest can cost
on this machine when PostgreSQL shares its cores with the server.

Reports punches/s, the CPU seconds of the terminals' PostgreSQL backends (by pid), of
every postgres process (WAL writer, checkpointer, autovacuum... and anybody else's
queries: the machine is shared), and of this process, each per punch.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # zkserver from this tree

from _common import (  # noqa: E402
    loadavg,
    machine_facts,
    postgres_cpu,
    postgres_cpu_since,
    postgres_schema,
    proc_cpu_s,
    self_cpu_s,
    table,
)


class Session:
    """What ``_drive`` reads of a txpostgres connection: the psycopg2 connection and the
    record of the statements prepared on it (so the floor prepares as the server does)."""

    def __init__(self, conn: Any) -> None:
        from zkserver.store import postgres

        self._connection = conn
        self.prepared = postgres._Prepared() if hasattr(postgres, "_Prepared") else None


class BlockingCursor:
    """A psycopg2 cursor that looks like a txpostgres one to ``_drive``: ``execute``
    returns an already fired Deferred."""

    def __init__(self, cursor: Any, session: Session) -> None:
        self._cursor = cursor
        self._connection = session

    def execute(self, sql: Any, params: Any = None) -> Any:
        from twisted.internet.defer import succeed

        self._cursor.execute(sql, params)
        return succeed(None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


#: id(psycopg2 connection) -> its Session (the connections live as long as the run).
SESSIONS: dict[int, Session] = {}


def run_script(conn: Any, script: Any) -> Any:
    """One transaction script through the server's driver, on a blocking connection.

    Run from an older tree (``python OLD/bench/pg_floor.py``, to compare), whose driver
    left BEGIN and COMMIT to the connection, they are sent around it one round trip
    each, as that server did."""
    from twisted.internet.defer import Deferred

    from zkserver.store import postgres

    session = SESSIONS.get(id(conn))
    if session is None:
        session = SESSIONS[id(conn)] = Session(conn)
    cursor = BlockingCursor(conn.cursor(), session)
    results: list[Any] = []
    if hasattr(postgres, "_Transaction"):
        d = Deferred.fromCoroutine(postgres._drive(cursor, postgres._Transaction(script)))
    else:
        cursor.execute("BEGIN")
        d = Deferred.fromCoroutine(postgres._drive(cursor, script))
        d.addCallback(lambda result: cursor.execute("COMMIT").addCallback(lambda _: result))
    d.addBoth(results.append)
    script.close()
    if not results:
        raise RuntimeError("the driver waited for something: not a blocking cursor?")
    result = results[0]
    if hasattr(result, "raiseException"):  # a Failure: roll back as the server does
        conn.cursor().execute("ROLLBACK")
        result.raiseException()
    return result


def punches_for(terminal: int, count: int, batch: int) -> list[list[Any]]:
    """``count`` punches of one terminal in ``batch``-sized lists, stamped as ingest
    stamps them (recent local times, UTC server zone)."""
    from zkserver.localtime import TimePolicy
    from zkserver.records import Punch

    policy = TimePolicy()
    received = dt.datetime.now(dt.UTC)
    yesterday = dt.date.today() - dt.timedelta(days=1)
    out: list[Any] = []
    for i in range(count):
        s = i % 86400
        day = yesterday - dt.timedelta(days=(i // 86400) % 28)
        ts = f"{day} {s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"
        pin = f"{terminal}{i:07d}"
        raw = {"user_id": pin, "timestamp": ts, "status": 0, "verify_method": 1}
        raw.update(workcode="0", reserved1="0", reserved2="0")
        got = policy.stamp(ts, "", received)
        out.append(
            Punch(pin, ts, 0, 1, "0", raw, got.timestamp_utc, got.time_ambiguous, got.suspect_time)
        )
    return [out[i : i + batch] for i in range(0, count, batch)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--punches", type=int, default=30_000)
    p.add_argument("--terminals", type=int, default=10)
    p.add_argument("--batch", type=int, default=100)
    args = p.parse_args()

    import psycopg2

    from zkserver.records import Device
    from zkserver.store.postgres import PostgresStore

    with postgres_schema("zkfloor") as url:
        store = PostgresStore(url)
        setup = psycopg2.connect(url)
        setup.autocommit = True  # BEGIN and COMMIT are sent explicitly (run_script)
        run_script(setup, store._migrate())
        store.channel = "zkfloor"
        # What start() reads: the migrations' sequence steps by 1 and caches no ids.
        store._events_sequence = "events_id_seq"
        if hasattr(store, "_consecutive_ids"):
            store._consecutive_ids = True
        devices = []
        cur = setup.cursor()
        for k in range(args.terminals):
            sn = f"FLOOR{k:04d}"
            cur.execute(
                "INSERT INTO devices (id, serial_number, name, kind, status, approved,"
                " created_at) VALUES (%s, %s, '', 'push', 'online', 1, %s)",
                (f"dev-{k}", sn, dt.datetime.now(dt.UTC).isoformat()),
            )
            devices.append(Device(f"dev-{k}", sn, "", "push", "online", True))
        per = args.punches // args.terminals
        work = [punches_for(k, per, args.batch) for k in range(args.terminals)]
        conns = [psycopg2.connect(url) for _ in range(args.terminals)]
        for c in conns:
            c.autocommit = True  # BEGIN and COMMIT are sent explicitly (run_script)
        pids = []
        for c in conns:
            with c.cursor() as q:
                q.execute("SELECT pg_backend_pid()")
                pids.append(q.fetchone()[0])
        saved = [0] * args.terminals
        errors: list[str] = []

        def terminal(k: int) -> None:
            try:
                for punches in work[k]:
                    saved[k] += len(run_script(conns[k], store._save_punches(devices[k], punches)))
            except Exception as e:
                errors.append(repr(e))

        backend0 = sum(proc_cpu_s(pid) for pid in pids)
        pg0, self0 = postgres_cpu(), self_cpu_s()
        threads = [threading.Thread(target=terminal, args=(k,)) for k in range(args.terminals)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        backends = sum(proc_cpu_s(pid) for pid in pids) - backend0
        pg_all, client = postgres_cpu_since(pg0), self_cpu_s() - self0
        load = loadavg()
        for c in conns:
            c.close()
        setup.close()

    n = sum(saved)
    us = 1e6 / n if n else float("nan")
    print()
    print("zkserver ingest floor: the store's punch transaction over blocking psycopg2")
    for line in machine_facts():
        print("  " + line)
    print()
    print(f"{args.terminals} terminals (a connection and a thread each), {args.batch}-line batches")
    print(
        table(
            ["metric", "value"],
            [
                ["punches saved (events)", n],
                ["errors", len(errors)],
                ["wall s", wall],
                ["punches/s", n / wall if wall else float("nan")],
                ["terminals' backends CPU s", backends],
                ["  per punch, us", backends * us],
                ["all postgres processes CPU s", pg_all],
                ["  per punch, us", pg_all * us],
                ["this process CPU s (statements, psycopg2)", client],
                ["  per punch, us", client * us],
                ["load average after", load],
            ],
        )
    )
    if errors:
        print("first error:", errors[0][:300])


if __name__ == "__main__":
    main()
