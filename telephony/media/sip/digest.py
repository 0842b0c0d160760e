"""SIP digest authentication for trunks (RFC 3261 §22, RFC 8760; SIP.md 2.5).

The challenge offers the trunk's algorithms (SHA-256 and MD5, RFC 8760, by
default in that order), each with `qop="auth"`. The nonce is made by the caller
(sealed under the service's key, so any node can check it and none needs to
remember it) and is good for NONCE_S; a nonce past that is answered with a
new challenge marked `stale=true`. Each nonce's `nc` must rise: a repeated one
is a replay. Responses are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

NONCE_S = 300.0
ALGORITHMS: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "SHA-256": hashlib.sha256,
    "MD5": hashlib.md5,
}
_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*(?:,|$)')


@dataclass(frozen=True)
class Credentials:
    """An `Authorization: Digest …` header's parameters."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None


def parse(value: str | None) -> Credentials | None:
    """None when it is not a Digest header with every parameter a check needs."""
    if not value or not value.strip().lower().startswith("digest "):
        return None
    params: dict[str, str] = {}
    rest = value.strip()[len("digest ") :]
    while rest.strip():
        found = _PARAM.match(rest)
        if found is None:
            return None
        quoted, bare = found[2], found[3]
        params[found[1].lower()] = (
            re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else (bare or "")
        )
        rest = rest[found.end() :]
    try:
        credentials = Credentials(
            username=params["username"],
            realm=params["realm"],
            nonce=params["nonce"],
            uri=params["uri"],
            response=params["response"].lower(),
            algorithm=params.get("algorithm", "MD5").upper(),
            qop=params.get("qop"),
            nc=params.get("nc"),
            cnonce=params.get("cnonce"),
        )
    except KeyError:
        return None
    if credentials.algorithm not in ALGORITHMS:
        return None
    if credentials.qop is not None and (
        credentials.qop != "auth" or not credentials.nc or credentials.cnonce is None
    ):
        return None
    return credentials


def challenges(
    realm: str, nonce: str, algorithms: Sequence[str], *, stale: bool = False
) -> list[str]:
    """`WWW-Authenticate` values, one per algorithm, preferred first (RFC 8760 §2.4).

    The trunk says which: some peers give up on any SHA-256 challenge, even one
    after an MD5 one (baresip 1.0's libre, Debian 12: ENOSYS), so a trunk for
    them offers MD5 alone."""
    tail = ", stale=true" if stale else ""
    return [
        f'Digest realm="{realm}", nonce="{nonce}", algorithm={name}, qop="auth"{tail}'
        for name in algorithms
        if name in ALGORITHMS
    ]


def expected(credentials: Credentials, method: str, password: str) -> str:
    digest = ALGORITHMS[credentials.algorithm]

    def h(text: str) -> str:
        return digest(text.encode()).hexdigest()

    ha1 = h(f"{credentials.username}:{credentials.realm}:{password}")
    ha2 = h(f"{method}:{credentials.uri}")
    if credentials.qop == "auth":
        c = credentials
        return h(f"{ha1}:{c.nonce}:{c.nc}:{c.cnonce}:auth:{ha2}")
    return h(f"{ha1}:{credentials.nonce}:{ha2}")


def verify(credentials: Credentials, method: str, password: str) -> bool:
    return hmac.compare_digest(expected(credentials, method, password), credentials.response)


class Replays:
    """The highest `nc` seen per nonce while the nonce lives: a repeat is a replay."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, float]] = {}

    def fresh(self, credentials: Credentials, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if len(self._seen) > 10_000:
            self._seen = {k: v for k, v in self._seen.items() if now - v[1] < NONCE_S}
        try:
            count = int(credentials.nc or "0", 16)
        except ValueError:
            return False
        last = self._seen.get(credentials.nonce)
        if last is not None and count <= last[0]:
            return False
        self._seen[credentials.nonce] = (count, now if last is None else last[1])
        return True
