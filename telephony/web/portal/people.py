"""Pages anyone reaches: sign in and out, sign up, password reset, invitations, the
language switch and the policy (P1). They call identity's use cases, as the API does."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from telephony.domain.errors import (
    EmailTaken,
    InvalidCredentials,
    InvalidInput,
    InvitationInvalid,
)
from telephony.domain.roles import CustomerPrincipal, StaffPrincipal, StaffRole
from telephony.i18n import LANGUAGES, N_, speaking
from telephony.usecases import identity, password_resets, policy
from telephony.web.api.accounts import InvitationAccept, ResetConfirm, SignupBody
from telephony.web.appkeys import CATALOGUE, HASHER, KEYS, POOL, SETTINGS
from telephony.web.auth import client_of
from telephony.web.portal.forms import checked, errors_of, posted, validate
from telephony.web.portal.render import language_of, page, remember_language
from telephony.web.portal.session import (
    end_session,
    session_token,
    signed_in,
    start_session,
)


def _now() -> datetime:
    return datetime.now(UTC)


def landing(principal: object) -> str:
    """Where a person lands after signing in (API.md): customers /calls, staff /support,
    a security_admin /security/log."""
    if isinstance(principal, StaffPrincipal):
        return "/security/log" if principal.role is StaffRole.SECURITY_ADMIN else "/support"
    return "/calls"


def _local(target: str | None) -> str | None:
    """Only a path on this site: never `//evil.example` or `https://…` (open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    if any(ord(c) < 0x21 for c in target):
        return None
    return target


def _t(request: web.Request, message: str) -> str:
    with speaking(language_of(request)):
        return request.app[CATALOGUE].gettext(message)


def _start(request: web.Request, response: web.StreamResponse, token: str) -> None:
    settings = request.app[SETTINGS]
    start_session(response, settings, token, settings.session_ttl_s)


async def home(request: web.Request) -> web.StreamResponse:
    principal = await signed_in(request)
    raise web.HTTPSeeOther(landing(principal) if principal else "/login")


async def login_form(request: web.Request) -> web.Response:
    principal = await signed_in(request)
    if principal is not None:
        raise web.HTTPSeeOther(landing(principal))
    notices = {
        "signed-out": N_("You are signed out."),
        "password-changed": N_("Your password is changed. Sign in with it."),
        "activated": N_("Your account is active. Sign in."),
    }
    shown = notices.get(request.query.get("notice", ""))
    return page(
        request,
        "login.html",
        {
            "next": _local(request.query.get("next")) or "",
            "email": "",
            "errors": {},
            "message": _t(request, shown) if shown else None,
            "message_kind": "info",
        },
    )


async def login(request: web.Request) -> web.StreamResponse:
    fields = await posted(request)
    email, password = fields.get("email", ""), fields.get("password", "")
    context: dict[str, Any] = {"next": _local(fields.get("next")) or "", "email": email}
    if not email or not password or len(email) > 254 or len(password) > 1024:
        context.update(errors={}, message=_t(request, N_("Enter your e-mail and password.")))
        return page(request, "login.html", {**context, "message_kind": "error"}, status=422)
    try:
        result = await identity.login(
            request.app[POOL],
            request.app[SETTINGS],
            request.app[HASHER],
            email=email,
            password=password,
            client=client_of(request),
            now=_now(),
        )
    except InvalidCredentials:
        context.update(errors={}, message=_t(request, N_("E-mail or password is wrong.")))
        return page(request, "login.html", {**context, "message_kind": "error"}, status=401)
    principal = await identity.authenticate(request.app[POOL], result.token, _now())
    response = web.HTTPSeeOther(_local(fields.get("next")) or landing(principal))
    start_session(
        response, request.app[SETTINGS], result.token, request.app[SETTINGS].session_ttl_s
    )
    if result.user.language in LANGUAGES:
        remember_language(response, request, result.user.language)
    raise response


async def logout_page(request: web.Request) -> web.Response:
    await signed_in(request)
    return page(request, "logout.html")


async def logout(request: web.Request) -> web.StreamResponse:
    await posted(request)
    principal = await signed_in(request)
    if principal is not None:
        # Ends the session on the server: the cookie's token stops working everywhere.
        await identity.logout(request.app[POOL], principal, client_of(request), _now())
    response = web.HTTPSeeOther("/login?notice=signed-out")
    end_session(response, request.app[SETTINGS])
    raise response


SIGNUP_FIELDS = ("account_name", "name", "email", "postal_address", "vat_number")


async def signup_form(request: web.Request) -> web.Response:
    blank: dict[str, Any] = dict.fromkeys(SIGNUP_FIELDS, "")
    blank.update(accept_terms=False, age_confirmed=False)
    return page(request, "signup.html", {"form": blank, "errors": {}, "message": None})


async def signup(request: web.Request) -> web.StreamResponse:
    fields = await posted(request)
    form: dict[str, Any] = {k: fields.get(k, "").strip() for k in SIGNUP_FIELDS}
    form["accept_terms"], form["age_confirmed"] = (
        checked(fields, "accept_terms"),
        checked(fields, "age_confirmed"),
    )
    data = {
        **form,
        "password": fields.get("password", ""),
        "vat_number": form["vat_number"] or None,
    }
    try:
        body = validate(SignupBody, data)
        await identity.signup(
            request.app[POOL],
            request.app[SETTINGS],
            request.app[HASHER],
            account_name=body.account_name,
            name=body.name,
            email=body.email,
            password=body.password,
            postal_address=body.postal_address,
            vat_number=body.vat_number,
            client=client_of(request),
            now=_now(),
        )
        result = await identity.login(
            request.app[POOL],
            request.app[SETTINGS],
            request.app[HASHER],
            email=body.email,
            password=body.password,
            client=client_of(request),
            now=_now(),
        )
    except InvalidInput as exc:
        message = _t(request, N_("Some fields need attention."))
        return page(
            request,
            "signup.html",
            {"form": form, "errors": errors_of(exc), "message": message},
            status=422,
        )
    except EmailTaken:
        errors = {"email": _t(request, N_("An account with this e-mail address exists."))}
        message = _t(request, N_("Some fields need attention."))
        return page(
            request, "signup.html", {"form": form, "errors": errors, "message": message}, status=409
        )
    response = web.HTTPSeeOther("/calls")
    start_session(
        response, request.app[SETTINGS], result.token, request.app[SETTINGS].session_ttl_s
    )
    raise response


async def reset_form(request: web.Request) -> web.Response:
    token = request.query.get("token")
    return page(
        request,
        "password_reset.html",
        {
            "token": token if token and len(token) <= 200 else None,
            "email": "",
            "errors": {},
            "sent": False,
            "message": None,
            "message_kind": "info",
        },
    )


async def reset(request: web.Request) -> web.StreamResponse:
    fields = await posted(request)
    context: dict[str, Any] = {"token": None, "email": "", "errors": {}, "sent": False}
    if "token" in fields:
        context["token"] = fields["token"][:200]
        try:
            body = validate(
                ResetConfirm, {"token": fields["token"], "password": fields.get("password", "")}
            )
            await password_resets.confirm_reset(
                request.app[POOL],
                request.app[SETTINGS],
                request.app[HASHER],
                token=body.token,
                password=body.password,
                client=client_of(request),
                now=_now(),
            )
        except InvalidInput as exc:
            context.update(errors=errors_of(exc), message=None, message_kind="error")
            return page(request, "password_reset.html", context, status=422)
        except InvalidCredentials:
            message = N_("This link is unknown, used or expired. Ask for a new one below.")
            context.update(token=None, message=_t(request, message), message_kind="error")
            return page(request, "password_reset.html", context, status=401)
        response = web.HTTPSeeOther("/login?notice=password-changed")
        if session_token(request) is not None:
            end_session(response, request.app[SETTINGS])
        raise response
    email = fields.get("email", "").strip()
    if not email or len(email) > 254 or not email.isprintable():
        context.update(
            email=email[:254],
            errors={"email": _t(request, N_("Enter your e-mail address."))},
            message=None,
            message_kind="error",
        )
        return page(request, "password_reset.html", context, status=422)
    await password_resets.request_reset(
        request.app[POOL],
        request.app[SETTINGS],
        request.app[KEYS],
        email=email,
        client=client_of(request),
        now=_now(),
    )
    # The same answer whether or not the address has an account (no enumeration).
    message = N_("If an account uses this address, a link is on its way. It works for 30 minutes.")
    context.update(sent=True, message=_t(request, message), message_kind="info")
    return page(request, "password_reset.html", context, status=202)


async def invitation_form(request: web.Request) -> web.Response:
    token = (request.query.get("token") or "")[:200]
    return page(request, "invitation.html", {"token": token, "errors": {}, "message": None})


async def accept_invitation(request: web.Request) -> web.StreamResponse:
    fields = await posted(request)
    token = fields.get("token", "")[:200]
    try:
        body = validate(InvitationAccept, {"token": token, "password": fields.get("password", "")})
        await identity.accept_invitation(
            request.app[POOL],
            request.app[SETTINGS],
            request.app[HASHER],
            token=body.token,
            password=body.password,
            client=client_of(request),
            now=_now(),
        )
    except InvalidInput as exc:
        return page(
            request,
            "invitation.html",
            {"token": token, "errors": errors_of(exc), "message": None},
            status=422,
        )
    except InvitationInvalid:
        message = _t(request, N_("This invitation is unknown, used or expired. Ask for a new one."))
        return page(
            request,
            "invitation.html",
            {"token": token, "errors": {}, "message": message},
            status=401,
        )
    raise web.HTTPSeeOther("/login?notice=activated")


async def switch_language(request: web.Request) -> web.StreamResponse:
    fields = await posted(request)
    language = fields.get("language")
    if language not in LANGUAGES:
        raise InvalidInput("en or pl", errors=[{"field": "language", "message": "en or pl"}])
    response = web.HTTPSeeOther(_local(fields.get("next")) or "/")
    remember_language(response, request, language)
    principal = await signed_in(request)
    if isinstance(principal, CustomerPrincipal) and principal.is_user:
        # Saved in the profile too, so mail speaks the same language.
        await identity.update_profile(request.app[POOL], principal, {"language": language}, _now())
    raise response


async def policy_page(request: web.Request) -> web.Response:
    await signed_in(request)
    versions = await policy.versions(request.app[POOL])
    wanted = request.query.get("version")
    current = versions[0] if versions else None
    shown = next((v for v in versions if v.version == wanted), current)
    if wanted and shown is not None and shown.version != wanted:
        raise web.HTTPNotFound()
    return page(request, "policy.html", {"versions": versions, "current": current, "shown": shown})
