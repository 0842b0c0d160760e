"""Which media nodes are alive: each holds a session advisory lock named by its id.

A node takes its lock on the connection it LISTENs on and keeps it for as
long as that connection lives. A SIGKILL, a crash or a lost machine closes
the connection, and PostgreSQL drops the lock at once: no heartbeat to
tune, no clock to trust. Another node asks "is it gone?" by trying the lock
itself for the length of its transaction, which also keeps a returning
node from taking it back until that transaction has acted on the answer.
"""

from __future__ import annotations

from storage.db import Conn
from storage.leases import lock_key


def _key(node_id: str) -> int:
    return lock_key(f"media-node:{node_id}")


async def hold(conn: Conn, node_id: str) -> bool:
    """Take this node's lock for the session; False: another live process has its id."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", _key(node_id)))


async def let_go(conn: Conn, node_id: str) -> None:
    """Give the lock back before the connection returns to a pool (see storage/db.py)."""
    await conn.execute("SELECT pg_advisory_unlock($1)", _key(node_id))


async def is_gone(conn: Conn, node_id: str) -> bool:
    """True when no process holds the node's lock. Inside a transaction only: the lock is
    then this transaction's until it ends."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _key(node_id)))
