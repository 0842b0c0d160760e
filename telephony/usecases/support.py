"""What internal support may see (S5): consent flags and their history, never audio."""

from __future__ import annotations

import asyncpg

from storage import calls
from telephony.domain.roles import StaffPrincipal
from telephony.usecases.calls import CallView, Clock, utc_now, views
from telephony.usecases.trail import transaction


async def support_view(
    pool: asyncpg.Pool, staff: StaffPrincipal, call_id: str, clock: Clock = utc_now
) -> CallView:
    """Consent flags and history for support; the look-up lands in the customer's trail."""
    async with transaction(pool) as tx:
        call = await calls.get_call(tx.conn, call_id, account_id=None)
        view = (await views(tx.conn, [call]))[0]
        tx.audit(
            call.account_id,
            staff.actor,
            "support.viewed_consent",
            {"call_id": call.id},
            clock(),
            staff_id=staff.id,
        )
    return view
