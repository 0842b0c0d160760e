"""`Idempotency-Key` on POST (API.md conventions): a retried request gets the first answer.

Keys are scoped to the caller (or to anonymous callers together, where the
request hash keeps one client from reading another's answer unless it sends
the very same body). A 5xx answer is not kept, so a retry runs again.

The kept answer is sealed (AES-256-GCM under a key derived from the master
key, bound to the caller and the key): some answers carry a secret shown once
(an API key's token, a webhook signing secret), and a stored copy must not
sit in the database in the clear for its 24 hours.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.typedefs import Handler

from storage import idempotency
from storage.keys.providers import KeyProvider
from telephony.domain.errors import (
    IdempotencyInProgress,
    IdempotencyKeyReused,
    IntegrityFailure,
    InvalidInput,
    ServiceError,
    Unauthenticated,
)
from telephony.web.appkeys import KEYS, POOL, ROUTE_INDEX
from telephony.web.auth import authenticate
from telephony.web.inputs import IDEMPOTENCY_KEY_PATTERN
from telephony.web.problems import from_service_error
from telephony.web.routes import ANYONE

HEADER = "Idempotency-Key"
_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
RETENTION_HOURS = 24
_PURPOSE = "idempotent-replies"


@web.middleware
async def honour_idempotency_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    key = request.headers.get(HEADER)
    if request.method != "POST" or key is None:
        return await handler(request)
    if not _KEY.match(key):
        raise InvalidInput(
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
            errors=[{"field": HEADER, "message": "1 to 255 visible ASCII characters"}],
        )
    route = request.app[ROUTE_INDEX].get(request.match_info.handler)
    if route is not None and route.who != ANYONE and "Authorization" not in request.headers:
        return await handler(request)  # it answers 401: no key is claimed for that
    scope = "anonymous"
    if "Authorization" in request.headers:
        try:
            scope = (await authenticate(request)).id
        except Unauthenticated:
            return await handler(request)  # the handler answers 401 as usual
    body = await request.read()  # aiohttp keeps it for the handler
    digest = hashlib.sha256(
        request.method.encode() + b"\0" + request.rel_url.path.encode() + b"\0" + body
    ).digest()

    pool = request.app[POOL]
    async with pool.acquire() as conn:
        first = await idempotency.claim(conn, scope, key, digest, datetime.now(UTC))
        if not first:
            stored = await idempotency.find(conn, scope, key)
    if not first:
        return _replay(stored, digest, request.app[KEYS], f"{scope}\0{key}")

    try:
        response = await handler(request)
    except ServiceError as exc:
        response = from_service_error(exc)
    except BaseException:
        async with pool.acquire() as conn:
            await idempotency.release(conn, scope, key)
        raise
    async with pool.acquire() as conn:
        if isinstance(response, web.Response) and response.status < 500:
            await idempotency.complete(
                conn,
                scope,
                key,
                response.status,
                response.content_type,
                request.app[KEYS].seal_record(_PURPOSE, _body_of(response), f"{scope}\0{key}"),
            )
        else:
            await idempotency.release(conn, scope, key)
    return response


def _body_of(response: web.Response) -> bytes:
    body = response.body
    return bytes(body) if isinstance(body, bytes | bytearray) else b""


def _replay(
    stored: idempotency.Stored | None, digest: bytes, keys: KeyProvider, context: str
) -> web.Response:
    if stored is None:  # released between our claim and our read: treat as in flight
        raise IdempotencyInProgress("retry in a moment")
    if stored.request_hash != digest:
        raise IdempotencyKeyReused("use a new Idempotency-Key for a different request")
    if stored.status is None:
        raise IdempotencyInProgress("the first request with this key has not finished")
    return web.Response(
        status=stored.status,
        body=_open(stored.body or b"", keys, context),
        content_type=stored.content_type,
        headers={"Idempotent-Replayed": "true"},
    )


def _open(sealed: bytes, keys: KeyProvider, context: str) -> bytes:
    """Under the current master key, or one still configured during a rotation."""
    try:
        return keys.open_record(_PURPOSE, sealed, context)
    except IntegrityFailure:
        raise IdempotencyKeyReused(
            "the first answer can no longer be read (the master key changed); use a new key"
        ) from None
