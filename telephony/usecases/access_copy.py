"""The access copy (D1): every personal datum held about a user, by resource, with where
it is stored.

Each resource is read by its own reader in `storage.subject_data`, into a
dataclass of personal columns only, so no hash, token or wrapped key can
travel in an export by accident.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from storage import accounts, privacy, subject_data
from telephony.domain.roles import CustomerPrincipal
from telephony.usecases.trail import transaction

# A bound per resource in one access copy: the logs grow with every request,
# and one export must not hold an unbounded result in memory. A truncated
# resource says so; the rest is answered through an `access` request (D1).
EXPORT_ROW_LIMIT = 10_000


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _plain(value: Any) -> Any:
    """JSON-ready: datetimes as RFC 3339 UTC, containers walked."""
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _resource(
    name: str,
    description: str,
    rows: Sequence[Any],
    location: dict[str, Any],
) -> dict[str, Any]:
    shown = list(rows[:EXPORT_ROW_LIMIT])
    return {
        "resource": name,
        "description": description,
        "storage_location": location,
        "count": len(shown),
        "truncated": len(rows) > EXPORT_ROW_LIMIT,
        "personal_data": [
            _plain(
                dataclasses.asdict(r)
                if dataclasses.is_dataclass(r) and not isinstance(r, type)
                else r
            )
            for r in shown
        ],
    }


# (resource, table, description); the rows come from the reader of the same name below.
_RESOURCES = [
    ("user_profile", "users", "your profile (A1)"),
    ("account", "accounts", "the account you belong to; owners also get its billing data (A1)"),
    ("sessions", "sessions", "your logins: when, from which address and user agent"),
    ("api_keys", "api_keys", "API keys you created (names and scopes; no token is stored)"),
    ("security_log", "security_log", "login attempts naming you (S2), kept 60 days (S3)"),
    ("access_log", "access_log", "requests you made to the API, kept 60 days (S3)"),
    ("audit_events", "audit_events", "the audit trail where you acted or are the subject"),
    ("privacy_requests", "privacy_requests", "privacy requests you filed (D2, D3)"),
    ("consent_events", "consent_events", "consent decisions and evidence you recorded (R2)"),
    ("calls", "calls", "calls of the account (owner) or that you started (member)"),
    ("call_counterparts", "counterparts", "the counterparts' labels and numbers on those calls"),
    ("recordings", "recordings", "metadata of the recordings of those calls"),
]


async def export_subject(
    pool: asyncpg.Pool,
    principal: CustomerPrincipal,
    *,
    region: str,
    now: datetime,
    stores: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """D1: every personal datum held about the user, by resource, with where it is stored.

    Owners hold the account (A1), so their copy has the account's calls,
    counterparts' numbers and recordings; a member's has the calls and
    recordings they started. Audio is listed by size only, never included,
    each recording with its own region and that region's store (`stores`:
    region → where, without credentials). `region`: the database's.
    Read in one snapshot; the export itself is audited.
    """
    stores = stores or {}
    account_id, uid, limit = principal.account_id, principal.id, EXPORT_ROW_LIMIT + 1
    scope = None if principal.is_owner else uid
    async with (
        pool.acquire() as conn,
        conn.transaction(isolation="repeatable_read", readonly=True),
    ):
        user = await accounts.get_user(conn, uid, account_id=account_id)
        account = await accounts.get_account(conn, account_id)
        rows: dict[str, Sequence[Any]] = {
            "user_profile": [_profile(user)],
            "account": [_account(account, full=principal.is_owner)],
            "sessions": await subject_data.sessions_of(conn, uid, limit),
            "api_keys": await subject_data.api_keys_created_by(conn, account_id, uid, limit),
            "security_log": await subject_data.security_log_of(conn, uid, user.email, limit),
            "access_log": await subject_data.access_log_of(conn, uid, limit),
            "audit_events": await subject_data.audit_of(conn, account_id, uid, limit),
            "privacy_requests": await privacy.list_requests(
                conn, account_id, user_id=uid, after=None, limit=limit
            ),
            "consent_events": await subject_data.consents_recorded_by(conn, account_id, uid, limit),
            "calls": await subject_data.calls_of(conn, account_id, scope, limit),
            "call_counterparts": await subject_data.counterparts_of(conn, account_id, scope, limit),
            "recordings": await subject_data.recordings_of(conn, account_id, scope, limit),
        }
    resources = [
        _resource(
            name, description, rows[name], {"region": region, "store": "postgresql", "table": table}
        )
        for name, table, description in _RESOURCES
    ]
    audio = [
        {
            "recording_id": r.id,
            "size_bytes": r.size_bytes,
            "region": r.blob_region,
            "store": stores.get(r.blob_region),  # None: a region this service no longer has
        }
        for r in rows["recordings"]
        if r.status != "deleted"
    ]
    location = {
        "region": account.data_region,  # where new recordings go; each names its own
        "store": "blob store",
        "table": None,
        "object": "recordings/<recording_id>/audio-<offset>",
        "stores": {r["region"]: r["store"] for r in audio},
    }
    resources.append(
        _resource(
            "recording_audio", "encrypted audio of those recordings, by size", audio, location
        )
    )
    async with transaction(pool) as tx:
        tx.audit(
            account_id,
            principal.actor,
            "privacy.exported",
            {"type": "user", "id": uid},
            now,
            resources=len(resources),
            truncated=[r["resource"] for r in resources if r["truncated"]],
        )
    return {
        "generated_at": _iso(now),
        "subject": {
            "type": "customer_user",
            "id": user.id,
            "email": user.email,
            "name": user.name,
            "role": user.role,
            "account_id": user.account_id,
        },
        "data_region": account.data_region,
        "resources": resources,
    }


def _profile(user: accounts.User) -> dict[str, Any]:
    # Explicit fields: the password hash never leaves storage (S1).
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "postal_address": user.postal_address,
        "vat_number": user.vat_number,
        "role": user.role,
        "age_confirmed_at": user.age_confirmed_at,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }


def _account(account: accounts.Account, *, full: bool) -> dict[str, Any]:
    summary: dict[str, Any] = {"id": account.id, "name": account.name}
    if full:
        summary |= {
            "postal_address": account.postal_address,
            "vat_number": account.vat_number,
            "data_region": account.data_region,
            "terms_accepted_at": account.terms_accepted_at,
            "created_at": account.created_at,
        }
    return summary
