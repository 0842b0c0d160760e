"""Use cases for accounts, users, API keys, sign-in and authentication.

Each function owns its transaction. Every administrative change (a user, a
role, an API key) enqueues a staff notification in the same transaction (S4).
Every sign-in attempt lands in the security log (S2), refused and failed ones
included, in a transaction of its own so a refused attempt still leaves its
trace.

Throttling (S2, S6) is counted before any password is verified, in one
atomic statement: N sign-ins started at once cannot all pass a limit of 5.
Each attempt takes a unit from its e-mail's and its address's budget; a
successful one gives them back, so only failures (and attempts still in
flight) use them up. Signups and invitation acceptances are limited per
address the same way, and they too are counted before the hash is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from storage import accounts, credentials, regions, securitylog, staff_access, throttles
from storage.db import Conn
from storage.ids import new_id, new_token, token_hash
from storage.keys.passwords import PasswordHasher
from storage.keys.providers import KeyProvider
from telephony.domain.actors import Actor, ActorKind
from telephony.domain.errors import (
    Forbidden,
    InvalidCredentials,
    InvitationInvalid,
    LastOwner,
    NotFound,
    TooManyRequests,
    Unauthenticated,
)
from telephony.domain.roles import (
    CustomerPrincipal,
    CustomerRole,
    Principal,
    Scope,
    StaffPrincipal,
    StaffRole,
    UserKind,
    scopes_for_customer_role,
)
from telephony.settings import Settings
from telephony.usecases import outgoing_mail, restriction
from telephony.usecases.trail import Tx, notify_admin_change, transaction

SESSION_PREFIX = "st"
API_KEY_PREFIX = "sk"
INVITATION_PREFIX = "inv"


@dataclass(frozen=True)
class Client:
    """Where a request came from, for the security log and the throttles."""

    address: str | None
    user_agent: str | None


async def security_event(
    conn: Conn,
    client: Client,
    event: str,
    outcome: str,
    now: datetime,
    *,
    user_id: str | None = None,
    email: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    await securitylog.record(
        conn,
        event=event,
        outcome=outcome,
        at=now,
        user_id=user_id,
        email=email,
        source_address=client.address,
        user_agent=client.user_agent,
        details=details,
    )


async def take_budget(
    pool: asyncpg.Pool,
    limits: Mapping[str, int],
    window_s: int,
    client: Client,
    event: str,
    now: datetime,
    email: str | None = None,
) -> None:
    """Take one unit of each budget in `limits` ({key: limit}), or refuse with 429.

    The refusal goes to the security log (S2) and says when to retry.
    """
    async with transaction(pool) as tx:
        taken = await throttles.take(tx.conn, list(limits), window_s=window_s, now=now)
        over = [t for t in taken if t.count > limits[t.key]]
        if not over:
            return
        await security_event(
            tx.conn, client, event, "throttled", now, email=email, details={"limits": len(over)}
        )
    retry_after = max(int((t.window_ends_at - now).total_seconds()) for t in over)
    raise TooManyRequests("too many attempts; try again later", retry_after_s=max(retry_after, 1))


async def refused(
    pool: asyncpg.Pool, client: Client, event: str, reason: str, now: datetime, email: str | None
) -> None:
    """An attempt refused before it started (a malformed request): the security log has it too."""
    async with pool.acquire() as conn:
        await security_event(
            conn, client, event, "refused", now, email=email, details={"reason": reason}
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
    client: Client,
    now: datetime,
) -> SignupResult:
    """Create an account and its first owner (A1; A2 was checked by the caller's schema)."""
    await take_budget(
        pool,
        {f"signup:{client.address}": settings.signup_max_per_address},
        settings.signup_window_s,
        client,
        "signup",
        now,
        email,
    )
    password_hash = await hasher.hash(password)
    async with transaction(pool) as tx:
        account = await accounts.insert_account(
            tx.conn,
            id=new_id("acc"),
            name=account_name,
            postal_address=postal_address,
            vat_number=vat_number,
            data_region=settings.data_region,
            now=now,
        )
        user = await accounts.insert_user(
            tx.conn,
            id=new_id("usr"),
            account_id=account.id,
            kind=UserKind.CUSTOMER,
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
            tx,
            "user.created",
            now=now,
            actor=Actor.anonymous(),
            account_id=account.id,
            subject={"type": "user", "id": user.id},
            changes={"role": user.role.value, "via": "signup"},
        )
    return SignupResult(account, user)


# -- sign-in, sign-out and authentication ----------------------------------


@dataclass(frozen=True)
class LoginResult:
    token: str
    expires_at: datetime
    user: accounts.User


def _login_budgets(settings: Settings, email: str, client: Client) -> dict[str, int]:
    return {
        f"login-email:{email.lower()}": settings.login_max_failures_per_email,
        f"login-address:{client.address}": settings.login_max_failures_per_address,
    }


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
    budgets = _login_budgets(settings, email, client)
    await take_budget(pool, budgets, settings.login_window_s, client, "login", now, email)
    async with pool.acquire() as reader:
        user = await accounts.find_user_by_email(reader, email)

    ok = await hasher.verify(password, user.password_hash if user else None)

    async with transaction(pool) as tx:
        if not ok or user is None:
            await security_event(
                tx.conn,
                client,
                "login",
                "failure",
                now,
                user_id=user.id if user else None,
                email=email,
                details={"reason": "bad_password" if user else "unknown_email"},
            )
            if user is not None and user.account_id is not None:
                await _audit_login(tx, user, "login.failed", now)
            raise_after = True
        else:
            raise_after = False
            await throttles.give_back(tx.conn, list(budgets))
            token, digest = new_token(SESSION_PREFIX)
            expires_at = now + timedelta(seconds=settings.session_ttl_s)
            await credentials.insert_session(
                tx.conn,
                id=new_id("ses"),
                user_id=user.id,
                token_hash=digest,
                now=now,
                expires_at=expires_at,
                source_address=client.address,
                user_agent=client.user_agent,
            )
            await security_event(
                tx.conn, client, "login", "success", now, user_id=user.id, email=user.email
            )
            if user.account_id is not None:
                await _audit_login(tx, user, "login.succeeded", now)
    if raise_after or user is None:
        raise InvalidCredentials("e-mail or password is wrong")

    assert user.password_hash is not None
    if hasher.needs_rehash(user.password_hash):
        # The cost was raised since this hash was made: upgrade it while we know the password.
        new_hash = await hasher.hash(password)
        async with pool.acquire() as conn:
            await accounts.update_user(conn, user.id, {"password_hash": new_hash}, now)
    return LoginResult(token, expires_at, user)


def user_actor(user: accounts.User) -> Actor:
    kind = ActorKind.USER if user.kind is UserKind.CUSTOMER else ActorKind.STAFF
    return Actor(kind, user.id, user.role.value)


async def _audit_login(tx: Tx, user: accounts.User, action: str, now: datetime) -> None:
    """The sign-in in the account's trail, by opaque user id only.

    No source address: audit rows are hash-chained and cannot be changed, so
    they must hold nothing an erasure would have to remove (D2). The address
    stays in the security log for its 60 days (S2, S3).
    """
    assert user.account_id is not None
    tx.audit(user.account_id, user_actor(user), action, {"type": "user", "id": user.id}, now)


async def logout(pool: asyncpg.Pool, principal: Principal, client: Client, now: datetime) -> None:
    if principal.session_id is None:
        raise Forbidden("only a session token can be logged out; delete an API key instead")
    async with transaction(pool) as tx:
        await credentials.revoke_session(tx.conn, principal.session_id, now)
        await security_event(
            tx.conn, client, "logout", "info", now, user_id=principal.id, email=principal.email
        )


async def authenticate(pool: asyncpg.Pool, token: str, now: datetime) -> Principal:
    """The caller a bearer token stands for, looked up by the token's hash."""
    digest = token_hash(token)
    async with pool.acquire() as conn:
        if token.startswith(SESSION_PREFIX + "_"):
            found = await credentials.find_session(conn, digest, now)
            if found is None:
                raise Unauthenticated("the token is unknown, expired or revoked")
            user = found.user
            if user.account_id is None:
                assert isinstance(user.role, StaffRole)
                granted = await staff_access.granted_roles(conn, user.id, now)  # S5
                return StaffPrincipal(user.id, user.role, found.session_id, user.email, granted)
            assert isinstance(user.role, CustomerRole)
            return CustomerPrincipal(
                id=user.id,
                account_id=user.account_id,
                scopes=scopes_for_customer_role(user.role),
                role=user.role,
                session_id=found.session_id,
                email=user.email,
            )
        if token.startswith(API_KEY_PREFIX + "_"):
            key = await credentials.find_api_key_by_hash(conn, digest)
            if key is None:
                raise Unauthenticated("the token is unknown, expired or revoked")
            await credentials.touch_api_key(conn, key, now)
            return CustomerPrincipal(
                id=key.id, account_id=key.account_id, scopes=frozenset(key.scopes)
            )
    raise Unauthenticated("the token is unknown, expired or revoked")


# -- profile and account ---------------------------------------------------


async def get_profile(pool: asyncpg.Pool, principal: CustomerPrincipal) -> accounts.User:
    async with pool.acquire() as conn:
        return await accounts.get_user(conn, principal.id)


async def update_profile(
    pool: asyncpg.Pool, principal: CustomerPrincipal, changes: Mapping[str, object], now: datetime
) -> accounts.User:
    """D2 rectification by the user themselves."""
    async with transaction(pool) as tx:
        user = await accounts.update_user(tx.conn, principal.id, changes, now)
        await notify_admin_change(
            tx,
            "user.updated",
            now=now,
            actor=principal.actor,
            account_id=principal.account_id,
            subject={"type": "user", "id": user.id},
            changes={"fields": sorted(changes)},
        )
    return user


async def get_account(pool: asyncpg.Pool, principal: CustomerPrincipal) -> accounts.Account:
    async with pool.acquire() as conn:
        return await accounts.get_account(conn, principal.account_id)


async def update_account(
    pool: asyncpg.Pool, principal: CustomerPrincipal, changes: Mapping[str, object], now: datetime
) -> accounts.Account:
    """The owner's changes; restriction goes through its one use case (D2). A new data
    region (one of the service's: the caller checked) applies to recordings started from
    now on; those before stay in their region's store."""
    own_cases = ("processing_restricted", "data_region")
    others = {k: v for k, v in changes.items() if k not in own_cases}
    async with transaction(pool) as tx:
        if "data_region" in changes:
            await _change_region(tx, principal, str(changes["data_region"]), now)
        if others:
            await accounts.update_account(tx.conn, principal.account_id, others)
            await notify_admin_change(
                tx,
                "account.updated",
                now=now,
                actor=principal.actor,
                account_id=principal.account_id,
                subject={"type": "account", "id": principal.account_id},
                changes={"fields": sorted(others)},
            )
        if "processing_restricted" in changes:
            await restriction.set_restricted(
                tx,
                principal.account_id,
                bool(changes["processing_restricted"]),
                principal.actor,
                now,
            )
        return await accounts.get_account(tx.conn, principal.account_id)


async def _change_region(tx: Tx, principal: CustomerPrincipal, region: str, now: datetime) -> None:
    before = await regions.change_data_region(tx.conn, principal.account_id, region)
    if before is None:
        return  # the region it has: nothing changes, nothing to report
    await notify_admin_change(
        tx,
        "account.data_region_changed",
        now=now,
        actor=principal.actor,
        account_id=principal.account_id,
        subject={"type": "account", "id": principal.account_id},
        changes={"from": before, "to": region, "applies_to": "new recordings"},
    )


# -- members -----------------------------------------------------------------


@dataclass(frozen=True)
class Invitation:
    """The invited user; the token went to them by e-mail, and is in nobody's hands here."""

    user: accounts.User
    expires_at: datetime
    mail_id: str


async def invite_user(
    pool: asyncpg.Pool,
    settings: Settings,
    keys: KeyProvider,
    owner: CustomerPrincipal,
    *,
    email: str,
    name: str,
    role: CustomerRole,
    now: datetime,
) -> Invitation:
    """A new user of the owner's account; they choose their password with the invitation.

    The token goes only into the invitee's mail (sealed until it is sent): an
    owner who saw it could set the member's password and act as them.
    """
    token, digest = new_token(INVITATION_PREFIX)
    expires_at = now + timedelta(seconds=settings.invitation_ttl_s)
    async with transaction(pool) as tx:
        user = await accounts.insert_user(
            tx.conn,
            id=new_id("usr"),
            account_id=owner.account_id,
            kind=UserKind.CUSTOMER,
            role=role,
            email=email,
            name=name,
            password_hash=None,
            invitation_hash=digest,
            invitation_expires_at=expires_at,
            now=now,
        )
        await notify_admin_change(
            tx,
            "user.created",
            now=now,
            actor=owner.actor,
            account_id=owner.account_id,
            subject={"type": "user", "id": user.id},
            changes={"role": role.value, "via": "invitation"},
        )
        account = await accounts.get_account(tx.conn, owner.account_id)
        inviter = await accounts.get_user(tx.conn, owner.id)
        mail_id = await outgoing_mail.queue(
            tx.conn,
            keys,
            kind="invitation",
            user_id=user.id,
            params={
                "account": account.name,
                "inviter": inviter.name,
                "expires_at": expires_at.isoformat(),
            },
            now=now,
            secret=token,
        )
    return Invitation(user, expires_at, mail_id)


async def accept_invitation(
    pool: asyncpg.Pool,
    settings: Settings,
    hasher: PasswordHasher,
    *,
    token: str,
    password: str,
    client: Client,
    now: datetime,
) -> accounts.User:
    budgets = {f"invitation:{client.address}": settings.invitation_max_per_address}
    await take_budget(pool, budgets, settings.login_window_s, client, "invitation", now)
    password_hash = await hasher.hash(password)
    async with transaction(pool) as tx:
        user = await accounts.accept_invitation(tx.conn, token_hash(token), password_hash, now)
        if user is None:
            raise InvitationInvalid("the invitation is unknown, used or expired")
        await throttles.give_back(tx.conn, list(budgets))
        await notify_admin_change(
            tx,
            "user.activated",
            now=now,
            actor=Actor.anonymous(),
            account_id=user.account_id,
            subject={"type": "user", "id": user.id},
        )
    return user


async def list_users(
    pool: asyncpg.Pool, owner: CustomerPrincipal, after: tuple[datetime, str] | None, limit: int
) -> list[accounts.User]:
    async with pool.acquire() as conn:
        return await accounts.list_users(conn, owner.account_id, after=after, limit=limit)


async def change_user(
    pool: asyncpg.Pool,
    owner: CustomerPrincipal,
    user_id: str,
    changes: Mapping[str, object],
    now: datetime,
) -> accounts.User:
    async with transaction(pool) as tx:
        before = await accounts.get_user(tx.conn, user_id, account_id=owner.account_id)
        demoting = changes.get("role") == CustomerRole.MEMBER and before.role == CustomerRole.OWNER
        if demoting and await accounts.count_owners(tx.conn, owner.account_id) <= 1:
            raise LastOwner("promote another owner before demoting the last one")
        user = await accounts.update_user(tx.conn, user_id, changes, now)
        event = "role.changed" if user.role != before.role else "user.updated"
        await notify_admin_change(
            tx,
            event,
            now=now,
            actor=owner.actor,
            account_id=owner.account_id,
            subject={"type": "user", "id": user.id},
            changes={
                "fields": sorted(changes),
                "role": {"from": before.role.value, "to": user.role.value},
            },
        )
    return user


async def remove_user(
    pool: asyncpg.Pool, owner: CustomerPrincipal, user_id: str, now: datetime
) -> None:
    async with transaction(pool) as tx:
        user = await accounts.get_user(tx.conn, user_id, account_id=owner.account_id)
        if (
            user.role == CustomerRole.OWNER
            and await accounts.count_owners(tx.conn, owner.account_id) <= 1
        ):
            raise LastOwner("an account needs at least one owner")
        await accounts.delete_user(tx.conn, user.id)
        await notify_admin_change(
            tx,
            "user.deleted",
            now=now,
            actor=owner.actor,
            account_id=owner.account_id,
            subject={"type": "user", "id": user.id},
            changes={"role": user.role.value},
        )


# -- API keys ----------------------------------------------------------------


@dataclass(frozen=True)
class NewApiKey:
    key: credentials.ApiKey
    token: str  # shown once, never again


async def create_api_key(
    pool: asyncpg.Pool,
    owner: CustomerPrincipal,
    *,
    name: str,
    scopes: list[Scope],
    now: datetime,
) -> NewApiKey:
    token, digest = new_token(API_KEY_PREFIX)
    async with transaction(pool) as tx:
        key = await credentials.insert_api_key(
            tx.conn,
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
            tx,
            "api_key.created",
            now=now,
            actor=owner.actor,
            account_id=owner.account_id,
            subject={"type": "api_key", "id": key.id},
            changes={"scopes": [s.value for s in key.scopes]},
        )
    return NewApiKey(key, token)


async def list_api_keys(
    pool: asyncpg.Pool, owner: CustomerPrincipal, after: tuple[datetime, str] | None, limit: int
) -> list[credentials.ApiKey]:
    async with pool.acquire() as conn:
        return await credentials.list_api_keys(conn, owner.account_id, after=after, limit=limit)


async def revoke_api_key(
    pool: asyncpg.Pool, owner: CustomerPrincipal, key_id: str, now: datetime
) -> None:
    async with transaction(pool) as tx:
        try:
            key = await credentials.revoke_api_key(tx.conn, key_id, owner.account_id, now)
        except NotFound:
            raise NotFound("no such API key") from None
        await notify_admin_change(
            tx,
            "api_key.deleted",
            now=now,
            actor=owner.actor,
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
    role: StaffRole,
    password: str,
    now: datetime,
) -> accounts.User:
    password_hash = await hasher.hash(password)
    async with transaction(pool) as tx:
        user = await accounts.insert_user(
            tx.conn,
            id=new_id("stf"),
            account_id=None,
            kind=UserKind.STAFF,
            role=role,
            email=email,
            name=name,
            password_hash=password_hash,
            now=now,
        )
        await notify_admin_change(
            tx,
            "staff.created",
            now=now,
            actor=Actor.system("cli"),
            account_id=None,
            subject={"type": "staff_user", "id": user.id},
            changes={"role": role.value, "via": "cli"},
        )
        # Staff have no account trail: the security log, which security_admin reads, is theirs.
        await security_event(
            tx.conn,
            Client(address=None, user_agent="telephony staff create"),
            "staff.created",
            "info",
            now,
            user_id=user.id,
            email=user.email,
            details={"role": role.value, "via": "cli"},
        )
    return user


async def security_log(
    pool: asyncpg.Pool,
    *,
    email: str | None,
    user_id: str | None,
    before_id: int | None,
    limit: int,
) -> list[securitylog.SecurityEvent]:
    """Sign-in attempts and sign-outs, newest first (S2), for staff security_admin."""
    async with pool.acquire() as conn:
        return await securitylog.list_events(
            conn, email=email, user_id=user_id, before_id=before_id, limit=limit
        )
