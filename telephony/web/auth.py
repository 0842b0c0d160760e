"""Bearer authentication and the role checks every handler starts with.

Order of refusals (API.md): no or bad token -> 401 `unauthenticated`;
authenticated but not allowed -> 403 `forbidden`; another account's
resource -> 404 from the handler's own tenant-scoped query.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from storage import accounts
from storage.ids import token_hash
from telephony.domain.errors import Forbidden, Unauthenticated
from telephony.domain.roles import Principal, Scope, StaffRole, scopes_for_customer_role
from telephony.usecases.identity import API_KEY_PREFIX, SESSION_PREFIX, Client
from telephony.web.appkeys import POOL, PRINCIPAL, SETTINGS

_MAX_TOKEN_CHARS = 200


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > _MAX_TOKEN_CHARS:
        raise Unauthenticated("send Authorization: Bearer <token>")
    return token


async def authenticate(request: web.Request) -> Principal:
    """The caller, looked up once per request by the hash of its token."""
    cached = request.get(PRINCIPAL)
    if cached is not None:
        return cached
    token = bearer_token(request)
    digest = token_hash(token)
    now = datetime.now(UTC)
    async with request.app[POOL].acquire() as conn:
        if token.startswith(SESSION_PREFIX + "_"):
            found = await accounts.find_session(conn, digest, now)
            if found is None:
                raise Unauthenticated("the token is unknown, expired or revoked")
            user = found.user
            principal = Principal(
                kind="user",
                id=user.id,
                account_id=user.account_id,
                role=user.role,
                scopes=scopes_for_customer_role(user.role) if user.account_id else frozenset(),
                session_id=found.session_id,
                email=user.email,
            )
        elif token.startswith(API_KEY_PREFIX + "_"):
            key = await accounts.find_api_key_by_hash(conn, digest)
            if key is None:
                raise Unauthenticated("the token is unknown, expired or revoked")
            await accounts.touch_api_key(conn, key.id, now)
            principal = Principal(
                kind="api_key",
                id=key.id,
                account_id=key.account_id,
                role=None,
                scopes=frozenset(key.scopes),
            )
        else:
            raise Unauthenticated("the token is unknown, expired or revoked")
    request[PRINCIPAL] = principal
    return principal


def principal_id(request: web.Request) -> str | None:
    """The caller's id when this request authenticated, for logs; never the token."""
    principal = request.get(PRINCIPAL)
    return principal.id if principal else None


async def require_customer_user(request: web.Request) -> Principal:
    """A person of a customer account (not an API key, not staff)."""
    principal = await authenticate(request)
    if not principal.is_customer_user:
        raise Forbidden("this route is for users of a customer account")
    return principal


async def require_owner(request: web.Request) -> Principal:
    principal = await require_customer_user(request)
    if not principal.is_owner:
        raise Forbidden("only an owner of the account may do this")
    return principal


async def require_scope(request: web.Request, scope: Scope) -> Principal:
    principal = await authenticate(request)
    if not principal.may(scope):
        raise Forbidden(f"this route needs the {scope.value} scope of a customer account")
    return principal


async def require_staff(request: web.Request, role: StaffRole) -> Principal:
    principal = await authenticate(request)
    if not principal.is_staff or principal.role != role:
        raise Forbidden(f"this route is for staff with the {role.value} role")
    return principal


def client_of(request: web.Request) -> Client:
    """Source address and user agent for the security log (S2)."""
    address = request.remote
    if request.app[SETTINGS].trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded:
            address = forwarded.split(",")[0].strip()[:64]
    agent = request.headers.get("User-Agent")
    return Client(address=address, user_agent=agent[:512] if agent else None)
