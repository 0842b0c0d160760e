"""Signup, sessions, profile, account, members and API keys (API.md "Accounts and users")."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from aiohttp import web
from pydantic import BeforeValidator, Field, StringConstraints, WithJsonSchema

from storage import accounts, credentials
from telephony.delivery.ssrf import check_webhook_url
from telephony.domain.errors import InvalidInput
from telephony.domain.formats import EMAIL_PATTERN, FREE_TEXT
from telephony.domain.roles import CustomerRole, Scope
from telephony.settings import REGION_PATTERN, Settings
from telephony.usecases import identity, password_resets
from telephony.web.appkeys import HASHER, KEYS, POOL, SETTINGS
from telephony.web.auth import (
    authenticate,
    client_of,
    require_customer_user,
    require_owner,
)
from telephony.web.inputs import (
    KEYSET_PAGING,
    Body,
    Email,
    Password,
    Patch,
    Token,
    iso,
    keyset_cursor,
    page,
    page_of,
    path_id,
    read_body,
    read_query,
    trimmed,
    whole,
)
from telephony.web.openapi import CHOICES
from telephony.web.routes import ANYONE, OWNER, USER, Route

Name = Annotated[str, trimmed(200)]
Address = Annotated[str, trimmed(500)]
Vat = Annotated[str, trimmed(32)]
Role = Literal["owner", "member"]
RetentionDays = Annotated[int, Field(ge=1, le=3650), BeforeValidator(whole)]
# Sign-in takes any string an e-mail field could hold: a malformed e-mail is just a
# wrong credential, logged and throttled like one.
LoginEmail = Annotated[str, StringConstraints(min_length=1, max_length=254, pattern=FREE_TEXT)]
LoginPassword = Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=FREE_TEXT)]
# A public http(s) URL: the SSRF guard decides what is reachable; this says what is a URL.
# A host name or IPv4 address (an IPv6 literal is refused: a host name serves IPv6 too),
# an optional port in range, a path of visible ASCII. The host's labels are 1 to 63
# characters, as the IDNA encoding the delivery client applies demands (an empty one, as
# in ".example" or "a..b", it refuses); a name's 253 in all is DNS's to refuse.
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
_LABEL = r"[A-Za-z0-9-]{1,63}"
WEBHOOK_URL_PATTERN = rf"^https?://{_LABEL}(\.{_LABEL})*\.?(:{_PORT})?(/[!-~]*)?$"
WebhookUrl = Annotated[
    str, StringConstraints(min_length=10, max_length=2000, pattern=WEBHOOK_URL_PATTERN)
]

# A data region: the shape here; which regions this deployment has, check_region (and the
# document lists exactly those, openapi.CHOICES).
DataRegion = Annotated[
    str,
    StringConstraints(pattern=REGION_PATTERN),
    WithJsonSchema({"type": "string", CHOICES: "data-regions"}),
]


def check_region(settings: Settings, changes: dict[str, Any]) -> None:
    """422 validation-failed unless a changed data_region is one this service has."""
    region = changes.get("data_region")
    names = settings.region_names()
    if region is not None and region not in names:
        message = f"not a data region of this service; one of: {', '.join(names)}"
        raise InvalidInput(
            f"data_region: {message}", errors=[{"field": "data_region", "message": message}]
        )


def _now() -> datetime:
    return datetime.now(UTC)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


def render_user(user: accounts.User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "postal_address": user.postal_address,
        "vat_number": user.vat_number,
        "role": user.role.value,
        "account_id": user.account_id,
        "status": "active" if user.password_hash else "invited",
        "created_at": iso(user.created_at),
        "language": user.language,
        "product_updates": user.product_updates,
    }


def render_account(account: accounts.Account) -> dict[str, Any]:
    return {
        "id": account.id,
        "name": account.name,
        "postal_address": account.postal_address,
        "vat_number": account.vat_number,
        "data_region": account.data_region,
        "recording_retention_days": account.recording_retention_days,
        "processing_restricted": account.processing_restricted,
        "webhook_url": account.webhook_url,
        "created_at": iso(account.created_at),
    }


def render_key(key: credentials.ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "scopes": [s.value for s in key.scopes],
        "token_prefix": key.token_prefix,
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at),
    }


async def _read_attempt(request: web.Request, model: type[Body], event: str) -> Any:
    """The body of a sign-in kind of attempt; a refused one is in the security log too (S2)."""
    try:
        return await read_body(request, model)
    except InvalidInput as exc:
        email = await _email_in(request)
        await identity.refused(
            request.app[POOL], client_of(request), event, exc.code, _now(), email
        )
        raise


async def _email_in(request: web.Request) -> str | None:
    """The e-mail a refused attempt named, when it is one (aiohttp keeps the body read)."""
    try:
        data = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None
    email = data.get("email") if isinstance(data, dict) else None
    if isinstance(email, str) and len(email) <= 254 and re.match(EMAIL_PATTERN, email):
        return email
    return None


# -- signup and sessions ---------------------------------------------------


class SignupBody(Body):
    account_name: Name
    name: Name
    email: Email
    password: Password
    postal_address: Address
    vat_number: Vat | None = None
    accept_terms: Literal[True]  # A1: registration with the user's consent
    age_confirmed: Literal[True]  # A2: a declaration of age, taken at face value


async def signup(request: web.Request) -> web.Response:
    body = await _read_attempt(request, SignupBody, "signup")
    result = await identity.signup(
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
    return _json(
        {
            "account": {"id": result.account.id, "name": result.account.name},
            "user": {
                "id": result.user.id,
                "email": result.user.email,
                "role": result.user.role.value,
            },
        },
        201,
    )


class LoginBody(Body):
    email: LoginEmail
    password: LoginPassword


async def create_session(request: web.Request) -> web.Response:
    body = await _read_attempt(request, LoginBody, "login")
    result = await identity.login(
        request.app[POOL],
        request.app[SETTINGS],
        request.app[HASHER],
        email=body.email,
        password=body.password,
        client=client_of(request),
        now=_now(),
    )
    return _json({"token": result.token, "expires_at": iso(result.expires_at)}, 201)


async def delete_session(request: web.Request) -> web.Response:
    principal = await authenticate(request)
    await identity.logout(request.app[POOL], principal, client_of(request), _now())
    return web.Response(status=204)


# -- profile ---------------------------------------------------------------


class ProfilePatch(Patch):
    NULLABLE = frozenset({"vat_number", "postal_address", "language"})

    name: Name | None = None
    email: Email | None = None
    postal_address: Address | None = None
    vat_number: Vat | None = None
    language: Literal["en", "pl"] | None = None  # null: follow the browser
    product_updates: bool | None = None  # policy and security mail are not optional


async def get_me(request: web.Request) -> web.Response:
    principal = await require_customer_user(request)
    user = await identity.get_profile(request.app[POOL], principal)
    return _json(render_user(user))


async def patch_me(request: web.Request) -> web.Response:
    principal = await require_customer_user(request)
    body = await read_body(request, ProfilePatch)
    user = await identity.update_profile(request.app[POOL], principal, body.changes(), _now())
    return _json(render_user(user))


# -- account ---------------------------------------------------------------


class AccountPatch(Patch):
    NULLABLE = frozenset({"recording_retention_days", "webhook_url"})

    name: Name | None = None
    recording_retention_days: RetentionDays | None = None
    processing_restricted: bool | None = None
    webhook_url: WebhookUrl | None = None
    # Where recordings started from now on are kept; earlier ones stay where they are.
    data_region: DataRegion | None = None


async def get_account(request: web.Request) -> web.Response:
    principal = await require_owner(request)
    account = await identity.get_account(request.app[POOL], principal)
    return _json(render_account(account))


async def patch_account(request: web.Request) -> web.Response:
    principal = await require_owner(request)
    body = await read_body(request, AccountPatch)
    changes = body.changes()
    check_region(request.app[SETTINGS], changes)
    if changes.get("webhook_url") is not None:
        # SSRF guard at registration; delivery checks again (telephony/delivery/webhooks.py).
        await check_webhook_url(
            changes["webhook_url"], allow_private=request.app[SETTINGS].webhook_allow_private
        )
    account = await identity.update_account(request.app[POOL], principal, changes, _now())
    return _json(render_account(account))


# -- members ---------------------------------------------------------------


class UserCreate(Body):
    email: Email
    name: Name
    role: Role = "member"


class UserPatch(Patch):
    name: Name | None = None
    role: Role | None = None


class InvitationAccept(Body):
    token: Token
    password: Password


async def create_user(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    body = await read_body(request, UserCreate)
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
    rendered = render_user(invitation.user)
    # API.md: the invitation goes to the invitee by e-mail; the owner never sees its token.
    rendered["invitation"] = {"expires_at": iso(invitation.expires_at), "sent_by": "email"}
    return _json(rendered, 201)


async def accept_invitation(request: web.Request) -> web.Response:
    body = await _read_attempt(request, InvitationAccept, "invitation")
    user = await identity.accept_invitation(
        request.app[POOL],
        request.app[SETTINGS],
        request.app[HASHER],
        token=body.token,
        password=body.password,
        client=client_of(request),
        now=_now(),
    )
    return _json(render_user(user))


class ResetRequest(Body):
    email: LoginEmail  # any string: a malformed address simply has no account


class ResetConfirm(Body):
    token: Token
    password: Password


async def request_password_reset(request: web.Request) -> web.Response:
    """202 whatever the address: whether it has an account shows only in the security log."""
    body = await _read_attempt(request, ResetRequest, "password_reset")
    await password_resets.request_reset(
        request.app[POOL],
        request.app[SETTINGS],
        request.app[KEYS],
        email=body.email,
        client=client_of(request),
        now=_now(),
    )
    return _json({"status": "accepted"}, 202)


async def confirm_password_reset(request: web.Request) -> web.Response:
    body = await _read_attempt(request, ResetConfirm, "password_reset")
    user = await password_resets.confirm_reset(
        request.app[POOL],
        request.app[SETTINGS],
        request.app[HASHER],
        token=body.token,
        password=body.password,
        client=client_of(request),
        now=_now(),
    )
    return _json(render_user(user))


def _by_creation(item: accounts.User | credentials.ApiKey) -> str:
    return keyset_cursor(item.created_at, item.id)


async def list_users(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    paging = page(read_query(request, KEYSET_PAGING))
    users = await identity.list_users(request.app[POOL], owner, paging.after, paging.limit + 1)
    return _json(page_of(users, paging, render_user, _by_creation))


async def patch_user(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    user_id = path_id(request)
    body = await read_body(request, UserPatch)
    changes = body.changes()
    if "role" in changes:
        changes["role"] = CustomerRole(changes["role"])
    user = await identity.change_user(request.app[POOL], owner, user_id, changes, _now())
    return _json(render_user(user))


async def delete_user(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    await identity.remove_user(request.app[POOL], owner, path_id(request), _now())
    return web.Response(status=204)


# -- API keys --------------------------------------------------------------


class ApiKeyCreate(Body):
    name: Name
    scopes: Annotated[
        list[Literal["calls", "recordings:write", "recordings:read"]],
        Field(min_length=1, max_length=3),
    ]


async def create_api_key(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    body = await read_body(request, ApiKeyCreate)
    created = await identity.create_api_key(
        request.app[POOL], owner, name=body.name, scopes=[Scope(s) for s in body.scopes], now=_now()
    )
    rendered = render_key(created.key)
    rendered["token"] = created.token  # shown once, never again
    return _json(rendered, 201)


async def list_api_keys(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    paging = page(read_query(request, KEYSET_PAGING))
    keys = await identity.list_api_keys(request.app[POOL], owner, paging.after, paging.limit + 1)
    return _json(page_of(keys, paging, render_key, _by_creation))


async def delete_api_key(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    await identity.revoke_api_key(request.app[POOL], owner, path_id(request), _now())
    return web.Response(status=204)


ROUTES = [
    Route(
        "POST",
        "/v1/signup",
        signup,
        "Create an account and its owner",
        ANYONE,
        SignupBody,
        {201: "account and owner created", 409: "email-taken"},
        "accounts",
        throttled=True,
    ),
    Route(
        "POST",
        "/v1/sessions",
        create_session,
        "Sign in",
        ANYONE,
        LoginBody,
        {201: "session token", 401: "invalid-credentials"},
        "accounts",
        throttled=True,
    ),
    Route(
        "DELETE",
        "/v1/sessions/current",
        delete_session,
        "Sign out",
        USER,
        None,
        {204: "signed out"},
        "accounts",
    ),
    Route(
        "POST",
        "/v1/invitations/accept",
        accept_invitation,
        "Set a password with an invitation",
        ANYONE,
        InvitationAccept,
        {200: "user activated", 401: "invalid-invitation"},
        "accounts",
        throttled=True,
    ),
    Route(
        "POST",
        "/v1/password-resets",
        request_password_reset,
        "Ask for a password-reset link by e-mail (always 202)",
        ANYONE,
        ResetRequest,
        {202: "accepted; a link is mailed when the address has an account"},
        "accounts",
        throttled=True,
    ),
    Route(
        "POST",
        "/v1/password-resets/confirm",
        confirm_password_reset,
        "Choose a new password with the link's token; every session ends",
        ANYONE,
        ResetConfirm,
        {200: "password changed", 401: "invalid-credentials"},
        "accounts",
        throttled=True,
    ),
    Route("GET", "/v1/me", get_me, "Your profile", USER, None, {200: "profile"}, "accounts"),
    Route(
        "PATCH",
        "/v1/me",
        patch_me,
        "Rectify your profile (D2)",
        USER,
        ProfilePatch,
        {200: "profile", 409: "email-taken"},
        "accounts",
    ),
    Route(
        "GET", "/v1/account", get_account, "The account", OWNER, None, {200: "account"}, "accounts"
    ),
    Route(
        "PATCH",
        "/v1/account",
        patch_account,
        "Change the account",
        OWNER,
        AccountPatch,
        {
            200: "account",
            422: "validation-failed (webhook_url not a public http(s) address, data_region"
            " not a region of this service)",
        },
        "accounts",
    ),
    Route(
        "POST",
        "/v1/users",
        create_user,
        "Invite a user",
        OWNER,
        UserCreate,
        {201: "user; the invitation was mailed to them", 409: "email-taken"},
        "users",
    ),
    Route(
        "GET",
        "/v1/users",
        list_users,
        "List users",
        OWNER,
        None,
        {200: "users"},
        "users",
        query=KEYSET_PAGING,
    ),
    Route(
        "PATCH",
        "/v1/users/{id}",
        patch_user,
        "Change a user's name or role",
        OWNER,
        UserPatch,
        {200: "user", 409: "last-owner"},
        "users",
    ),
    Route(
        "DELETE",
        "/v1/users/{id}",
        delete_user,
        "Delete a user",
        OWNER,
        None,
        {204: "deleted", 409: "last-owner"},
        "users",
    ),
    Route(
        "POST",
        "/v1/api-keys",
        create_api_key,
        "Create an API key (token shown once)",
        OWNER,
        ApiKeyCreate,
        {201: "key with its token"},
        "api-keys",
    ),
    Route(
        "GET",
        "/v1/api-keys",
        list_api_keys,
        "List API keys",
        OWNER,
        None,
        {200: "keys"},
        "api-keys",
        query=KEYSET_PAGING,
    ),
    Route(
        "DELETE",
        "/v1/api-keys/{id}",
        delete_api_key,
        "Revoke an API key",
        OWNER,
        None,
        {204: "revoked"},
        "api-keys",
    ),
]
