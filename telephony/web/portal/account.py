"""An account's own pages: API keys, members, settings (with webhooks and deliveries),
the audit trail, and privacy requests with the access copy (D1).

Secrets shown once (an API key's token, the webhook secret) are rendered in
the answer to the POST that made them, never stored for a later page, and
every page here is `no-store`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from telephony.delivery.ssrf import check_webhook_url
from telephony.domain.errors import Forbidden, InvalidInput
from telephony.domain.privacy import RequestKind, is_overdue
from telephony.domain.roles import CustomerPrincipal, CustomerRole, Scope
from telephony.i18n import N_
from telephony.usecases import access_copy, audit_trail, identity, privacy, webhooks
from telephony.web.api.accounts import (
    AccountPatch,
    ApiKeyCreate,
    UserCreate,
    UserPatch,
    check_region,
)
from telephony.web.api.privacy import PrivacyRequestCreate
from telephony.web.appkeys import KEYS, POOL, SETTINGS
from telephony.web.inputs import path_id
from telephony.web.portal.forms import checked, errors_of, posted, validate
from telephony.web.portal.render import page
from telephony.web.portal.session import require_customer
from telephony.web.residency import store_descriptions

LIST_LIMIT = 200


def _now() -> datetime:
    return datetime.now(UTC)


async def _owner(request: web.Request) -> CustomerPrincipal:
    principal = await require_customer(request)
    if not principal.is_owner:
        raise Forbidden("only an owner of the account may do this")
    return principal


# -- API keys ---------------------------------------------------------------------------


async def _keys_page(
    request: web.Request, owner: CustomerPrincipal, extra: dict[str, Any], status: int = 200
) -> web.Response:
    keys = await identity.list_api_keys(request.app[POOL], owner, None, LIST_LIMIT)
    context = {"keys": keys, "scopes": [s.value for s in Scope], "errors": {}, "new": None}
    return page(request, "keys.html", {**context, **extra}, status=status)


async def keys_page(request: web.Request) -> web.Response:
    return await _keys_page(request, await _owner(request), {})


async def create_key(request: web.Request) -> web.Response:
    fields = await posted(request)
    owner = await _owner(request)
    data = await request.post()
    scopes = [s for s in data.getall("scopes", []) if isinstance(s, str)]
    try:
        body = validate(ApiKeyCreate, {"name": fields.get("name", "").strip(), "scopes": scopes})
        new = await identity.create_api_key(
            request.app[POOL],
            owner,
            name=body.name,
            scopes=[Scope(s) for s in body.scopes],
            now=_now(),
        )
    except InvalidInput as exc:
        return await _keys_page(request, owner, {"errors": errors_of(exc)}, status=422)
    # The token is on this answer only (no-store): a reload shows it no more.
    return await _keys_page(request, owner, {"new": new}, status=201)


async def revoke_key(request: web.Request) -> web.StreamResponse:
    await posted(request)
    owner = await _owner(request)
    await identity.revoke_api_key(request.app[POOL], owner, path_id(request), _now())
    raise web.HTTPSeeOther("/keys")


# -- members ----------------------------------------------------------------------------


async def _members_page(
    request: web.Request, owner: CustomerPrincipal, extra: dict[str, Any], status: int = 200
) -> web.Response:
    users = await identity.list_users(request.app[POOL], owner, None, LIST_LIMIT)
    context: dict[str, Any] = {"users": users, "errors": {}, "form": {}, "invited": None}
    return page(request, "members.html", {**context, **extra}, status=status)


async def members_page(request: web.Request) -> web.Response:
    return await _members_page(request, await _owner(request), {})


async def invite(request: web.Request) -> web.Response:
    fields = await posted(request)
    owner = await _owner(request)
    form = {k: fields.get(k, "").strip() for k in ("email", "name", "role")}
    try:
        body = validate(UserCreate, {**form, "role": form["role"] or "member"})
        invitation = await identity.invite_user(
            request.app[POOL],
            request.app[SETTINGS],
            request.app[KEYS],
            owner,
            email=body.email,
            name=body.name,
            role=CustomerRole(body.role),
            now=_now(),
        )
    except InvalidInput as exc:
        return await _members_page(
            request, owner, {"errors": errors_of(exc), "form": form}, status=422
        )
    return await _members_page(request, owner, {"invited": invitation.user}, status=201)


async def change_member(request: web.Request) -> web.StreamResponse:
    fields = await posted(request)
    owner = await _owner(request)
    body = validate(UserPatch, {"role": fields.get("role", "")})
    await identity.change_user(request.app[POOL], owner, path_id(request), body.changes(), _now())
    raise web.HTTPSeeOther("/members")


async def remove_member(request: web.Request) -> web.StreamResponse:
    await posted(request)
    owner = await _owner(request)
    await identity.remove_user(request.app[POOL], owner, path_id(request), _now())
    raise web.HTTPSeeOther("/members")


# -- settings -----------------------------------------------------------------------------


async def _settings_page(
    request: web.Request, principal: CustomerPrincipal, extra: dict[str, Any], status: int = 200
) -> web.Response:
    pool = request.app[POOL]
    me = await identity.get_profile(pool, principal)
    context: dict[str, Any] = {
        "me_user": me,
        "errors": {},
        "secret": None,
        "message": None,
        "account": None,
        "deliveries": [],
        "regions": request.app[SETTINGS].region_names(),
    }
    if principal.is_owner:
        context["account"] = await identity.get_account(pool, principal)
        context["deliveries"] = await webhooks.list_events(
            pool, principal, status=None, before=None, limit=50
        )
    return page(request, "settings.html", {**context, **extra}, status=status)


async def settings_page(request: web.Request) -> web.Response:
    return await _settings_page(request, await require_customer(request), {})


async def save_account(request: web.Request) -> web.Response:
    fields = await posted(request)
    owner = await _owner(request)
    retention = fields.get("recording_retention_days", "").strip()
    webhook = fields.get("webhook_url", "").strip()
    days: Any = retention or None  # a non-number is refused by the API's own model
    if retention.isascii() and retention.isdigit() and len(retention) < 6:
        days = int(retention)
    data: dict[str, Any] = {
        "recording_retention_days": days,
        "processing_restricted": checked(fields, "processing_restricted"),
        "webhook_url": webhook or None,
    }
    if "data_region" in fields:  # offered only when the service has more than one
        data["data_region"] = fields["data_region"]
    try:
        changes = validate(AccountPatch, data).changes()
        check_region(request.app[SETTINGS], changes)
        if changes.get("webhook_url") is not None:
            await check_webhook_url(
                changes["webhook_url"], allow_private=request.app[SETTINGS].webhook_allow_private
            )
        await identity.update_account(request.app[POOL], owner, changes, _now())
    except InvalidInput as exc:
        return await _settings_page(request, owner, {"errors": errors_of(exc)}, status=422)
    return await _settings_page(request, owner, {"message": N_("Saved.")})


async def save_preferences(request: web.Request) -> web.Response:
    fields = await posted(request)
    principal = await require_customer(request)
    language = fields.get("language") or None
    changes = {"language": language, "product_updates": checked(fields, "product_updates")}
    if language not in (None, "en", "pl"):
        raise InvalidInput("en or pl", errors=[{"field": "language", "message": "en or pl"}])
    await identity.update_profile(request.app[POOL], principal, changes, _now())
    return await _settings_page(request, principal, {"message": N_("Saved.")})


async def rotate_secret(request: web.Request) -> web.Response:
    await posted(request)
    owner = await _owner(request)
    secret = await webhooks.rotate_secret(request.app[POOL], request.app[KEYS], owner, _now())
    return await _settings_page(request, owner, {"secret": secret}, status=201)


# -- audit and privacy ----------------------------------------------------------------------


async def audit_page(request: web.Request) -> web.Response:
    owner = await _owner(request)
    raw = request.query.get("after", "0")
    after = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 19 else 0
    events = await audit_trail.list_trail(request.app[POOL], owner, after_seq=after, limit=101)
    more = len(events) > 100
    events = events[:100]
    next_url = f"/audit?after={events[-1].seq}" if more else None
    return page(
        request, "audit.html", {"events": events, "next_url": next_url, "dumps": json.dumps}
    )


async def _privacy_page(
    request: web.Request, principal: CustomerPrincipal, extra: dict[str, Any], status: int = 200
) -> web.Response:
    found = await privacy.list_requests(request.app[POOL], principal, None, LIST_LIMIT)
    now = _now()
    context: dict[str, Any] = {
        "requests": found,
        "overdue": {r.id for r in found if is_overdue(r.status, r.due_at, now)},
        "kinds": [k.value for k in RequestKind],
        "errors": {},
        "filed": None,
    }
    return page(request, "privacy.html", {**context, **extra}, status=status)


async def privacy_page(request: web.Request) -> web.Response:
    principal = await require_customer(request)
    if not principal.is_user:
        raise Forbidden("for people of an account")
    return await _privacy_page(request, principal, {})


async def file_request(request: web.Request) -> web.Response:
    fields = await posted(request)
    principal = await require_customer(request)
    try:
        body = validate(
            PrivacyRequestCreate,
            {"kind": fields.get("kind", ""), "details": fields.get("details", "")},
        )
        filed = await privacy.file_request(
            request.app[POOL],
            principal,
            kind=RequestKind(body.kind),
            details=body.details,
            now=_now(),
        )
    except InvalidInput as exc:
        return await _privacy_page(request, principal, {"errors": errors_of(exc)}, status=422)
    return await _privacy_page(request, principal, {"filed": filed}, status=201)


async def export(request: web.Request) -> web.Response:
    """D1: the machine-readable copy, as the API's GET /v1/me/export (audited there)."""
    principal = await require_customer(request)
    document = await access_copy.export_subject(
        request.app[POOL],
        principal,
        region=request.app[SETTINGS].data_region,  # the one database's
        stores=store_descriptions(request.app),
        now=_now(),
    )
    return web.json_response(
        document,
        headers={"Content-Disposition": 'attachment; filename="personal-data.json"'},
    )


ROUTES = [
    ("GET", "/keys", keys_page),
    ("POST", "/keys", create_key),
    ("POST", "/keys/{id}/revoke", revoke_key),
    ("GET", "/members", members_page),
    ("POST", "/members", invite),
    ("POST", "/members/{id}/role", change_member),
    ("POST", "/members/{id}/remove", remove_member),
    ("GET", "/settings", settings_page),
    ("POST", "/settings/account", save_account),
    ("POST", "/settings/preferences", save_preferences),
    ("POST", "/settings/webhook-secret", rotate_secret),
    ("GET", "/audit", audit_page),
    ("GET", "/privacy", privacy_page),
    ("POST", "/privacy", file_request),
    ("GET", "/privacy/export", export),
]
