"""Staff access on request and after approval (S5).

Staff users get one role when they are created (the CLI, for bootstrap and
automation). Anything more is asked for in the console with a reason, and a
security_admin other than the asker approves it for a time (8 hours unless
configured) or refuses it. Every step is in the security log, which
security_admins read, and is announced to the responsible staff (S4). A
grant simply lapses: the role is checked against live grants on every
request, so there is nothing to revoke.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from storage import staff_access
from storage.ids import new_id
from storage.staff_access import AccessRequest
from telephony.domain.errors import Conflict, Forbidden, InvalidInput
from telephony.domain.roles import StaffPrincipal, StaffRole
from telephony.settings import Settings
from telephony.usecases.identity import Client, security_event
from telephony.usecases.trail import Tx, notify_admin_change, transaction

MAX_REASON = 500


async def request_access(
    pool: asyncpg.Pool,
    staff: StaffPrincipal,
    *,
    role: StaffRole,
    reason: str,
    client: Client,
    now: datetime,
) -> AccessRequest:
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON:
        raise InvalidInput(
            "say why, in 1 to 500 characters",
            errors=[{"field": "reason", "message": "1 to 500 characters"}],
        )
    if staff.holds(role):
        raise Conflict(f"you already hold the {role.value} role")
    async with transaction(pool) as tx:
        request = await staff_access.insert(
            tx.conn,
            id=new_id("sar"),
            staff_user_id=staff.id,
            role=role,
            reason=reason,
            now=now,
        )
        await _trace(tx, staff, client, "staff_access.requested", request, now)
    return request


async def decide(
    pool: asyncpg.Pool,
    settings: Settings,
    admin: StaffPrincipal,
    request_id: str,
    *,
    approve: bool,
    client: Client,
    now: datetime,
) -> AccessRequest:
    if not admin.holds(StaffRole.SECURITY_ADMIN):
        raise Forbidden("only a security_admin decides access requests")
    async with transaction(pool) as tx:
        pending = await staff_access.get(tx.conn, request_id, lock=True)
        if pending.staff_user_id == admin.id:
            raise Forbidden("another security_admin must decide your own request")
        decided = await staff_access.decide(
            tx.conn,
            request_id,
            approve=approve,
            decided_by=admin.id,
            now=now,
            expires_at=now + timedelta(seconds=settings.staff_grant_s) if approve else None,
        )
        event = "staff_access.approved" if approve else "staff_access.refused"
        await _trace(tx, admin, client, event, decided, now)
    return decided


async def _trace(
    tx: Tx, actor: StaffPrincipal, client: Client, event: str, request: AccessRequest, now: datetime
) -> None:
    details = {
        "request_id": request.id,
        "staff_user_id": request.staff_user_id,
        "role": request.role.value,
        "expires_at": request.expires_at.isoformat() if request.expires_at else None,
    }
    await notify_admin_change(
        tx,
        event,
        now=now,
        actor=actor.actor,
        account_id=None,
        subject={"type": "staff_user", "id": request.staff_user_id},
        changes=details,
    )
    await security_event(
        tx.conn, client, event, "info", now, user_id=actor.id, email=actor.email, details=details
    )


async def list_requests(
    pool: asyncpg.Pool, staff: StaffPrincipal, *, limit: int = 100
) -> list[AccessRequest]:
    """A security_admin sees everyone's; anyone else their own."""
    mine = None if staff.holds(StaffRole.SECURITY_ADMIN) else staff.id
    async with pool.acquire() as conn:
        return await staff_access.list_recent(conn, limit=limit, staff_user_id=mine)
