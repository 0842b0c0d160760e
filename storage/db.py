"""The asyncpg pool and small helpers around it.

Callers own transactions: a use case opens
`async with pool.acquire() as conn, conn.transaction():` and passes `conn`
to the repository functions, which never commit on their own.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from telephony.domain.errors import Unavailable

# What repository functions take as `conn`: the proxy that `pool.acquire()` yields, or a
# bare connection (`asyncpg.connect`, a pool's init hook). asyncpg's proxy forwards every
# method but is no subclass of Connection, so the type says both.
Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy

# Errors that mean "the database is not there right now" (a restart, a fail-over, a
# refused connection), not "this statement is wrong": waited out or answered with 503.
DATABASE_GONE: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    # A connection the server dropped mid-error, handed out again before its socket's
    # end arrived ("cannot switch to state 12; another operation (2) is in progress"):
    # seen once in tests/processes/test_database_restart.py.
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.OperatorInterventionError,
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb columns travel as Python objects, not strings.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without the server round trip of asyncpg's reset (UNLISTEN, RESET ALL, ...).

    asyncpg still rolls back an open transaction and drops client-side
    listeners first. The service's statements leave no session state: no SET
    (only transaction-scoped settings and locks), no session advisory locks,
    cursors only inside transactions, and every LISTEN is undone by its owner
    (`remove_listener`) before the connection goes back. Were one missed, the
    connection would only receive notifications nobody reads.
    """


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """Open the pool; translate connection failures so no DSN (and password) leaks.

    Releasing a connection skips asyncpg's reset query (see `_keep_session`):
    one round trip less for every request (bench/control.py).
    """
    try:
        return await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            reset=_keep_session,
            command_timeout=30,
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise Unavailable(f"database unreachable: {type(exc).__name__}") from None


def with_database(dsn: str, database: str) -> str:
    """The same server and credentials, another database name."""
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


async def ensure_database(dsn: str) -> None:
    """Create the DSN's database when missing (the embedded cluster starts with `postgres` only)."""
    name = urlsplit(dsn).path.lstrip("/")
    conn = await asyncpg.connect(with_database(dsn, "postgres"))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            ident = await conn.fetchval("SELECT quote_ident($1)", name)
            # Another process may create it meanwhile: PostgreSQL says so as a duplicate
            # database, or, when both insert into pg_database at once, as a unique violation.
            with contextlib.suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                await conn.execute(f"CREATE DATABASE {ident}")
    finally:
        await conn.close()


def redact_dsn(dsn: str) -> str:
    """A DSN safe for logs: the password, if any, replaced."""
    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return dsn


def row_dict(record: Any) -> dict[str, Any]:
    return dict(record.items())


async def usage(conn: Conn) -> tuple[int, int]:
    """(bytes, connections) of the current database, from every node (S7 monitoring)."""
    row = await conn.fetchrow(
        """SELECT pg_database_size(current_database()),
                  (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database())"""
    )
    assert row is not None  # a SELECT without FROM returns its one row
    return int(row[0]), int(row[1])
