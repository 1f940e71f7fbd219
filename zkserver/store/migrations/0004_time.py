"""Fill the instant, ambiguity and suspect reason of punches saved before migration 0004.

Zones cannot be computed in SQL (neither SQLite nor every PostgreSQL has the rules the
server uses), so this step reads the punches in batches of :data:`BATCH` by id, computes
with :mod:`zkserver.localtime` exactly as ingest does (receipt time = ``received_at``), and
writes each batch back with one ``UPDATE ... FROM`` over a ``VALUES`` list. It runs inside
the migration's transaction, so a failure leaves the database at the old version.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from zkserver.store.dialect import Q, Script, values
from zkserver.store.schema import MigrationContext

#: Punches read and written per statement.
BATCH = 1000

#: Created once the columns are filled.
INDEXES = (
    "CREATE INDEX punches_utc ON punches (timestamp_utc, id)",
    "CREATE INDEX punches_device_utc ON punches (device_id, timestamp_utc, id)",
    "CREATE INDEX punches_user_utc ON punches (user_id, timestamp_utc, id)",
)


def _received(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return datetime.now(UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _time_offset(raw: str) -> object:
    if '"time_offset"' not in (raw or ""):
        return None
    try:
        return json.loads(raw).get("time_offset")
    except (ValueError, AttributeError):
        return None


def migrate(context: MigrationContext) -> Script[int]:
    """Returns how many punches were filled."""
    policy = context.time_policy
    last, filled = -1, 0
    while True:
        rows = yield Q(
            "SELECT p.id, p.timestamp, p.raw, p.received_at, COALESCE(d.timezone, '')"
            " FROM punches p LEFT JOIN devices d ON d.id = p.device_id"
            " WHERE p.id > %s ORDER BY p.id LIMIT %s",
            (last, BATCH),
        )
        if not rows:
            break
        updates = []
        for punch_id, timestamp, raw, received_at, zone in rows:
            got = policy.stamp(timestamp, zone, _received(received_at), _time_offset(raw))
            updates.append(
                (int(punch_id), got.timestamp_utc, int(got.time_ambiguous), got.suspect_time)
            )
        sql, params = values(updates)
        yield Q(
            f"WITH v (id, utc, ambiguous, suspect) AS (VALUES {sql})"
            " UPDATE punches SET timestamp_utc = v.utc, time_ambiguous = v.ambiguous,"
            " suspect_time = v.suspect FROM v WHERE punches.id = v.id",
            params,
        )
        filled += len(rows)
        last = int(rows[-1][0])
    yield Q(
        "UPDATE devices SET suspect_punches = (SELECT COUNT(*) FROM punches p"
        " WHERE p.device_id = devices.id AND p.suspect_time IS NOT NULL)"
    )
    for index in INDEXES:
        yield Q(index)
    return filled
