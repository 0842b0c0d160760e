"""Digest for SIP trunks (SIP.md 2.5, RFC 8760): who a trunk's INVITE is, or the answer.

A trunk's session carries no media token: its first INVITE is challenged
with the algorithms its trunk accepts, and the retry's credentials are
checked against the trunk's password from its allowed sources. The nonce is
sealed under the service's key, so any node can check one another made and
none keeps state for it; a stale one is challenged again (`stale=true`), a
replayed `nc` refused, a second wrong response answered 403. Every attempt
goes to the security log (S2); no answer carries anything of a secret.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import asyncpg

from storage.keys.providers import KeyProvider
from storage.sip_trunks import Trunk
from telephony.domain.errors import IntegrityFailure
from telephony.media.sip import digest
from telephony.media.sip.message import Request, Response
from telephony.media.sip.replies import reply, warning
from telephony.media.sip.uas import Peer
from telephony.usecases import sip_trunks

NONCE_PURPOSE = "sip-digest-nonce"
MAX_TRACKED = 10_000  # Call-IDs with a wrong response, kept until this many


class TrunkAuth:
    def __init__(self, pool: asyncpg.Pool, keys: KeyProvider, realm: str) -> None:
        self.pool = pool
        self.keys = keys
        self.realm = realm  # the address SDP and Contact name
        self._replays = digest.Replays()
        self._wrong: dict[str, int] = {}  # wrong responses by Call-ID: the second is 403

    async def check(self, request: Request, peer: Peer, local_tag: str) -> Trunk | Response:
        """A trunk's INVITE (no media token): digest from its allowed sources (SIP.md 2.5).
        Every attempt is in the security log (S2); nothing of a secret in any answer."""
        now = datetime.now(UTC)
        source = peer.source[0]

        def answer(status: int, reason: str, *headers: tuple[str, str]) -> Response:
            return reply(
                request, status, reason, source=peer.source, to_tag=local_tag, headers=headers
            )

        async def challenge(stale: bool = False) -> Response:
            algorithms = await sip_trunks.challenge_algorithms(self.pool, source)
            offered = digest.challenges(self.realm, self._nonce(now), algorithms, stale=stale)
            return answer(401, "Unauthorized", *(("www-authenticate", c) for c in offered))

        header = request.headers.get("authorization") or request.headers.get("proxy-authorization")
        credentials = digest.parse(header)
        if credentials is None:
            return await challenge()  # the first INVITE of every trunk session
        pool = self.pool

        async def failed(reason: str, found: Trunk | None = None) -> None:
            await sip_trunks.record_attempt(
                pool,
                username=credentials.username,
                outcome="failure",
                reason=reason,
                source=source,
                now=now,
                trunk=found,
            )

        found = await sip_trunks.credentials_of(pool, self.keys, credentials.username, now)
        if found is None:
            await failed("unknown-username")
            return answer(404, "Not Found")  # as for an unknown token: one answer (SIP.md 1)
        trunk, password = found
        if not trunk.allows(source):
            await failed("source-not-allowed", trunk)
            return answer(403, "Forbidden", warning(399, "source not allowed for this trunk"))
        age = self._nonce_age(credentials.nonce, now)
        if age is None or credentials.realm != self.realm:
            await failed("bad-nonce", trunk)
            return await challenge()
        if age > digest.NONCE_S:
            return await challenge(stale=True)
        if credentials.algorithm not in trunk.digest_algorithms:
            await failed("algorithm-not-allowed", trunk)
            return await challenge()
        if not digest.verify(credentials, request.method, password):
            wrong = self._wrong[request.call_id] = self._wrong.get(request.call_id, 0) + 1
            if len(self._wrong) > MAX_TRACKED:
                self._wrong.clear()
            await failed("wrong-response", trunk)
            return answer(403, "Forbidden") if wrong >= 2 else await challenge()
        if not self._replays.fresh(credentials):
            await failed("replayed", trunk)
            return await challenge()
        self._wrong.pop(request.call_id, None)
        await sip_trunks.record_attempt(
            pool,
            username=credentials.username,
            outcome="success",
            reason="digest",
            source=source,
            now=now,
            trunk=trunk,
        )
        return trunk

    def _nonce(self, now: datetime) -> str:
        """Sealed under the service's key: any node can read its time, none keeps it."""
        sealed = self.keys.seal_record(NONCE_PURPOSE, str(now.timestamp()).encode(), "sip")
        return base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    def _nonce_age(self, nonce: str, now: datetime) -> float | None:
        try:
            sealed = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
            made = float(self.keys.open_record(NONCE_PURPOSE, sealed, "sip"))
        except (ValueError, IntegrityFailure):
            return None
        return now.timestamp() - made
