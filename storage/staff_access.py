"""Plain SQL for staff access on request (S5): asked by a staff member, decided by a
security_admin, and when approved, held until `expires_at`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from storage.db import Conn
from telephony.domain.errors import InvalidTransition, NotFound
from telephony.domain.roles import StaffRole

_COLS = (
    "r.id, r.staff_user_id, r.role, r.reason, r.requested_at, r.status, r.decided_by,"
    " r.decided_at, r.expires_at, u.email AS staff_email"
)


@dataclass(frozen=True)
class AccessRequest:
    id: str
    staff_user_id: str
    role: StaffRole
    reason: str
    requested_at: datetime
    status: str  # pending, approved, refused
    decided_by: str | None
    decided_at: datetime | None
    expires_at: datetime | None
    staff_email: str

    def live(self, now: datetime) -> bool:
        return self.status == "approved" and self.expires_at is not None and self.expires_at > now


def _request(row: object) -> AccessRequest:
    data = dict(row)  # type: ignore[call-overload]
    data["role"] = StaffRole(data["role"])
    return AccessRequest(**data)


async def insert(
    conn: Conn, *, id: str, staff_user_id: str, role: StaffRole, reason: str, now: datetime
) -> AccessRequest:
    await conn.execute(
        """INSERT INTO staff_access_requests (id, staff_user_id, role, reason, requested_at,
                                              status)
           VALUES ($1, $2, $3, $4, $5, 'pending')""",
        id,
        staff_user_id,
        role.value,
        reason,
        now,
    )
    return await get(conn, id)


async def get(conn: Conn, request_id: str, *, lock: bool = False) -> AccessRequest:
    row = await conn.fetchrow(
        f"""SELECT {_COLS} FROM staff_access_requests r JOIN users u ON u.id = r.staff_user_id
            WHERE r.id = $1{" FOR UPDATE OF r" if lock else ""}""",
        request_id,
    )
    if row is None:
        raise NotFound("no such access request")
    return _request(row)


async def decide(
    conn: Conn,
    request_id: str,
    *,
    approve: bool,
    decided_by: str,
    now: datetime,
    expires_at: datetime | None,
) -> AccessRequest:
    """Approve (until `expires_at`) or refuse a pending request; 409 once decided."""
    status = await conn.execute(
        """UPDATE staff_access_requests
           SET status = $2, decided_by = $3, decided_at = $4, expires_at = $5
           WHERE id = $1 AND status = 'pending'""",
        request_id,
        "approved" if approve else "refused",
        decided_by,
        now,
        expires_at if approve else None,
    )
    if not status.endswith(" 1"):
        await get(conn, request_id)  # 404 when unknown
        raise InvalidTransition("the request was already decided")
    return await get(conn, request_id)


async def list_recent(
    conn: Conn, *, limit: int, staff_user_id: str | None = None
) -> list[AccessRequest]:
    """Pending first, then the newest decisions."""
    rows = await conn.fetch(
        f"""SELECT {_COLS} FROM staff_access_requests r JOIN users u ON u.id = r.staff_user_id
            WHERE ($2::text IS NULL OR r.staff_user_id = $2)
            ORDER BY (r.status = 'pending') DESC, r.requested_at DESC, r.id LIMIT $1""",
        limit,
        staff_user_id,
    )
    return [_request(r) for r in rows]


async def granted_roles(conn: Conn, staff_user_id: str, now: datetime) -> frozenset[StaffRole]:
    rows = await conn.fetch(
        """SELECT DISTINCT role FROM staff_access_requests
           WHERE staff_user_id = $1 AND status = 'approved' AND expires_at > $2""",
        staff_user_id,
        now,
    )
    return frozenset(StaffRole(r["role"]) for r in rows)
