"""Apply `migrations/NNNN_name.sql` in order, once each.

All pending files run in one transaction holding a transaction-level
advisory lock, so two processes migrating at once serialise and the second
finds nothing left to do; a failing file leaves the schema as it was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from storage.db import Conn

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_LOCK_KEY = 0x7E1E_C0DE  # arbitrary, fixed: names "the schema lock" for every node
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file name not of the form NNNN_name.sql: {path.name}")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError("two migrations share a version number")
    return found


async def apply_pending(conn: Conn, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply what is missing; return the names applied (empty when up to date)."""
    migrations = discover(directory)
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in migrations:
            if migration.version in done:
                continue
            await conn.execute(migration.path.read_text(encoding="utf-8"))
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied_now.append(migration.path.name)
    return applied_now
