"""Rendering a page: the template environment, the language, and the headers every page
carries (API.md "Web portal").

Templates are read and compiled once at start-up, off the event loop, and never
looked up on disk again. Each page renders inside `speaking(language)`, so the
one catalogue answers in the person's language: their own choice (a cookie set
by the language switch and at sign-in from their profile), else the browser's
`Accept-Language`, else English.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from telephony.domain.roles import CustomerPrincipal, StaffPrincipal, StaffRole
from telephony.i18n import LANGUAGE_NAMES, LANGUAGES, N_, negotiate, speaking
from telephony.web.appkeys import CATALOGUE, SETTINGS
from telephony.web.portal.session import (
    CSRF_FIELD,
    PORTAL_PRINCIPAL,
    cookie_name,
    csrf_token,
    remember_anonymous_csrf,
    secure,
)

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
LANGUAGE_COOKIE = "telephony_lang"

# No inline script or style anywhere: the CSP says so, and axe runs under it in the tests.
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "media-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


SOURCES: web.AppKey[dict[str, str]] = web.AppKey("portal_template_sources")
# The portal's own CSS and JavaScript, read once at start-up: a few kilobytes, served
# from memory with a strong ETag (no file lookups while serving, no path to traverse).
ASSETS: web.AppKey[dict[str, tuple[bytes, str, str]]] = web.AppKey("portal_assets")
_TYPES = {".css": "text/css", ".js": "text/javascript"}


class _CompiledOnce(jinja2.BytecodeCache):
    """The templates' compiled code, kept for the life of the process: an application made
    again in the same process (the tests make one per test) loads it in 5 ms instead of
    compiling every template anew (190 ms). Jinja checks each entry against its source's
    checksum, so an edited template is compiled again."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self._code[bucket.key] = bucket.bytecode_to_string()


_COMPILED = _CompiledOnce()


def setup(app: web.Application) -> None:
    sources: dict[str, str] = {}
    app[SOURCES] = sources
    app[ASSETS] = {}
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.DictLoader(sources),
        bytecode_cache=_COMPILED,
        autoescape=True,
        auto_reload=False,
        undefined=jinja2.StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    app.on_startup.append(_load_templates)


async def _load_templates(app: web.Application) -> None:
    env = aiohttp_jinja2.get_env(app)
    catalogue = app[CATALOGUE]
    env.install_gettext_callables(  # type: ignore[attr-defined]
        catalogue.gettext, catalogue.ngettext, newstyle=True
    )
    env.filters["when"] = catalogue.format_time

    def label(value: str) -> str:
        """A state or reason shown in words: its translation, else itself with spaces."""
        shown = catalogue.gettext(value)
        return shown.replace("_", " ") if shown == value else shown

    env.filters["label"] = label
    env.globals["LANGUAGES"] = [(code, LANGUAGE_NAMES[code]) for code in LANGUAGES]
    env.globals["CSRF_FIELD"] = CSRF_FIELD

    sources, assets = app[SOURCES], app[ASSETS]

    def read_and_compile() -> None:
        for path in sorted(TEMPLATES.rglob("*.html")):
            sources[str(path.relative_to(TEMPLATES))] = path.read_text("utf-8")
        for name in sources:
            env.get_template(name)
        for path in sorted(STATIC.iterdir()):
            if path.suffix in _TYPES:
                body = path.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
                assets[path.name] = (body, _TYPES[path.suffix], etag)

    await asyncio.to_thread(read_and_compile)


def language_of(request: web.Request) -> str:
    choice = request.cookies.get(cookie_name(request.app[SETTINGS], LANGUAGE_COOKIE))
    return negotiate(request.headers.get("Accept-Language"), choice)


def remember_language(response: web.StreamResponse, request: web.Request, language: str) -> None:
    settings = request.app[SETTINGS]
    response.set_cookie(
        cookie_name(settings, LANGUAGE_COOKIE),
        language,
        path="/",
        max_age=365 * 24 * 3600,
        httponly=True,
        samesite="Strict",
        secure=secure(settings),
    )


def _nav(principal: object) -> list[tuple[str, str]]:
    if isinstance(principal, CustomerPrincipal):
        items = [("/calls", N_("Calls")), ("/recordings", N_("Recordings"))]
        if principal.is_owner:
            items += [
                ("/keys", N_("API keys")),
                ("/members", N_("Members")),
                ("/settings", N_("Settings")),
                ("/audit", N_("Audit trail")),
            ]
        else:
            items.append(("/settings", N_("Settings")))
        items.append(("/privacy", N_("Privacy")))
        return items
    if isinstance(principal, StaffPrincipal):
        items = []
        if principal.holds(StaffRole.SUPPORT):
            items += [
                ("/support", N_("Consent look-up")),
                ("/support/privacy-requests", N_("Privacy requests")),
            ]
        if principal.holds(StaffRole.SECURITY_ADMIN):
            items.append(("/security/log", N_("Security log")))
        items.append(("/staff/access", N_("Staff access")))
        return items
    return []


def page(
    request: web.Request,
    template: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
) -> web.Response:
    """Render `template` for this request, in its language, with the page headers."""
    principal = request.get(PORTAL_PRINCIPAL)
    language = language_of(request)
    with speaking(language):
        full = {
            "me": principal,
            "nav": _nav(principal),
            "path": request.path,
            "csrf": csrf_token(request),
            "lang": language,
            **(context or {}),
        }
        response = aiohttp_jinja2.render_template(template, request, full, status=status)
    for name, value in PAGE_HEADERS.items():
        response.headers[name] = value
    response.headers["Content-Language"] = language
    response.headers["Vary"] = "Cookie, Accept-Language"
    remember_anonymous_csrf(request, response)
    return response


async def asset(request: web.Request) -> web.Response:
    """/static/{name}: the same for everyone, so caches may keep it for an hour."""
    found = request.app[ASSETS].get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    body, content_type, etag = found
    headers = {"ETag": etag, "Cache-Control": "public, max-age=3600"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)
