"""Signed receipts and the keys that verify them (API.md "Signed receipts")."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from telephony.domain.roles import CustomerPrincipal, Scope
from telephony.usecases import receipts
from telephony.usecases.receipts import Signed
from telephony.web.appkeys import KEYS, POOL
from telephony.web.auth import require_scope
from telephony.web.inputs import path_id
from telephony.web.routes import ANYONE, Route

JWKS_PATH = "/.well-known/telephony-keys.json"


async def signing_keys(request: web.Request) -> web.Response:
    """Public: whoever holds a receipt checks it with these, without an account."""
    found = await receipts.jwks(request.app[POOL], request.app[KEYS], datetime.now(UTC))
    return web.json_response(found, content_type="application/jwk-set+json")


async def signed_consent(request: web.Request, principal: CustomerPrincipal) -> Signed:
    """The receipt of the consent event the path names (the API's and the portal's)."""
    return await receipts.consent_receipt(
        request.app[POOL],
        request.app[KEYS],
        principal,
        path_id(request),
        path_id(request, "event_id"),
        datetime.now(UTC),
    )


async def signed_deletion(request: web.Request, principal: CustomerPrincipal) -> Signed:
    """The receipt of the deleted recording the path names (the API's and the portal's)."""
    return await receipts.deletion_receipt(
        request.app[POOL], request.app[KEYS], principal, path_id(request), datetime.now(UTC)
    )


async def consent_receipt(request: web.Request) -> web.Response:
    principal = await require_scope(request, Scope.CALLS)
    return web.json_response((await signed_consent(request, principal)).as_json())


async def deletion_receipt(request: web.Request) -> web.Response:
    principal = await require_scope(request, Scope.RECORDINGS_READ)
    return web.json_response((await signed_deletion(request, principal)).as_json())


ROUTES = [
    Route(
        "GET",
        JWKS_PATH,
        signing_keys,
        "The service's receipt-signing public keys, every one ever used (JWKS, RFC 7517)",
        ANYONE,
        None,
        {200: "JWK set"},
        "receipts",
        produces="application/jwk-set+json",
    ),
    Route(
        "GET",
        "/v1/calls/{id}/consents/{event_id}/receipt",
        consent_receipt,
        "A consent event's receipt: a detached EdDSA JWS over what it states",
        "calls",
        None,
        {200: "receipt", 404: "not-found: no such call, or no such event on it"},
        "receipts",
    ),
    Route(
        "GET",
        "/v1/recordings/{id}/deletion-receipt",
        deletion_receipt,
        "A deleted recording's receipt: deleted when, its key destroyed (crypto-shredding)",
        "recordings:read",
        None,
        {200: "receipt", 404: "not-found: no such recording, or it is not deleted"},
        "receipts",
    ),
]
