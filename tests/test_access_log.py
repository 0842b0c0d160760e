from __future__ import annotations

from datetime import UTC, datetime

import asyncpg


async def test_probe(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        nid = await conn.fetchval(
            "INSERT INTO staff_notifications (event, payload) VALUES ('x', '{}') RETURNING id"
        )
        await conn.execute(
            """UPDATE staff_notifications
               SET attempts = attempts + 1, last_error = $2,
                   next_attempt_at = coalesce($3, next_attempt_at),
                   given_up_at = CASE WHEN $3::timestamptz IS NULL THEN $4 ELSE NULL END
               WHERE id = $1""",
            nid,
            "e",
            None,
            datetime.now(UTC),
        )
