"""Schema migrations: the ``migrations/NNNN_name.sql`` files and the script that applies them."""

from __future__ import annotations

import re
from importlib import resources

from attrs import frozen

from zkserver.store.dialect import MIGRATIONS_LOCK, SCHEMA_LOCK_SQL, Q, Script, utc_now

__all__ = ["MIGRATIONS", "Migration", "load_migrations", "migrate", "split_statements"]


@frozen
class Migration:
    """One ``migrations/NNNN_name.sql`` file, split into statements."""

    version: int
    name: str
    statements: tuple[str, ...]


def split_statements(text: str) -> tuple[str, ...]:
    """Drop ``--`` comment lines and split on ``;`` at the end of a line."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    parts = re.split(r";[ \t]*(?:\n|$)", "\n".join(lines))
    return tuple(part.strip() for part in parts if part.strip())


def load_migrations() -> tuple[Migration, ...]:
    found = []
    for entry in resources.files("zkserver.store").joinpath("migrations").iterdir():
        match = re.fullmatch(r"(\d+)_(\w+)\.sql", entry.name)
        if match:
            text = entry.read_text(encoding="utf-8")
            found.append(Migration(int(match[1]), match[2], split_statements(text)))
    found.sort(key=lambda m: m.version)
    if len({m.version for m in found}) != len(found):
        raise RuntimeError("two migrations share a version number")
    return tuple(found)


MIGRATIONS = load_migrations()


def migrate(dialect: str) -> Script[list[int]]:
    """Apply every migration not yet in ``schema_version``, in order; return their versions."""
    if dialect == "postgresql":
        yield Q(SCHEMA_LOCK_SQL, (MIGRATIONS_LOCK,))
    yield Q(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    done = {row[0] for row in (yield Q("SELECT version FROM schema_version"))}
    applied = []
    for migration in MIGRATIONS:
        if migration.version in done:
            continue
        for statement in migration.statements:
            yield Q(statement)
        yield Q(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (%s, %s, %s)",
            (migration.version, migration.name, utc_now()),
        )
        applied.append(migration.version)
    return applied
