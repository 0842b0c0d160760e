"""Use cases for accounts, users, API keys and logins.

Each function owns its transaction. Every administrative change (a user, a
role, an API key) enqueues a staff notification in the same transaction (S4);
every login attempt lands in the security log (S2), failures included, in a
transaction of its own so a refused login still leaves its trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from storage import accounts, audit, outbox, securitylog
from storage.ids import new_id, new_token, token_hash
from storage.keys.passwords import PasswordHasher
from telephony.domain.errors import (
    Forbidden,
    InvalidCredentials,
    InvitationInvalid,
    LastOwner,
    NotFound,
    TooManyRequests,
)
from telephony.domain.roles import CustomerRole, Principal
from telephony.settings import Settings
from telephony.usecases import sessions

SESSION_PREFIX = "st"
API_KEY_PREFIX = "sk"
INVITATION_PREFIX = "inv"


@dataclass(frozen=True)
class Client:
    """Where a request came from, for the security log."""

    address: str | None
    user_agent: str | None


def _actor(actor: Principal | dict[str, Any] | None) -> dict[str, Any]:
    """How a row names who acted: a caller, the system (already a dict), or nobody yet."""
    if isinstance(actor, Principal):
        return actor.actor
    return actor if actor is not None else {"type": "anonymous"}


async def notify_admin_change(
    conn: asyncpg.Connection,
    event: str,
    *,
    now: datetime,
    actor: Principal | dict[str, Any] | None,
    account_id: str | None,
    subject: dict[str, Any],
    changes: dict[str, Any] | None = None,
) -> None:
    """S4: tell the responsible staff; and the account's audit trail. Never a secret.

    `actor` is the caller, a system actor (`{"type": "system", ...}`) for work no
    caller asked for, such as a termination from the CLI, or None before sign-in.
    """
    payload = {
        "event": event,
        "at": now.isoformat(),
        "actor": _actor(actor),
        "account_id": account_id,
        "subject": subject,
        "changes": changes or {},
    }
    await outbox.enqueue(conn, event, payload, now)
    if account_id is not None:
        await audit.append(
            conn,
            account_id=account_id,
            at=now,
            actor=_actor(actor),
            action=event,
            subject=subject,
            details=changes or {},
        )


# -- signup --------------------------------------------------------------


@dataclass(frozen=True)
class SignupResult:
    account: accounts.Account
    user: accounts.User


async def signup(
    pool: asyncpg.Pool,
    settings: Settings,
    hasher: PasswordHasher,
    *,
    account_name: str,
    name: str,
    email: str,
    password: str,
    postal_address: str,
    vat_number: str | None,
    now: datetime,
) -> SignupResult:
    """Create an account and its first owner (A1; A2 was checked by the caller's schema)."""
    password_hash = await hasher.hash(password)
    async with pool.acquire() as conn, conn.transaction():
        account = await accounts.insert_account(
            conn,
            id=new_id("acc"),
            name=account_name,
            postal_address=postal_address,
            vat_number=vat_number,
            data_region=settings.data_region,
            now=now,
        )
        user = await accounts.insert_user(
            conn,
            id=new_id("usr"),
            account_id=account.id,
            kind="customer",
            role=CustomerRole.OWNER,
            email=email,
            name=name,
            postal_address=postal_address,
            vat_number=vat_number,
            password_hash=password_hash,
            age_confirmed=True,
            now=now,
        )
        await notify_admin_change(
            conn,
            "user.created",
            now=now,
            actor=None,
            account_id=account.id,
            subject={"type": "user", "id": user.id},
            changes={"role": user.role, "via": "signup"},
        )
    return SignupResult(account, user)


# -- login and logout ----------------------------------------------------


@dataclass(frozen=True)
class LoginResult:
    token: str
    expires_at: datetime
    user: accounts.User


async def login(
    pool: asyncpg.Pool,
    settings: Settings,
    hasher: PasswordHasher,
    *,
    email: str,
    password: str,
    client: Client,
    now: datetime,
) -> LoginResult:
    since = now - timedelta(seconds=settings.login_window_s)
    async with pool.acquire() as conn:
        by_email, by_address = await securitylog.count_recent_failures(
            conn, email=email, source_address=client.address, since=since
        )
        if (
            by_email >= settings.login_max_failures_per_email
            or by_address >= settings.login_max_failures_per_address
        ):
            await securitylog.record(
                conn,
                event="login",
                outcome="throttled",
                at=now,
                email=email,
                source_address=client.address,
                user_agent=client.user_agent,
            )
            raise TooManyRequests(
                "too many failed logins; try again later", retry_after_s=settings.login_window_s
            )
        user = await accounts.find_user_by_email(conn, email)

    ok = await hasher.verify(password, user.password_hash if user else None)

    async with pool.acquire() as conn, conn.transaction():
        if not ok or user is None:
            await securitylog.record(
                conn,
                event="login",
                outcome="failure",
                at=now,
                user_id=user.id if user else None,
                email=email,
                source_address=client.address,
                user_agent=client.user_agent,
                details={"reason": "bad_password" if user else "unknown_email"},
            )
            if user is not None and user.account_id is not None:
                await _audit_login(conn, user, "login.failed", now)
            failed = True
        else:
            failed = False
            token, digest = new_token(SESSION_PREFIX)
            expires_at = now + timedelta(seconds=settings.session_ttl_s)
            await accounts.insert_session(
                conn,
                id=new_id("ses"),
                user_id=user.id,
                token_hash=digest,
                now=now,
                expires_at=expires_at,
                source_address=client.address,
                user_agent=client.user_agent,
            )
            await securitylog.record(
                conn,
                event="login",
                outcome="success",
                at=now,
                user_id=user.id,
                email=user.email,
                source_address=client.address,
                user_agent=client.user_agent,
            )
            if user.account_id is not None:
                await _audit_login(conn, user, "login.succeeded", now)
    if failed or user is None:
        raise InvalidCredentials("e-mail or password is wrong")

    assert user.password_hash is not None
    if hasher.needs_rehash(user.password_hash):
        # The cost was raised since this hash was made: upgrade it while we know the password.
        new_hash = await hasher.hash(password)
        async with pool.acquire() as conn:
            await accounts.update_user(conn, user.id, {"password_hash": new_hash}, now)
    return LoginResult(token, expires_at, user)


async def _audit_login(
    conn: asyncpg.Connection, user: accounts.User, action: str, now: datetime
) -> None:
    """The login in the account's trail, by opaque user id only.

    No source address: audit rows are hash-chained and cannot be changed, so
    they must hold nothing an erasure would have to remove (D2). The address
    stays in the security log for its 60 days (S2, S3).
    """
    assert user.account_id is not None
    await audit.append(
        conn,
        account_id=user.account_id,
        at=now,
        actor={"type": "user", "id": user.id, "role": user.role},
        action=action,
        subject={"type": "user", "id": user.id},
        details={},
    )


async def logout(pool: asyncpg.Pool, principal: Principal, client: Client, now: datetime) -> None:
    if principal.session_id is None:
        raise Forbidden("only a session token can be logged out; delete an API key instead")
    async with pool.acquire() as conn, conn.transaction():
        await accounts.revoke_session(conn, principal.session_id, now)
        await securitylog.record(
            conn,
            event="logout",
            outcome="info",
            at=now,
            user_id=principal.id,
            email=principal.email,
            source_address=client.address,
            user_agent=client.user_agent,
        )


# -- profile and account ---------------------------------------------------


async def update_profile(
    pool: asyncpg.Pool, principal: Principal, changes: dict[str, Any], now: datetime
) -> accounts.User:
    """D2 rectification by the user themselves."""
    async with pool.acquire() as conn, conn.transaction():
        user = await accounts.update_user(conn, principal.id, changes, now)
        await notify_admin_change(
            conn,
            "user.updated",
            now=now,
            actor=principal,
            account_id=principal.account_id,
            subject={"type": "user", "id": user.id},
            changes={"fields": sorted(changes)},
        )
    return user


async def update_account(
    pool: asyncpg.Pool, principal: Principal, changes: dict[str, Any], now: datetime
) -> accounts.Account:
    assert principal.account_id is not None
    async with pool.acquire() as conn, conn.transaction():
        account = await accounts.update_account(conn, principal.account_id, changes)
        if changes.get("processing_restricted") is True:
            await sessions.pause_for_restriction(conn, account.id, principal.actor, now)
        await notify_admin_change(
            conn,
            "account.updated",
            now=now,
            actor=principal,
            account_id=account.id,
            subject={"type": "account", "id": account.id},
            changes={"fields": sorted(changes)},
        )
    return account


# -- members -----------------------------------------------------------------


@dataclass(frozen=True)
class Invitation:
    user: accounts.User
    token: str
    expires_at: datetime


async def invite_user(
    pool: asyncpg.Pool,
    settings: Settings,
    owner: Principal,
    *,
    email: str,
    name: str,
    role: str,
    now: datetime,
) -> Invitation:
    """A new user of the owner's account; they choose their password with the invitation."""
    token, digest = new_token(INVITATION_PREFIX)
    expires_at = now + timedelta(seconds=settings.invitation_ttl_s)
    async with pool.acquire() as conn, conn.transaction():
        user = await accounts.insert_user(
            conn,
            id=new_id("usr"),
            account_id=owner.account_id,
            kind="customer",
            role=role,
            email=email,
            name=name,
            password_hash=None,
            invitation_hash=digest,
            invitation_expires_at=expires_at,
            now=now,
        )
        await notify_admin_change(
            conn,
            "user.created",
            now=now,
            actor=owner,
            account_id=owner.account_id,
            subject={"type": "user", "id": user.id},
            changes={"role": role, "via": "invitation"},
        )
    return Invitation(user, token, expires_at)


async def accept_invitation(
    pool: asyncpg.Pool, hasher: PasswordHasher, *, token: str, password: str, now: datetime
) -> accounts.User:
    password_hash = await hasher.hash(password)
    async with pool.acquire() as conn, conn.transaction():
        user = await accounts.accept_invitation(conn, token_hash(token), password_hash, now)
        if user is None:
            raise InvitationInvalid("the invitation is unknown, used or expired")
        await notify_admin_change(
            conn,
            "user.activated",
            now=now,
            actor=None,
            account_id=user.account_id,
            subject={"type": "user", "id": user.id},
        )
    return user


async def change_user(
    pool: asyncpg.Pool, owner: Principal, user_id: str, changes: dict[str, Any], now: datetime
) -> accounts.User:
    async with pool.acquire() as conn, conn.transaction():
        before = await accounts.get_user(conn, user_id, account_id=owner.account_id)
        if changes.get("role") == CustomerRole.MEMBER and before.role == CustomerRole.OWNER:
            assert owner.account_id is not None
            if await accounts.count_owners(conn, owner.account_id) <= 1:
                raise LastOwner("promote another owner before demoting the last one")
        user = await accounts.update_user(conn, user_id, changes, now)
        event = (
            "role.changed"
            if "role" in changes and changes["role"] != before.role
            else "user.updated"
        )
        await notify_admin_change(
            conn,
            event,
            now=now,
            actor=owner,
            account_id=owner.account_id,
            subject={"type": "user", "id": user.id},
            changes={"fields": sorted(changes), "role": {"from": before.role, "to": user.role}},
        )
    return user


async def remove_user(pool: asyncpg.Pool, owner: Principal, user_id: str, now: datetime) -> None:
    async with pool.acquire() as conn, conn.transaction():
        user = await accounts.get_user(conn, user_id, account_id=owner.account_id)
        if user.role == CustomerRole.OWNER:
            assert owner.account_id is not None
            if await accounts.count_owners(conn, owner.account_id) <= 1:
                raise LastOwner("an account needs at least one owner")
        await accounts.delete_user(conn, user.id)
        await notify_admin_change(
            conn,
            "user.deleted",
            now=now,
            actor=owner,
            account_id=owner.account_id,
            subject={"type": "user", "id": user.id},
            changes={"role": user.role},
        )


# -- API keys ----------------------------------------------------------------


@dataclass(frozen=True)
class NewApiKey:
    key: accounts.ApiKey
    token: str


async def create_api_key(
    pool: asyncpg.Pool, owner: Principal, *, name: str, scopes: list[str], now: datetime
) -> NewApiKey:
    assert owner.account_id is not None
    token, digest = new_token(API_KEY_PREFIX)
    async with pool.acquire() as conn, conn.transaction():
        key = await accounts.insert_api_key(
            conn,
            id=new_id("key"),
            account_id=owner.account_id,
            name=name,
            scopes=sorted(set(scopes)),
            token_hash=digest,
            token_prefix=token[:10],
            created_by=owner.id,
            now=now,
        )
        await notify_admin_change(
            conn,
            "api_key.created",
            now=now,
            actor=owner,
            account_id=owner.account_id,
            subject={"type": "api_key", "id": key.id},
            changes={"scopes": key.scopes},
        )
    return NewApiKey(key, token)


async def revoke_api_key(pool: asyncpg.Pool, owner: Principal, key_id: str, now: datetime) -> None:
    assert owner.account_id is not None
    async with pool.acquire() as conn, conn.transaction():
        try:
            key = await accounts.revoke_api_key(conn, key_id, owner.account_id, now)
        except NotFound:
            raise NotFound("no such API key") from None
        await notify_admin_change(
            conn,
            "api_key.deleted",
            now=now,
            actor=owner,
            account_id=owner.account_id,
            subject={"type": "api_key", "id": key.id},
        )


# -- staff ---------------------------------------------------------------------


async def create_staff(
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    *,
    email: str,
    name: str,
    role: str,
    password: str,
    now: datetime,
) -> accounts.User:
    password_hash = await hasher.hash(password)
    async with pool.acquire() as conn, conn.transaction():
        user = await accounts.insert_user(
            conn,
            id=new_id("stf"),
            account_id=None,
            kind="staff",
            role=role,
            email=email,
            name=name,
            password_hash=password_hash,
            now=now,
        )
        await notify_admin_change(
            conn,
            "staff.created",
            now=now,
            actor=None,
            account_id=None,
            subject={"type": "staff_user", "id": user.id},
            changes={"role": role, "via": "cli"},
        )
    return user
