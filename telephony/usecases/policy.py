"""The privacy policy's published versions (P1): the newest is in force, all stay readable.

A version published as material is announced to every person who can sign in,
by one mail each, queued in the publishing transaction: the announcement and
the version exist together or not at all. Re-publishing a version is refused,
so nobody is told twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from storage import mail, policies
from storage.policies import PolicyVersion
from telephony.domain.actors import Actor
from telephony.domain.errors import InvalidInput
from telephony.usecases.trail import notify_admin_change, transaction

VERSION_PATTERN = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,39}$")
MAX_BODY_CHARS = 200_000


@dataclass(frozen=True)
class Published:
    version: PolicyVersion
    announced_to: int  # people mailed (0 for a non-material version)


def check(version: str, body: str) -> None:
    if not VERSION_PATTERN.match(version):
        raise InvalidInput(
            "the version is 1 to 40 letters, digits, dots, dashes or underscores",
            errors=[{"field": "version", "message": "letters, digits, . _ - only"}],
        )
    if not body.strip() or len(body) > MAX_BODY_CHARS:
        raise InvalidInput(
            "the policy text must be non-empty and at most 200,000 characters",
            errors=[{"field": "body", "message": "empty or too long"}],
        )
    if "\x00" in body:
        raise InvalidInput(
            "the policy text holds a NUL", errors=[{"field": "body", "message": "NUL"}]
        )


async def publish(
    pool: asyncpg.Pool, *, version: str, body: str, material: bool, actor: Actor, now: datetime
) -> Published:
    check(version, body)
    async with transaction(pool) as tx:
        await policies.insert(tx.conn, version=version, body=body, material=material, now=now)
        announced = 0
        if material:
            announced = await mail.enqueue_to_everyone(
                tx.conn,
                id_prefix=f"mail_policy_{version}_",
                kind="policy",
                params={"version": version, "published_at": now.isoformat()},
                now=now,
            )
        await notify_admin_change(
            tx,
            "policy.published",
            now=now,
            actor=actor,
            account_id=None,
            subject={"type": "policy_version", "id": version},
            changes={"material": material, "announced_to": announced},
        )
        found = await policies.find(tx.conn, version)
    assert found is not None
    return Published(found, announced)


async def versions(pool: asyncpg.Pool) -> list[PolicyVersion]:
    """Newest first: the first is in force."""
    async with pool.acquire() as conn:
        return await policies.list_versions(conn)


async def announce_news(pool: asyncpg.Pool, *, subject: str, body: str, now: datetime) -> int:
    """Product news, only to people who want it (they turn it off in their settings)."""
    check("news", body)
    if not subject.strip() or len(subject) > 200 or not subject.isprintable():
        raise InvalidInput(
            "the subject is 1 to 200 printable characters",
            errors=[{"field": "subject", "message": "empty, too long or not printable"}],
        )
    async with transaction(pool) as tx:
        return await mail.enqueue_to_everyone(
            tx.conn,
            id_prefix=f"mail_news_{now.strftime('%Y%m%dT%H%M%S%f')}_",
            kind="product_update",
            params={"subject": subject, "body": body},
            now=now,
            only_wanting_news=True,
        )
