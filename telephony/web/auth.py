"""Bearer authentication, the role checks every handler starts with, and who is calling.

Order of refusals (API.md): no or bad token -> 401 `unauthenticated`;
authenticated but not allowed -> 403 `forbidden`; another account's
resource -> 404 from the use case's own tenant-scoped query.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

from aiohttp import web

from telephony.domain.errors import Forbidden, Unauthenticated
from telephony.domain.roles import (
    CustomerPrincipal,
    Principal,
    Scope,
    StaffPrincipal,
    StaffRole,
)
from telephony.usecases import identity
from telephony.usecases.identity import Client
from telephony.web.appkeys import POOL, PRINCIPAL, SETTINGS
from telephony.web.inputs import header_text

_MAX_TOKEN_CHARS = 200
_MAX_FORWARDED_HOPS = 20


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if (
        scheme.lower() != "bearer"
        or not token
        or len(token) > _MAX_TOKEN_CHARS
        or not token.isascii()
        or not token.isprintable()
    ):
        raise Unauthenticated("send Authorization: Bearer <token>")
    return token


async def authenticate(request: web.Request) -> Principal:
    """The caller, looked up once per request by the hash of its token."""
    cached: Principal | None = request.get(PRINCIPAL)
    if cached is not None:
        return cached
    principal = await identity.authenticate(
        request.app[POOL], bearer_token(request), datetime.now(UTC)
    )
    request[PRINCIPAL] = principal
    return principal


def principal_id(request: web.Request) -> str | None:
    """The caller's id when this request authenticated, for logs; never the token."""
    principal: Principal | None = request.get(PRINCIPAL)
    return principal.id if principal else None


async def require_customer(request: web.Request) -> CustomerPrincipal:
    principal = await authenticate(request)
    if not isinstance(principal, CustomerPrincipal):
        raise Forbidden("this route is for customer accounts")
    return principal


async def require_customer_user(request: web.Request) -> CustomerPrincipal:
    """A person of a customer account (not an API key, not staff)."""
    principal = await require_customer(request)
    if not principal.is_user:
        raise Forbidden("this route is for users of a customer account")
    return principal


async def require_owner(request: web.Request) -> CustomerPrincipal:
    principal = await require_customer_user(request)
    if not principal.is_owner:
        raise Forbidden("only an owner of the account may do this")
    return principal


async def require_scope(request: web.Request, scope: Scope) -> CustomerPrincipal:
    principal = await authenticate(request)
    if not isinstance(principal, CustomerPrincipal) or not principal.may(scope):
        raise Forbidden(f"this route needs the {scope.value} scope of a customer account")
    return principal


async def require_staff(request: web.Request, role: StaffRole) -> StaffPrincipal:
    principal = await authenticate(request)
    if not isinstance(principal, StaffPrincipal) or not principal.holds(role):
        raise Forbidden(f"this route is for staff with the {role.value} role")
    return principal


def client_address(request: web.Request) -> str | None:
    """The client's address: the peer, or behind trusted proxies the right-most hop they
    did not add (TELEPHONY_TRUSTED_PROXIES).

    Why right-most: every proxy appends the address it received from, so only
    the entries added by our own proxies can be trusted; the left-most is
    whatever the client chose to send.
    """
    peer = request.remote
    trusted = request.app[SETTINGS].trusted_proxies
    if not trusted or peer is None or not _within(peer, trusted):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")]
    for hop in reversed([h for h in hops if h][-_MAX_FORWARDED_HOPS:]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer  # a garbled header: trust nothing in it
        if not _within(hop, trusted):
            return hop
    return peer


def _within(
    address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_of(request: web.Request) -> Client:
    """Source address and user agent for the security log (S2) and the throttles."""
    agent = header_text(request.headers.get("User-Agent"), 512)
    return Client(address=client_address(request), user_agent=agent)
