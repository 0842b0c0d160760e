"""The portal's receipts: a consent event's and a deleted recording's, shown and downloaded.

The same signed documents as the API's (API.md "Signed receipts"): the page shows what a
receipt states, and its download is the very JSON the API answers, signature included,
for the customer to keep and hand over.
"""

from __future__ import annotations

from aiohttp import web

from telephony.domain.errors import Forbidden
from telephony.domain.roles import Scope
from telephony.usecases.receipts import Signed
from telephony.web.api.receipts import JWKS_PATH, signed_consent, signed_deletion
from telephony.web.inputs import path_id
from telephony.web.portal.render import page
from telephony.web.portal.session import require_customer


async def _consent(request: web.Request) -> Signed:
    return await signed_consent(request, await require_customer(request))


async def _deletion(request: web.Request) -> Signed:
    principal = await require_customer(request)
    if not principal.may(Scope.RECORDINGS_READ):
        raise Forbidden("your role does not read recordings")
    return await signed_deletion(request, principal)


def _shown(request: web.Request, signed: Signed, download: str) -> web.Response:
    return page(
        request,
        "receipt.html",
        {"signed": signed, "download": download, "jwks": JWKS_PATH},
    )


def _file(signed: Signed, name: str) -> web.Response:
    return web.json_response(
        signed.as_json(),
        headers={"Content-Disposition": f'attachment; filename="{name}.json"'},
    )


async def consent_page(request: web.Request) -> web.Response:
    return _shown(request, await _consent(request), f"{request.path}.json")


async def consent_file(request: web.Request) -> web.Response:
    return _file(await _consent(request), f"consent-receipt-{path_id(request, 'event_id')}")


async def deletion_page(request: web.Request) -> web.Response:
    return _shown(request, await _deletion(request), f"{request.path}.json")


async def deletion_file(request: web.Request) -> web.Response:
    return _file(await _deletion(request), f"deletion-receipt-{path_id(request)}")


ROUTES = [
    ("GET", "/calls/{id}/consents/{event_id}/receipt", consent_page),
    ("GET", "/calls/{id}/consents/{event_id}/receipt.json", consent_file),
    ("GET", "/recordings/{id}/deletion-receipt", deletion_page),
    ("GET", "/recordings/{id}/deletion-receipt.json", deletion_file),
]
