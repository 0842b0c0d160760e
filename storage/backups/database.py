"""What backups ask of PostgreSQL: the cluster's identity, its WAL archiver, and, of a
restored database, what its journal re-application and blob restore need."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from storage.db import Conn


@dataclass(frozen=True)
class ServerFacts:
    system_identifier: str
    segment_bytes: int


async def server_facts(conn: Conn) -> ServerFacts:
    row = await conn.fetchrow(
        """SELECT (SELECT system_identifier FROM pg_control_system())::text AS system_id,
                  (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')
                      AS segment_bytes"""
    )
    assert row is not None
    return ServerFacts(row["system_id"], int(row["segment_bytes"]))


@dataclass(frozen=True)
class ArchiverState:
    archived_count: int
    last_archived_wal: str | None
    last_archived_at: datetime | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_at: datetime | None

    @property
    def failing(self) -> bool:
        """The last attempt failed (a success since would be newer)."""
        if self.last_failed_at is None:
            return False
        return self.last_archived_at is None or self.last_failed_at > self.last_archived_at


async def archiver_state(conn: Conn) -> ArchiverState:
    row = await conn.fetchrow(
        """SELECT archived_count, last_archived_wal, last_archived_time, failed_count,
                  last_failed_wal, last_failed_time
           FROM pg_stat_archiver"""
    )
    assert row is not None
    return ArchiverState(*row.values())


async def switch_wal(conn: Conn) -> str:
    """Close the current segment so it is archived now; the name of the segment closed."""
    return str(await conn.fetchval("SELECT pg_walfile_name(pg_switch_wal())"))


async def archiving_is_on(conn: Conn) -> bool:
    return bool(await conn.fetchval("SELECT current_setting('archive_mode') <> 'off'"))


async def live_recording_ids(conn: Conn) -> set[str]:
    """Recordings whose audio a restored database still has keys for."""
    rows = await conn.fetch("SELECT id FROM recordings WHERE status <> 'deleted'")
    return {r["id"] for r in rows}


async def in_recovery(conn: Conn) -> bool:
    return bool(await conn.fetchval("SELECT pg_is_in_recovery()"))


async def replayed_until(conn: Conn) -> datetime | None:
    """When the last transaction a recovery replayed committed (what a restore reached)."""
    at: datetime | None = await conn.fetchval("SELECT pg_last_xact_replay_timestamp()")
    return at


async def recordings_with_audio(conn: Conn) -> set[str]:
    """Recordings with sealed chunks, so with objects in the blob store."""
    rows = await conn.fetch("SELECT DISTINCT recording_id FROM recording_chunks")
    return {r["recording_id"] for r in rows}


async def personal_data_held(conn: Conn, account_id: str) -> bool | None:
    """Whether the account's personal data is still there (D4); None: no such account."""
    row = await conn.fetchrow(
        "SELECT personal_data_removed_at IS NULL AS held FROM accounts WHERE id = $1",
        account_id,
    )
    return None if row is None else bool(row["held"])


async def adopt_database(conn: Conn, name: str) -> None:
    """A restored external server's database as the embedded cluster names it: the role
    `telephony` (a superuser, as initdb makes it there) and the database `telephony`.
    Needs a superuser's connection to another database than `name`."""
    if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = 'telephony'"):
        await conn.execute("CREATE ROLE telephony SUPERUSER LOGIN")
    if name != "telephony" and not await conn.fetchval(
        "SELECT 1 FROM pg_database WHERE datname = 'telephony'"
    ):
        ident = await conn.fetchval("SELECT quote_ident($1)", name)
        await conn.execute(f"ALTER DATABASE {ident} RENAME TO telephony")
