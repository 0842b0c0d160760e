"""Data-subject rights: privacy requests and their execution (D2, D3); the access copy
(D1) is `access_copy`, the rules are `telephony.domain.privacy`.

Requests are filed by customer users and closed by staff `support` (S5: they
act on requests, never on audio). Completing a request executes it:

- `erasure` of a member removes the users row (sessions go with it), the API
  keys they created, the stored idempotent replies showing them, the free text
  of their requests, their sign-in budget, and the e-mail, address and user
  agent in the security and access logs. Audit rows stay untouched, so the
  hash chain still verifies: they name users by opaque id only and carry no
  e-mail, name or address. An owner's erasure is refused (409
  `erasure-requires-termination`): the owner is the account's billing
  contact, kept by law, so erasing them means ending the service (D2).
- `restriction` filed by an owner restricts the account's processing
  (`restriction.set_restricted`), which the recording gate enforces; the
  owner lifts it with `PATCH /v1/account`. A member's restriction request
  has no automatic effect.
- `access` and `rectification` are self-service (`GET /v1/me/export`,
  `PATCH /v1/me`); the request records that it was asked and answered.

Every state change is audited in the account's trail and notifies staff in
the same transaction (S4), with ids and kinds only, never the free text.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from storage import accounts, privacy, throttles
from storage.backups import DeletionJournal, JournalKind
from storage.ids import new_id
from storage.keys.providers import KeyProvider
from telephony.delivery.mail import Recipient
from telephony.domain.errors import ErasureRequiresTermination, NotFound
from telephony.domain.privacy import (
    RequestKind,
    RequestStatus,
    check_can_file,
    check_transition,
    due_at_for,
)
from telephony.domain.roles import CustomerPrincipal, CustomerRole, StaffPrincipal
from telephony.usecases import outgoing_mail, restriction
from telephony.usecases.trail import Tx, notify_admin_change, transaction


def _subject(request: privacy.PrivacyRequest) -> dict[str, Any]:
    return {"type": "privacy_request", "id": request.id, "user_id": request.user_id}


# -- customers: file and read -------------------------------------------------------------


async def file_request(
    pool: asyncpg.Pool,
    principal: CustomerPrincipal,
    *,
    kind: RequestKind,
    details: str,
    now: datetime,
) -> privacy.PrivacyRequest:
    """Record a D2 request with its D3 deadline; audited and sent to staff (S4)."""
    check_can_file(principal, kind)
    async with transaction(pool) as tx:
        request = await privacy.insert_request(
            tx.conn,
            id=new_id("prq"),
            account_id=principal.account_id,
            user_id=principal.id,
            kind=kind,
            details=details,
            received_at=now,
            due_at=due_at_for(now),
        )
        await notify_admin_change(
            tx,
            "privacy_request.received",
            now=now,
            actor=principal.actor,
            account_id=request.account_id,
            subject=_subject(request),
            changes={"kind": request.kind.value, "status": request.status.value},
        )
    return request


def _visible_to(principal: CustomerPrincipal) -> str | None:
    """Owners see the whole account's requests; a member sees only their own."""
    return None if principal.is_owner else principal.id


async def get_request(
    pool: asyncpg.Pool, principal: CustomerPrincipal, request_id: str
) -> privacy.PrivacyRequest:
    async with pool.acquire() as conn:
        return await privacy.get_request(
            conn, request_id, account_id=principal.account_id, user_id=_visible_to(principal)
        )


async def list_requests(
    pool: asyncpg.Pool,
    principal: CustomerPrincipal,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[privacy.PrivacyRequest]:
    async with pool.acquire() as conn:
        return await privacy.list_requests(
            conn, principal.account_id, user_id=_visible_to(principal), after=after, limit=limit
        )


# -- support: the work queue and closing --------------------------------------------------


async def list_open(
    pool: asyncpg.Pool,
    *,
    overdue: bool,
    now: datetime,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[privacy.PrivacyRequest]:
    """Every account's open requests by deadline; `overdue` keeps those past it (D3)."""
    async with pool.acquire() as conn:
        return await privacy.list_open(
            conn, due_before=now if overdue else None, after=after, limit=limit
        )


async def start_request(
    pool: asyncpg.Pool, keys: KeyProvider, staff: StaffPrincipal, request_id: str, now: datetime
) -> privacy.PrivacyRequest:
    return await _move(pool, keys, staff, request_id, RequestStatus.IN_PROGRESS, None, now)


async def reject_request(
    pool: asyncpg.Pool,
    keys: KeyProvider,
    staff: StaffPrincipal,
    request_id: str,
    resolution: str,
    now: datetime,
) -> privacy.PrivacyRequest:
    return await _move(pool, keys, staff, request_id, RequestStatus.REJECTED, resolution, now)


async def complete_request(
    pool: asyncpg.Pool,
    keys: KeyProvider,
    staff: StaffPrincipal,
    request_id: str,
    resolution: str,
    now: datetime,
    *,
    journal: DeletionJournal,
) -> privacy.PrivacyRequest:
    """Execute the request (see the module docstring) and close it, in one transaction; an
    erasure is journalled beside the backups first (S8: a restore re-applies it)."""
    return await _move(
        pool, keys, staff, request_id, RequestStatus.COMPLETED, resolution, now, journal
    )


async def _move(
    pool: asyncpg.Pool,
    keys: KeyProvider,
    staff: StaffPrincipal,
    request_id: str,
    target: RequestStatus,
    resolution: str | None,
    now: datetime,
    journal: DeletionJournal | None = None,
) -> privacy.PrivacyRequest:
    """One state change under the request's row lock, audited and notified (S4).

    Closing it also answers the person by e-mail, in the same transaction; the
    answer to an erasure goes to the address they had, sealed, since their row
    is gone when it is sent.
    """
    async with transaction(pool) as tx:
        request = await privacy.get_request(tx.conn, request_id, account_id=None, lock=True)
        check_transition(request.status, target)
        closed = target in (RequestStatus.COMPLETED, RequestStatus.REJECTED)
        requester = await _requester(tx, request) if closed else None
        changes: dict[str, Any] = {"kind": request.kind.value, "status": target.value}
        if target is RequestStatus.COMPLETED:
            if request.kind is RequestKind.ERASURE:
                assert journal is not None  # complete_request always passes it
                changes["effect"] = await _erase_member(tx, staff, request, now, journal)
            elif request.kind is RequestKind.RESTRICTION:
                changes["effect"] = await _restrict(tx, staff, request, now)
            else:
                changes["effect"] = "none"  # access and rectification are self-service
        request = await privacy.set_status(
            tx.conn,
            request.id,
            status=target,
            completed_at=now if closed else None,
            resolution=resolution,
        )
        await notify_admin_change(
            tx,
            f"privacy_request.{target.value}",
            now=now,
            actor=staff.actor,
            account_id=request.account_id,
            subject=_subject(request),
            changes=changes,
        )
        if requester is not None:
            await _answer(tx, keys, request, requester, changes.get("effect") == "user_erased", now)
    return request


async def _requester(tx: Tx, request: privacy.PrivacyRequest) -> accounts.User | None:
    try:
        return await accounts.get_user(tx.conn, request.user_id, account_id=request.account_id)
    except NotFound:
        return None  # erased meanwhile: nobody to answer


async def _answer(
    tx: Tx,
    keys: KeyProvider,
    request: privacy.PrivacyRequest,
    requester: accounts.User,
    erased: bool,
    now: datetime,
) -> None:
    params = {
        "request_id": request.id,
        "kind": request.kind.value,
        "status": request.status.value,
        "received_at": request.received_at.isoformat(),
        "reason": request.resolution if request.status is RequestStatus.REJECTED else None,
    }
    if erased:
        recipient = Recipient(requester.email, requester.name, requester.language)
        await outgoing_mail.queue_to_departing(
            tx.conn, keys, kind="privacy_answer", recipient=recipient, params=params, now=now
        )
    else:
        await outgoing_mail.queue(
            tx.conn, keys, kind="privacy_answer", user_id=requester.id, params=params, now=now
        )


async def _erase_member(
    tx: Tx,
    staff: StaffPrincipal,
    request: privacy.PrivacyRequest,
    now: datetime,
    journal: DeletionJournal,
) -> str:
    """D2 erasure of a member; the row lock keeps a concurrent promotion from slipping by."""
    user = await privacy.lock_user(tx.conn, request.user_id, request.account_id)
    if user is not None and user.role is CustomerRole.OWNER:
        raise ErasureRequiresTermination(
            "the user is now an owner: hand ownership to another user first, or end the service"
        )
    await journal.record(
        JournalKind.USER_ERASED, at=now, account_id=request.account_id, user_id=request.user_id
    )
    await _remove_member_data(tx, request.account_id, request.user_id, user)
    await notify_admin_change(
        tx,
        "user.erased",
        now=now,
        actor=staff.actor,
        account_id=request.account_id,
        subject={"type": "user", "id": request.user_id},
        changes={"privacy_request_id": request.id},
    )
    return "user_erased"


async def remove_member_data(tx: Tx, account_id: str, user_id: str) -> bool:
    """An erasure again, as a restore re-applies it (S8): whether the user was still there."""
    user = await privacy.lock_user(tx.conn, user_id, account_id)
    await _remove_member_data(tx, account_id, user_id, user)
    return user is not None


async def _remove_member_data(
    tx: Tx, account_id: str, user_id: str, user: privacy.Subject | None
) -> None:
    email = user.email if user is not None else None  # already deleted: scrub by id alone
    await privacy.scrub_security_log(tx.conn, user_id, email)
    await privacy.scrub_access_log(tx.conn, user_id)
    await privacy.delete_api_keys_created_by(tx.conn, account_id, user_id)
    await privacy.delete_stored_replies(tx.conn, user_id, email)
    await privacy.clear_request_details(tx.conn, user_id)
    if email is not None:
        await throttles.forget_email(tx.conn, email)
    if user is not None:
        await accounts.delete_user(tx.conn, user.id)  # sessions go with it (ON DELETE CASCADE)


async def _restrict(
    tx: Tx,
    staff: StaffPrincipal,
    request: privacy.PrivacyRequest,
    now: datetime,
) -> str:
    """D2 restriction: only an owner's request restricts the account (the gate then refuses)."""
    user = await privacy.lock_user(tx.conn, request.user_id, request.account_id)
    if user is None or user.role is not CustomerRole.OWNER:
        return "none"
    await restriction.set_restricted(
        tx, request.account_id, True, staff.actor, now, privacy_request_id=request.id
    )
    return "account_restricted"
