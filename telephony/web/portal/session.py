"""People's sessions in the portal: one cookie, CSRF tokens, and who is signed in.

The cookie holds the same session token the API hands out (`POST /v1/sessions`),
so sign-in, expiry, sign-out and the security log are one mechanism; only the
carrier differs. It is `HttpOnly`, `SameSite=Strict`, `Path=/`, and `Secure`
with the `__Host-` prefix whenever the public URL is https (API.md). It
authenticates portal pages only: `/v1/*` reads bearer tokens, never cookies.

CSRF (OWASP ASVS 4.2.2): every state-changing form carries a token derived
from the session token (SHA-256 under a fixed label), so a page on another
origin can neither read nor compute it; before sign-in, from a random
`csrf` cookie instead. A POST without the right token, or with a foreign
`Origin` (or `Sec-Fetch-Site: cross-site`), is refused with 403
`csrf-failed`, before any handler runs.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

from aiohttp import web

from telephony.domain.errors import CsrfFailed, Unauthenticated
from telephony.domain.roles import CustomerPrincipal, Principal, StaffPrincipal
from telephony.settings import Settings
from telephony.usecases import identity
from telephony.web.appkeys import POOL, SETTINGS

SESSION_COOKIE = "telephony_session"
CSRF_COOKIE = "telephony_csrf"
CSRF_FIELD = "csrf_token"
_MAX_COOKIE = 200

PORTAL_PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("portal_principal")


def secure(settings: Settings) -> bool:
    return (settings.public_url or "").startswith("https://")


def cookie_name(settings: Settings, base: str) -> str:
    return f"__Host-{base}" if secure(settings) else base


def _cookie(request: web.Request, base: str) -> str | None:
    value = request.cookies.get(cookie_name(request.app[SETTINGS], base))
    if value is None or not 0 < len(value) <= _MAX_COOKIE or not value.isascii():
        return None
    return value


def _set(
    response: web.StreamResponse, settings: Settings, base: str, value: str, **kw: object
) -> None:
    response.set_cookie(
        cookie_name(settings, base),
        value,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=secure(settings),
        **kw,  # type: ignore[arg-type]
    )


def start_session(response: web.StreamResponse, settings: Settings, token: str, ttl_s: int) -> None:
    _set(response, settings, SESSION_COOKIE, token, max_age=ttl_s)


def end_session(response: web.StreamResponse, settings: Settings) -> None:
    response.del_cookie(
        cookie_name(settings, SESSION_COOKIE),
        path="/",
        secure=secure(settings),
        httponly=True,
        samesite="Strict",
    )


def session_token(request: web.Request) -> str | None:
    return _cookie(request, SESSION_COOKIE)


async def signed_in(request: web.Request) -> Principal | None:
    """The person the cookie stands for, or None (no cookie, expired, signed out)."""
    cached: Principal | None = request.get(PORTAL_PRINCIPAL)
    if cached is not None:
        return cached
    token = session_token(request)
    if token is None or not token.startswith(identity.SESSION_PREFIX + "_"):
        return None
    try:
        principal = await identity.authenticate(request.app[POOL], token, datetime.now(UTC))
    except Unauthenticated:
        return None
    request[PORTAL_PRINCIPAL] = principal
    return principal


def login_redirect(request: web.Request) -> web.HTTPSeeOther:
    target = request.rel_url.path_qs
    return web.HTTPSeeOther(f"/login?next={quote(target, safe='')}")


async def require_person(request: web.Request) -> Principal:
    principal = await signed_in(request)
    if principal is None:
        raise login_redirect(request)
    return principal


async def require_customer(request: web.Request) -> CustomerPrincipal:
    principal = await require_person(request)
    if not isinstance(principal, CustomerPrincipal):
        raise web.HTTPSeeOther("/support")
    return principal


async def require_staff(request: web.Request) -> StaffPrincipal:
    principal = await require_person(request)
    if not isinstance(principal, StaffPrincipal):
        raise web.HTTPSeeOther("/calls")
    return principal


# -- CSRF --------------------------------------------------------------------------------


def _derive(label: bytes, secret: str) -> str:
    return hashlib.sha256(label + b"\0" + secret.encode()).hexdigest()


def csrf_token(request: web.Request) -> str:
    """The token this request's forms carry; makes the pre-sign-in cookie when needed."""
    token = session_token(request)
    if token is not None and request.get(PORTAL_PRINCIPAL) is not None:
        return _derive(b"telephony csrf session", token)
    anonymous = _cookie(request, CSRF_COOKIE) or request.get(_NEW_ANON)
    if anonymous is None:
        anonymous = secrets.token_urlsafe(32)
        request[_NEW_ANON] = anonymous
    return _derive(b"telephony csrf anonymous", anonymous)


_NEW_ANON: web.RequestKey[str] = web.RequestKey("portal_new_anonymous_csrf")


def remember_anonymous_csrf(request: web.Request, response: web.StreamResponse) -> None:
    """Set the pre-sign-in cookie a page's forms were made with, if this page made it."""
    fresh = request.get(_NEW_ANON)
    if fresh is not None:
        _set(response, request.app[SETTINGS], CSRF_COOKIE, fresh)


def _same_origin(request: web.Request, origin: str) -> bool:
    settings = request.app[SETTINGS]
    if settings.public_url is not None:
        public = urlsplit(settings.public_url)
        expected = f"{public.scheme}://{public.netloc}"
    else:
        expected = f"{request.scheme}://{request.host}"
    return hmac.compare_digest(origin.lower().encode(), expected.lower().encode())


async def check_csrf(request: web.Request, submitted: str | None) -> None:
    """Refuse a state change that did not come from our own page (403 csrf-failed)."""
    origin = request.headers.get("Origin")
    if origin is not None and not _same_origin(request, origin):
        raise CsrfFailed("the form was sent from another site")
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        raise CsrfFailed("the form was sent from another site")
    await signed_in(request)  # so the token is derived from the session when there is one
    expected = csrf_token(request)
    request.pop(_NEW_ANON, None)  # verifying never sets a cookie
    if not submitted or not hmac.compare_digest(submitted.encode(), expected.encode()):
        raise CsrfFailed("the form's security token is missing or wrong; reload the page")
