"""Signup, sessions, profile, account, members and API keys (API.md "Accounts and users")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AnyHttpUrl, EmailStr, Field, StringConstraints, field_validator

from storage import accounts
from telephony.delivery.ssrf import check_webhook_url
from telephony.domain.errors import InvalidInput
from telephony.domain.roles import CustomerRole, Scope
from telephony.usecases import identity
from telephony.web.appkeys import HASHER, POOL, SETTINGS
from telephony.web.auth import authenticate, client_of, require_customer_user, require_owner
from telephony.web.spec import Body, Route, iso, page_of, read_body, read_page

# Field types. Lengths bound every string: 254 is RFC 5321's limit for an address.
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Address = Annotated[str, StringConstraints(min_length=1, max_length=500)]
Vat = Annotated[str, StringConstraints(min_length=2, max_length=32)]
Email = Annotated[EmailStr, StringConstraints(max_length=254)]
# S1: at least 12 characters; the upper bound keeps Argon2 input sane.
Password = Annotated[str, StringConstraints(min_length=12, max_length=1024, strip_whitespace=False)]
Role = Literal["owner", "member"]


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
        "role": user.role,
        "account_id": user.account_id,
        "status": "active" if user.password_hash else "invited",
        "created_at": iso(user.created_at),
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


def render_key(key: accounts.ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "scopes": key.scopes,
        "token_prefix": key.token_prefix,
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at),
    }


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
    body = await read_body(request, SignupBody)
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
        now=_now(),
    )
    return _json(
        {
            "account": {"id": result.account.id, "name": result.account.name},
            "user": {"id": result.user.id, "email": result.user.email, "role": result.user.role},
        },
        201,
    )


class LoginBody(Body):
    # Plain strings, not EmailStr: a malformed e-mail is just a wrong credential,
    # and must be logged and throttled like one.
    email: Annotated[str, StringConstraints(min_length=1, max_length=254)]
    password: Annotated[
        str, StringConstraints(min_length=1, max_length=1024, strip_whitespace=False)
    ]


async def create_session(request: web.Request) -> web.Response:
    body = await read_body(request, LoginBody)
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


class ProfilePatch(Body):
    name: Name | None = None
    email: Email | None = None
    postal_address: Address | None = None
    vat_number: Vat | None = None


def _changes(body: Body, nullable: set[str]) -> dict[str, Any]:
    """The fields the client sent; null clears only where `nullable` allows it."""
    changes = body.model_dump(exclude_unset=True)
    bad = [k for k, v in changes.items() if v is None and k not in nullable]
    if bad:
        raise InvalidInput(
            "these fields cannot be cleared",
            errors=[{"field": k, "message": "may not be null"} for k in bad],
        )
    if not changes:
        raise InvalidInput("send at least one field to change")
    return changes


async def get_me(request: web.Request) -> web.Response:
    principal = await require_customer_user(request)
    async with request.app[POOL].acquire() as conn:
        user = await accounts.get_user(conn, principal.id)
    return _json(render_user(user))


async def patch_me(request: web.Request) -> web.Response:
    principal = await require_customer_user(request)
    body = await read_body(request, ProfilePatch)
    changes = _changes(body, nullable={"vat_number", "postal_address"})
    user = await identity.update_profile(request.app[POOL], principal, changes, _now())
    return _json(render_user(user))


# -- account ---------------------------------------------------------------


class AccountPatch(Body):
    name: Name | None = None
    recording_retention_days: Annotated[int, Field(ge=1, le=3650)] | None = None
    processing_restricted: bool | None = None
    webhook_url: Annotated[AnyHttpUrl, Field()] | None = None

    @field_validator("webhook_url", mode="before")
    @classmethod
    def _bounded(cls, value: object) -> object:
        if isinstance(value, str) and len(value) > 2000:
            raise ValueError("at most 2000 characters")
        return value


async def get_account(request: web.Request) -> web.Response:
    principal = await require_owner(request)
    async with request.app[POOL].acquire() as conn:
        account = await accounts.get_account(conn, principal.account_id or "")
    return _json(render_account(account))


async def patch_account(request: web.Request) -> web.Response:
    principal = await require_owner(request)
    body = await read_body(request, AccountPatch)
    changes = _changes(body, nullable={"recording_retention_days", "webhook_url"})
    if changes.get("webhook_url") is not None:
        changes["webhook_url"] = str(changes["webhook_url"])
        # SSRF guard at registration; delivery checks again (telephony/webhooks.py).
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


class UserPatch(Body):
    name: Name | None = None
    role: Role | None = None


class InvitationAccept(Body):
    token: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    password: Password


async def create_user(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    body = await read_body(request, UserCreate)
    invitation = await identity.invite_user(
        request.app[POOL],
        request.app[SETTINGS],
        owner,
        email=body.email,
        name=body.name,
        role=body.role,
        now=_now(),
    )
    rendered = render_user(invitation.user)
    rendered["invitation"] = {
        "token": invitation.token,
        "expires_at": iso(invitation.expires_at),
    }
    return _json(rendered, 201)


async def accept_invitation(request: web.Request) -> web.Response:
    body = await read_body(request, InvitationAccept)
    user = await identity.accept_invitation(
        request.app[POOL],
        request.app[HASHER],
        token=body.token,
        password=body.password,
        now=_now(),
    )
    return _json(render_user(user))


async def list_users(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    page = read_page(request)
    async with request.app[POOL].acquire() as conn:
        users = await accounts.list_users(
            conn, owner.account_id or "", after=page.after, limit=page.limit + 1
        )
    return _json(page_of(users, page, render_user))


async def patch_user(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    body = await read_body(request, UserPatch)
    changes = _changes(body, nullable=set())
    user = await identity.change_user(
        request.app[POOL], owner, request.match_info["id"], changes, _now()
    )
    return _json(render_user(user))


async def delete_user(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    await identity.remove_user(request.app[POOL], owner, request.match_info["id"], _now())
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
        request.app[POOL], owner, name=body.name, scopes=list(body.scopes), now=_now()
    )
    rendered = render_key(created.key)
    rendered["token"] = created.token  # shown once, never again
    return _json(rendered, 201)


async def list_api_keys(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    page = read_page(request)
    async with request.app[POOL].acquire() as conn:
        keys = await accounts.list_api_keys(
            conn, owner.account_id or "", after=page.after, limit=page.limit + 1
        )
    return _json(page_of(keys, page, render_key))


async def delete_api_key(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    await identity.revoke_api_key(request.app[POOL], owner, request.match_info["id"], _now())
    return web.Response(status=204)


_ = (Scope, CustomerRole)  # the literals above mirror these enums; tests check they agree

ROUTES = [
    Route(
        "POST",
        "/v1/signup",
        signup,
        "Create an account and its owner",
        "anyone",
        SignupBody,
        {201: "account and owner created", 409: "email-taken", 422: "validation-failed"},
        "accounts",
    ),
    Route(
        "POST",
        "/v1/sessions",
        create_session,
        "Log in",
        "anyone",
        LoginBody,
        {201: "session token", 401: "invalid-credentials", 429: "too-many-attempts"},
        "accounts",
    ),
    Route(
        "DELETE",
        "/v1/sessions/current",
        delete_session,
        "Log out",
        "user",
        None,
        {204: "logged out", 401: "unauthenticated"},
        "accounts",
    ),
    Route(
        "POST",
        "/v1/invitations/accept",
        accept_invitation,
        "Set a password with an invitation",
        "anyone",
        InvitationAccept,
        {200: "user activated", 401: "invalid-invitation"},
        "accounts",
    ),
    Route("GET", "/v1/me", get_me, "Your profile", "user", None, {200: "profile"}, "accounts"),
    Route(
        "PATCH",
        "/v1/me",
        patch_me,
        "Rectify your profile (D2)",
        "user",
        ProfilePatch,
        {200: "profile", 409: "email-taken"},
        "accounts",
    ),
    Route(
        "GET",
        "/v1/account",
        get_account,
        "The account",
        "owner",
        None,
        {200: "account"},
        "accounts",
    ),
    Route(
        "PATCH",
        "/v1/account",
        patch_account,
        "Change the account",
        "owner",
        AccountPatch,
        {200: "account", 422: "validation-failed (webhook_url not a public http(s) address)"},
        "accounts",
    ),
    Route(
        "POST",
        "/v1/users",
        create_user,
        "Invite a user",
        "owner",
        UserCreate,
        {201: "user with a one-time invitation token", 409: "email-taken"},
        "users",
    ),
    Route(
        "GET",
        "/v1/users",
        list_users,
        "List users",
        "owner",
        None,
        {200: "users"},
        "users",
        query=(("limit", "1 to 200, default 50"), ("cursor", "next_cursor of the previous page")),
    ),
    Route(
        "PATCH",
        "/v1/users/{id}",
        patch_user,
        "Change a user's name or role",
        "owner",
        UserPatch,
        {200: "user", 404: "not-found", 409: "last-owner"},
        "users",
    ),
    Route(
        "DELETE",
        "/v1/users/{id}",
        delete_user,
        "Delete a user",
        "owner",
        None,
        {204: "deleted", 404: "not-found", 409: "last-owner"},
        "users",
    ),
    Route(
        "POST",
        "/v1/api-keys",
        create_api_key,
        "Create an API key (token shown once)",
        "owner",
        ApiKeyCreate,
        {201: "key with its token"},
        "api-keys",
    ),
    Route(
        "GET",
        "/v1/api-keys",
        list_api_keys,
        "List API keys",
        "owner",
        None,
        {200: "keys"},
        "api-keys",
        query=(("limit", "1 to 200"), ("cursor", "paging cursor")),
    ),
    Route(
        "DELETE",
        "/v1/api-keys/{id}",
        delete_api_key,
        "Revoke an API key",
        "owner",
        None,
        {204: "revoked", 404: "not-found"},
        "api-keys",
    ),
]
