"""Password resets by e-mail (API.md): ask with an address, choose with the link's token.

Asking always answers the same (202), whether or not the address has an
account, so the form cannot tell who is a customer; the difference shows
only in the security log (S2) and in whether a mail goes out. Asking is
throttled per address and per source, so nobody can flood a mailbox. A link
is single-use and lives 30 minutes; using it ends every session of the
person and every other outstanding link.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from storage import accounts, credentials, throttles
from storage.ids import new_id, new_token, token_hash
from storage.keys.passwords import PasswordHasher
from storage.keys.providers import KeyProvider
from telephony.domain.errors import ResetLinkInvalid
from telephony.settings import Settings
from telephony.usecases import outgoing_mail
from telephony.usecases.identity import Client, security_event, take_budget, user_actor
from telephony.usecases.trail import transaction

RESET_PREFIX = "pwr"
RESETS_PER_EMAIL = 3  # per login window: enough for a lost mail, too few to flood an inbox
RESETS_PER_ADDRESS = 20


async def request_reset(
    pool: asyncpg.Pool,
    settings: Settings,
    keys: KeyProvider,
    *,
    email: str,
    client: Client,
    now: datetime,
) -> None:
    budgets = {
        f"reset-email:{email.lower()}": RESETS_PER_EMAIL,
        f"reset-address:{client.address}": RESETS_PER_ADDRESS,
    }
    await take_budget(pool, budgets, settings.login_window_s, client, "password_reset", now, email)
    async with transaction(pool) as tx:
        user = await accounts.find_user_by_email(tx.conn, email)
        if user is None or user.password_hash is None:
            # Unknown, or invited and not yet active (the invitation is their way in).
            await security_event(
                tx.conn,
                client,
                "password_reset",
                "info",
                now,
                email=email,
                details={"sent": False},
            )
            return
        token, digest = new_token(RESET_PREFIX)
        expires_at = now + timedelta(seconds=settings.password_reset_ttl_s)
        await credentials.insert_password_reset(
            tx.conn,
            id=new_id("pwr"),
            user_id=user.id,
            token_hash=digest,
            now=now,
            expires_at=expires_at,
        )
        await outgoing_mail.queue(
            tx.conn,
            keys,
            kind="password_reset",
            user_id=user.id,
            params={"expires_at": expires_at.isoformat()},
            now=now,
            secret=token,
        )
        await security_event(
            tx.conn,
            client,
            "password_reset",
            "info",
            now,
            user_id=user.id,
            email=user.email,
            details={"sent": True},
        )


async def confirm_reset(
    pool: asyncpg.Pool,
    settings: Settings,
    hasher: PasswordHasher,
    *,
    token: str,
    password: str,
    client: Client,
    now: datetime,
) -> accounts.User:
    """Set the new password; every session of the person ends. 401 for a dead link."""
    budgets = {f"reset-confirm:{client.address}": settings.invitation_max_per_address}
    await take_budget(pool, budgets, settings.login_window_s, client, "password_reset", now)
    password_hash = await hasher.hash(password)
    async with transaction(pool) as tx:
        user_id = await credentials.use_password_reset(tx.conn, token_hash(token), now)
        if user_id is None:
            await security_event(
                tx.conn,
                client,
                "password_reset",
                "failure",
                now,
                details={"reason": "unknown_used_or_expired"},
            )
            failed = True
        else:
            failed = False
            await throttles.give_back(tx.conn, list(budgets))
            user = await accounts.update_user(
                tx.conn, user_id, {"password_hash": password_hash}, now
            )
            ended = await credentials.revoke_user_sessions(tx.conn, user.id, now)
            await credentials.revoke_other_resets(tx.conn, user.id, now)
            await security_event(
                tx.conn,
                client,
                "password_reset",
                "success",
                now,
                user_id=user.id,
                email=user.email,
                details={"sessions_ended": ended},
            )
            if user.account_id is not None:
                tx.audit(
                    user.account_id,
                    user_actor(user),
                    "user.password_reset",
                    {"type": "user", "id": user.id},
                    now,
                    sessions_ended=ended,
                )
    if failed:
        raise ResetLinkInvalid("the link is unknown, used or expired; ask for a new one")
    return user
