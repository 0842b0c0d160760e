"""The SSRF guard for customer webhook targets (DESIGN "Delivery").

A target must be http(s) and every address its host resolves to must be
public. It is checked when PATCH /v1/account sets the URL and again at every
attempt; at delivery the check runs in the HTTP client's resolver, so the
address vetted is the address connected to and a DNS answer cannot change in
between (no rebinding window). Redirects are not followed: they could point
anywhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from telephony.domain.errors import UnsafeWebhookUrl
from telephony.settings import Settings

REGISTRATION_DNS_TIMEOUT_S = 5.0


class TargetRefused(OSError):
    """A webhook target we may not connect to.

    An OSError, so that raised in the HTTP client's resolver it surfaces as a
    connection failure (`ClientConnectorError.os_error`) rather than a crash.
    """


_REFUSED_KINDS = ("loopback", "link_local", "multicast", "unspecified", "reserved", "private")


def address_refusal(address: str) -> str | None:
    """Why `address` may not receive webhooks ("a loopback address"), or None if it is public.

    IPv6 forms that embed an IPv4 address (mapped, 6to4, Teredo) are judged by
    that address as well, so ::ffff:127.0.0.1 is loopback too.
    """
    ip = ipaddress.ip_address(address)
    judged: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        judged += [a for a in (ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())) if a is not None]
    for candidate in judged:
        for kind in _REFUSED_KINDS:
            if getattr(candidate, f"is_{kind}"):
                return f"a {kind.replace('_', '-')} address"
        if not candidate.is_global:
            return "a non-public address"
    return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def screen_url(url: str, allow_private: bool) -> tuple[str, int]:
    """Refuse by the URL's text (scheme, a literal IP host); (host, port) to resolve."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused("only http and https URLs receive webhooks")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise TargetRefused("the URL's port is not valid") from None
    host = parts.hostname
    if not _is_ip(host):
        try:
            host.encode("idna")  # what the HTTP client does with it, raising UnicodeError
        except UnicodeError:
            raise TargetRefused("the URL's host is not a valid name") from None
    if not allow_private and _is_ip(host):
        reason = address_refusal(host)
        if reason is not None:
            raise TargetRefused(f"{host} is {reason}")
    return host, port


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's threaded resolver (the loop's getaddrinfo) refusing any non-public answer.

    As the delivery client's resolver, what it vets is what the connector
    connects to. aiohttp does not consult resolvers for literal IPs, hence
    `screen_url` before each request as well.
    """

    def __init__(self) -> None:
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            reason = address_refusal(answer["host"])
            if reason is not None:
                raise TargetRefused(f"{host} resolves to {reason}")
        return answers

    async def close(self) -> None:
        await self._inner.close()


async def check_webhook_url(url: str, *, allow_private: bool) -> None:
    """Raise UnsafeWebhookUrl (422, field webhook_url) for a URL we would refuse to deliver to.

    A host that does not resolve, or not within REGISTRATION_DNS_TIMEOUT_S, is
    accepted: nothing is reachable through it now, the check at each delivery
    is the one that counts, and a DNS hiccup should not block an account change.
    """
    try:
        host, port = screen_url(url, allow_private)
        if allow_private or _is_ip(host):
            return
        try:
            async with asyncio.timeout(REGISTRATION_DNS_TIMEOUT_S):
                await PublicOnlyResolver().resolve(host, port, socket.AF_UNSPEC)
        except (socket.gaierror, TimeoutError):
            return
    except TargetRefused as exc:
        raise UnsafeWebhookUrl(
            "webhooks go only to public http(s) addresses",
            errors=[{"field": "webhook_url", "message": str(exc)}],
        ) from None


def open_session(settings: Settings) -> aiohttp.ClientSession:
    """The delivery client: guarded resolver, no DNS cache, no cookies, no proxy from the env.

    No cookie jar, so one customer's endpoint can never set what another's receives.
    """
    resolver = ThreadedResolver() if settings.webhook_allow_private else PublicOnlyResolver()
    connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False)
    return aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False
    )
