"""Schema migrations: the ``migrations/NNNN_name.sql`` files and the script that applies them.

A version may also have a Python step, ``migrations/NNNN_name.py`` with a function
``migrate(context: MigrationContext) -> Script``: a transaction script run right after the
version's SQL statements, in the same transaction, for work SQL cannot do on both
databases (e.g. computing time zones). A version may be SQL only, Python only, or both.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from importlib import resources
from typing import Any

from attrs import field, frozen

from zkserver.localtime import TimePolicy
from zkserver.store.dialect import MIGRATIONS_LOCK, SCHEMA_LOCK_SQL, Q, Script, utc_now

__all__ = [
    "MIGRATIONS",
    "Migration",
    "MigrationContext",
    "load_migrations",
    "migrate",
    "split_statements",
]


@frozen
class MigrationContext:
    """What a Python migration step may use besides the database."""

    dialect: str
    time_policy: TimePolicy = field(factory=TimePolicy)


@frozen
class Migration:
    """One version: its ``NNNN_name.sql`` split into statements, and the module name of its
    ``NNNN_name.py`` step (None when it has none)."""

    version: int
    name: str
    statements: tuple[str, ...]
    step: str | None = None

    def python_step(self) -> Callable[[MigrationContext], Script[Any]] | None:
        """The step's ``migrate`` function (imported on first use)."""
        if self.step is None:
            return None
        step: Callable[[MigrationContext], Script[Any]] = importlib.import_module(
            f"zkserver.store.migrations.{self.step}"
        ).migrate
        return step


def split_statements(text: str) -> tuple[str, ...]:
    """Drop ``--`` comment lines and split on ``;`` at the end of a line."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    parts = re.split(r";[ \t]*(?:\n|$)", "\n".join(lines))
    return tuple(part.strip() for part in parts if part.strip())


def load_migrations() -> tuple[Migration, ...]:
    sql: dict[tuple[int, str], tuple[str, ...]] = {}
    steps: dict[tuple[int, str], str] = {}
    for entry in resources.files("zkserver.store").joinpath("migrations").iterdir():
        match = re.fullmatch(r"(\d+)_(\w+)\.(sql|py)", entry.name)
        if not match:
            continue
        key = (int(match[1]), match[2])
        if match[3] == "sql":
            sql[key] = split_statements(entry.read_text(encoding="utf-8"))
        else:
            steps[key] = f"{match[1]}_{match[2]}"
    found = [
        Migration(version, name, sql.get((version, name), ()), steps.get((version, name)))
        for version, name in sorted(set(sql) | set(steps))
    ]
    if len({m.version for m in found}) != len(found):
        raise RuntimeError("two migrations share a version number")
    return tuple(found)


MIGRATIONS = load_migrations()


def migrate(dialect: str, context: MigrationContext | None = None) -> Script[list[int]]:
    """Apply every migration not yet in ``schema_version``, in order (SQL statements, then
    the Python step), all in one transaction; return their versions."""
    context = context or MigrationContext(dialect)
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
        step = migration.python_step()
        if step is not None:
            yield from step(context)
        yield Q(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (%s, %s, %s)",
            (migration.version, migration.name, utc_now()),
        )
        applied.append(migration.version)
    return applied
