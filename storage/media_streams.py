"""Plain SQL for live media streams: which node holds which call's socket.

One row per call at most (the primary key): a second socket for a call
that has a live one is refused by the insert itself, on any node.
"""

from __future__ import annotations

from datetime import datetime

from storage.db import Conn


async def claim(conn: Conn, call_id: str, node_id: str, dialect: str, now: datetime) -> bool:
    """Register a socket as the call's stream; False when one is live already."""
    claimed = await conn.fetchval(
        """INSERT INTO media_streams (call_id, node_id, dialect, connected_at)
           VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true""",
        call_id,
        node_id,
        dialect,
        now,
    )
    return bool(claimed)


async def holder(conn: Conn, call_id: str) -> str | None:
    """The node holding the call's stream, if one does."""
    node: str | None = await conn.fetchval(
        "SELECT node_id FROM media_streams WHERE call_id = $1", call_id
    )
    return node


async def release(conn: Conn, call_id: str, node_id: str) -> None:
    await conn.execute(
        "DELETE FROM media_streams WHERE call_id = $1 AND node_id = $2", call_id, node_id
    )


async def release_all(conn: Conn, node_id: str) -> None:
    """A node's streams after its process died: none of them is live any more."""
    await conn.execute("DELETE FROM media_streams WHERE node_id = $1", node_id)


async def is_live(conn: Conn, call_id: str) -> bool:
    return bool(await conn.fetchval("SELECT true FROM media_streams WHERE call_id = $1", call_id))
