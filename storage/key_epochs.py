"""Plain SQL for a sealed recording's key epochs (SEALED-FORMAT.md "Epochs").

A recording sealed to a customer's key has one epoch per writer that attached
to it: the data key that writer made, already wrapped to the customer's public
key, its nonce prefix, and the first chunk it sealed. The service cannot open
any of these rows; the customer's private key opens each one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from storage.db import Conn


@dataclass(frozen=True)
class Epoch:
    epoch: int
    first_chunk: int
    nonce_prefix: bytes
    wrapped_key: bytes


async def add(
    conn: Conn,
    recording_id: str,
    *,
    first_chunk: int,
    nonce_prefix: bytes,
    wrapped_key: bytes,
    node_id: str,
    now: datetime,
) -> Epoch:
    """The next epoch, from chunk `first_chunk` on. Called inside the transaction that
    attaches the writer, which holds the recording's row: epochs never race."""
    row = await conn.fetchrow(
        """INSERT INTO recording_key_epochs (recording_id, epoch, first_chunk, nonce_prefix,
                                             wrapped_key, node_id, created_at)
           SELECT $1, coalesce(max(epoch) + 1, 0), $2, $3, $4, $5, $6
           FROM recording_key_epochs WHERE recording_id = $1
           RETURNING epoch""",
        recording_id,
        first_chunk,
        nonce_prefix,
        wrapped_key,
        node_id,
        now,
    )
    assert row is not None
    return Epoch(row["epoch"], first_chunk, nonce_prefix, wrapped_key)


async def of(conn: Conn, recording_id: str) -> list[Epoch]:
    rows = await conn.fetch(
        """SELECT epoch, first_chunk, nonce_prefix, wrapped_key FROM recording_key_epochs
           WHERE recording_id = $1 ORDER BY epoch""",
        recording_id,
    )
    return [
        Epoch(r["epoch"], r["first_chunk"], bytes(r["nonce_prefix"]), bytes(r["wrapped_key"]))
        for r in rows
    ]
