"""Plain SQL for throttles: budgets of attempts per key (an e-mail, an address) and window.

A fixed window per key: the first attempt opens it, each attempt takes one
unit, and when the window has passed the next attempt opens a new one. The
count is taken in one statement before the expensive work (a password
hash), so attempts started at the same moment are counted one after the
other by the database, never all against the same old count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from storage.db import Conn


@dataclass(frozen=True)
class Taken:
    key: str
    count: int  # attempts in the current window, this one included
    window_ends_at: datetime


async def take(conn: Conn, keys: Sequence[str], *, window_s: int, now: datetime) -> list[Taken]:
    rows = await conn.fetch(
        """INSERT INTO throttles AS t (key, window_started_at, count)
           SELECT k, $2::timestamptz, 1 FROM unnest($1::text[]) AS k
           ON CONFLICT (key) DO UPDATE SET
               window_started_at = CASE WHEN t.window_started_at <= $3::timestamptz
                                        THEN excluded.window_started_at
                                        ELSE t.window_started_at END,
               count = CASE WHEN t.window_started_at <= $3::timestamptz THEN 1
                            ELSE t.count + 1 END
           RETURNING key, count, window_started_at""",
        list(dict.fromkeys(keys)),
        now,
        now - timedelta(seconds=window_s),
    )
    return [
        Taken(r["key"], r["count"], r["window_started_at"] + timedelta(seconds=window_s))
        for r in rows
    ]


async def give_back(conn: Conn, keys: Sequence[str]) -> None:
    """An attempt that succeeded uses up no budget: only failures count."""
    await conn.execute(
        "UPDATE throttles SET count = greatest(count - 1, 0) WHERE key = ANY($1::text[])",
        list(keys),
    )


async def purge_older_than(conn: Conn, cutoff: datetime) -> int:
    status = await conn.execute("DELETE FROM throttles WHERE window_started_at < $1", cutoff)
    return int(status.split()[-1])


async def forget_email(conn: Conn, email: str) -> int:
    """Erasure (D2): the e-mail's sign-in budget names the person."""
    status = await conn.execute(
        "DELETE FROM throttles WHERE key = $1", f"login-email:{email.lower()}"
    )
    return int(status.split()[-1])
