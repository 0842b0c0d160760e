"""SIP trunks (API.md "SIP and SIPREC ingest"): an account's SBC or PBX, by digest.

A trunk's password is made here, shown once, and kept wrapped under the
account's key: digest needs it (or its unsalted HA1, as good as it) to check
a response, so a one-way hash cannot stand in (SIP.md 2.5, S1). A session from
a trunk creates its own call: the SIPREC metadata's participants (or the
INVITE's From and To) give its numbers, the trunk's `numbers` say which are
the customer's, and every other party is a `pending` counterpart. Nothing is
recorded until consent and the customer's start, as for any call (R1, R2).
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import phonenumbers

from storage import securitylog, sip_trunks
from storage.ids import new_id
from storage.keys.providers import KeyProvider
from storage.sip_trunks import Network, Trunk
from telephony.domain.actors import Actor
from telephony.domain.calls import Direction
from telephony.domain.roles import CustomerPrincipal
from telephony.usecases import calls
from telephony.usecases.calls import NewCall
from telephony.usecases.trail import transaction

USERNAME_PREFIX = "trk_"
DEFAULT_ALGORITHMS = ("SHA-256", "MD5")


@dataclass(frozen=True)
class NewTrunk:
    trunk: Trunk
    password: str  # shown once


def trunk_actor(trunk_id: str) -> Actor:
    return Actor.system(f"sip-trunk:{trunk_id}")


def _password_owner(trunk_id: str) -> str:
    return f"sip-trunk-password:{trunk_id}"


async def create_trunk(
    pool: asyncpg.Pool,
    keys: KeyProvider,
    owner: CustomerPrincipal,
    *,
    name: str,
    allowed_sources: Sequence[Network],
    numbers: Sequence[str],
    digest_algorithms: Sequence[str],
    now: datetime,
) -> NewTrunk:
    trunk_id = new_id("trk")
    password = secrets.token_urlsafe(24)  # 32 characters: a multiple of the wrap's 8 bytes
    async with transaction(pool) as tx:
        wrapped = await keys.wrap_secret(
            tx.conn, owner.account_id, _password_owner(trunk_id), password.encode(), now
        )
        trunk = await sip_trunks.insert(
            tx.conn,
            id=trunk_id,
            account_id=owner.account_id,
            name=name,
            username=USERNAME_PREFIX + secrets.token_hex(8),
            wrapped_password=wrapped,
            allowed_sources=allowed_sources,
            numbers=numbers,
            digest_algorithms=digest_algorithms,
            now=now,
        )
        tx.audit(
            owner.account_id,
            owner.actor,
            "sip_trunk.created",
            {"sip_trunk_id": trunk_id},
            now,
            allowed_sources=[str(n) for n in allowed_sources],
        )
    return NewTrunk(trunk, password)


async def list_trunks(
    pool: asyncpg.Pool, owner: CustomerPrincipal, after: tuple[datetime, str] | None, limit: int
) -> list[Trunk]:
    async with pool.acquire() as conn:
        return await sip_trunks.list_for(conn, owner.account_id, after, limit)


async def delete_trunk(
    pool: asyncpg.Pool, owner: CustomerPrincipal, trunk_id: str, now: datetime
) -> None:
    async with transaction(pool) as tx:
        trunk = await sip_trunks.delete(tx.conn, owner.account_id, trunk_id)
        tx.audit(
            owner.account_id, owner.actor, "sip_trunk.deleted", {"sip_trunk_id": trunk.id}, now
        )


async def credentials_of(
    pool: asyncpg.Pool, keys: KeyProvider, username: str, now: datetime
) -> tuple[Trunk, str] | None:
    """The trunk `username` names and its password, to check a digest response with."""
    async with pool.acquire() as conn:
        found = await sip_trunks.by_username(conn, username)
        if found is None:
            return None
        trunk, wrapped = found
        secret = await keys.unwrap_secret(
            conn, trunk.account_id, _password_owner(trunk.id), wrapped, now
        )
    return trunk, secret.decode()


async def challenge_algorithms(pool: asyncpg.Pool, source: str) -> list[str]:
    """What a challenge to `source` offers: its trunks' algorithms (SIP.md 2.5: SHA-256
    first where the peer has RFC 8760), or both when no trunk allows it."""
    async with pool.acquire() as conn:
        found = await sip_trunks.algorithms_for(conn, source)
    return found or list(DEFAULT_ALGORITHMS)


async def record_attempt(
    pool: asyncpg.Pool,
    *,
    username: str,
    outcome: str,
    reason: str,
    source: str,
    now: datetime,
    trunk: Trunk | None = None,
) -> None:
    """Every trunk authentication, passed or failed, in the security log (S2)."""
    async with pool.acquire() as conn:
        await securitylog.record(
            conn,
            event="sip_trunk.auth",
            outcome=outcome,
            at=now,
            source_address=source,
            details={
                "username": username[:64],
                "reason": reason,
                "sip_trunk_id": trunk.id if trunk else None,
                "account_id": trunk.account_id if trunk else None,
            },
        )


class NoParties(ValueError):
    """Fewer than two E.164 numbers among the session's parties: no call can be made."""


async def create_call(
    pool: asyncpg.Pool,
    trunk: Trunk,
    numbers: Sequence[str],
    *,
    media_token_ttl_s: int,
) -> NewCall:
    """A call for a trunk's session. The first number is the caller (SIP.md 4.3); a caller
    among the trunk's own numbers makes it outbound. Every party not the customer's is a
    pending counterpart (API.md)."""
    parties = list(dict.fromkeys(n for n in (as_e164(x) for x in numbers) if n))
    if len(parties) < 2:
        raise NoParties("the session names fewer than two phone numbers in E.164 form")
    own = set(trunk.numbers)
    outbound = parties[0] in own
    others = [n for n in parties if n not in own]
    if not others:
        raise NoParties("every party is one of the trunk's own numbers")
    return await calls.create_call(
        pool,
        trunk.account_id,
        trunk_actor(trunk.id),
        direction=Direction.OUTBOUND if outbound else Direction.INBOUND,
        from_number=parties[0],
        to_number=parties[1],
        counterparts=[(f"party {i + 1}", n) for i, n in enumerate(others)],
        media_token_ttl_s=media_token_ttl_s,
    )


def as_e164(number: str) -> str | None:
    """A party's number in E.164 form, or None: a trunk's call holds dialable numbers
    only, as one made through the API does."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def networks(values: Sequence[str]) -> list[Network]:
    """CIDRs (a bare address is its /32 or /128); ValueError names the first bad one."""
    found = []
    for value in values:
        try:
            found.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ValueError("allowed_sources holds CIDRs, as in 198.51.100.0/24") from None
    return found
