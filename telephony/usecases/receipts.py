"""Signed receipts (API.md "Signed receipts"): evidence a customer can show a regulator.

A consent receipt states one consent event: the call, the counterpart (its number as an
HMAC-SHA-256 under the account's salt, so the receipt names it without showing it), the
decision, its times, and the event's row in the account's hash-chained audit trail;
then every recording of the call started after it, each with its own row. The chain's
order is the proof: a start whose row comes later in the chain than the grant came after
it, and no row can be moved without breaking every hash after it (the audit export lets
anyone recompute them).

A deletion receipt states that a recording was deleted, when, that its data key is
destroyed (crypto-shredding: no copy anywhere opens its audio), and the deletion's audit row.

Both are signed when asked for, with the service's current Ed25519 key: a detached JWS
over the receipt's canonical JSON, verifiable offline with the JWKS at
`/.well-known/telephony-keys.json`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from storage import receipts
from storage.keys import signing
from storage.keys.providers import KeyProvider
from storage.receipts import Link
from telephony.domain.errors import NotFound
from telephony.domain.roles import CustomerPrincipal

VERSION = 1


@dataclass(frozen=True)
class Signed:
    """A receipt: its statement, the exact bytes signed, and the detached signature."""

    receipt: dict[str, Any]
    payload: bytes
    signature: str  # header..signature (RFC 7515 appendix F)
    number_salt: bytes | None = None  # the account's, to check `number_hash` with

    def as_json(self) -> dict[str, Any]:
        body = {
            "receipt": self.receipt,
            "payload": signing.b64url(self.payload),
            "signature": self.signature,
        }
        if self.number_salt is not None:
            body["number_salt"] = signing.b64url(self.number_salt)
        return body


def _time(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _link(link: Link) -> dict[str, Any]:
    return {"seq": link.seq, "hash": link.hash.hex(), "prev_hash": link.prev_hash.hex()}


def _sign(key: signing.SigningKey, receipt: dict[str, Any]) -> tuple[bytes, str]:
    payload = json.dumps(receipt, sort_keys=True, separators=(",", ":")).encode()
    return payload, key.sign_detached(payload)


def number_hash(salt: bytes, number: str) -> str:
    return hmac.new(salt, number.encode(), hashlib.sha256).hexdigest()


async def jwks(pool: asyncpg.Pool, keys: KeyProvider, now: datetime) -> dict[str, Any]:
    """Every signing key ever used, the current one made if there is none yet."""
    async with pool.acquire() as conn, conn.transaction():
        await keys.signing_key(conn, now)
        return {"keys": await signing.published(conn)}


async def consent_receipt(
    pool: asyncpg.Pool,
    keys: KeyProvider,
    principal: CustomerPrincipal,
    call_id: str,
    event_id: str,
    now: datetime,
) -> Signed:
    async with pool.acquire() as conn, conn.transaction():
        facts = await receipts.consent_facts(conn, principal.account_id, call_id, event_id)
        if facts is None:
            raise NotFound("no such consent event on this call")
        salt = await receipts.salt(conn, principal.account_id)
        key = await keys.signing_key(conn, now)
    receipt = {
        "type": "consent",
        "version": VERSION,
        "issued_at": _time(now),
        "account_id": principal.account_id,
        "call_id": facts.call_id,
        "counterpart_id": facts.counterpart_id,
        "consent_event_id": facts.consent_event_id,
        "number_hash": None if facts.number is None else number_hash(salt, facts.number),
        "decision": facts.decision,
        "method": facts.method,
        "obtained_at": _time(facts.obtained_at),
        "recorded_at": _time(facts.recorded_at),
        "audit": _link(facts.audit),
        "recordings_started_after": [
            {"recording_id": rec_id, "started_at": _time(link.at), "audit": _link(link)}
            for rec_id, link in facts.starts_after
        ],
    }
    payload, signature = _sign(key, receipt)
    return Signed(receipt, payload, signature, salt)


async def deletion_receipt(
    pool: asyncpg.Pool,
    keys: KeyProvider,
    principal: CustomerPrincipal,
    recording_id: str,
    now: datetime,
) -> Signed:
    async with pool.acquire() as conn, conn.transaction():
        facts = await receipts.deletion_facts(conn, principal.account_id, recording_id)
        if facts is None:
            raise NotFound("no deleted recording of that id")
        key = await keys.signing_key(conn, now)
    receipt = {
        "type": "deletion",
        "version": VERSION,
        "issued_at": _time(now),
        "account_id": principal.account_id,
        "call_id": facts.call_id,
        "recording_id": facts.recording_id,
        "deleted_at": _time(facts.deleted_at),
        "key_destroyed": facts.key_destroyed,
        "statement": "key destroyed" if facts.key_destroyed else "key not destroyed",
        "audit": _link(facts.audit),
    }
    payload, signature = _sign(key, receipt)
    return Signed(receipt, payload, signature)


async def deleted_recordings(
    pool: asyncpg.Pool, principal: CustomerPrincipal, call_id: str
) -> list[tuple[str, datetime, datetime]]:
    """The call's deleted recordings, for the portal's links to their receipts."""
    async with pool.acquire() as conn:
        return await receipts.deleted_recordings(conn, principal.account_id, call_id)
