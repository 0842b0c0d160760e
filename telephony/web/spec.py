"""Route declarations, request-body parsing and list paging shared by every resource.

Each resource module exports `ROUTES`; `app.py` registers them and
`openapi.py` documents them from the same list, so a route cannot be served
without being described.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from telephony.domain.errors import InvalidInput, MalformedJson, UnsupportedMediaType

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)


class Body(BaseModel):
    """Base of request bodies: unknown fields and loose types are refused, not ignored."""

    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    who: str  # "anyone", "user", "owner", a scope, or a staff role: documents the check
    body: type[BaseModel] | None = None
    responses: dict[int, str] = field(default_factory=dict)
    tag: str = "api"
    query: Sequence[tuple[str, str]] = ()  # (name, description)


async def read_body(request: web.Request, model: type[M]) -> M:
    """Parse and validate a JSON body; raise problems the client can act on."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("send the body as application/json")
    raw = await request.read()  # aiohttp enforces client_max_size (413) before this returns
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise MalformedJson("the body is not valid JSON") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {
                "field": ".".join(str(p) for p in err["loc"]) or "body",
                "message": err["msg"],
            }
            for err in exc.errors(include_input=False, include_url=False)
        ]
        raise InvalidInput("the request body has invalid fields", errors=errors) from None


# -- lists: ?limit= and ?cursor= (API.md conventions) ----------------------

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@dataclass(frozen=True)
class Page:
    limit: int
    after: tuple[datetime, str] | None


def read_page(request: web.Request) -> Page:
    raw_limit = request.query.get("limit", str(DEFAULT_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise InvalidInput(
            "limit out of range",
            errors=[{"field": "limit", "message": f"an integer from 1 to {MAX_LIMIT}"}],
        )
    cursor = request.query.get("cursor")
    after = None
    if cursor:
        try:
            at, ident = json.loads(base64.urlsafe_b64decode(cursor.encode() + b"=="))
            after = (datetime.fromisoformat(at), str(ident))
        except (ValueError, TypeError, binascii.Error):
            raise InvalidInput(
                "cursor is not one this service issued",
                errors=[{"field": "cursor", "message": "unknown cursor"}],
            ) from None
    return Page(int(raw_limit), after)


def page_of(
    items: Sequence[Any],
    page: Page,
    render: Callable[[Any], dict[str, Any]],
    cursor_of: Callable[[Any], tuple[datetime, str]] = lambda i: (i.created_at, i.id),
) -> dict:
    """`items` were fetched with limit+1 so we know whether another page exists."""
    shown = list(items[: page.limit])
    next_cursor = None
    if len(items) > page.limit:
        at, ident = cursor_of(shown[-1])
        token = json.dumps([at.isoformat(), ident]).encode()
        next_cursor = base64.urlsafe_b64encode(token).decode().rstrip("=")
    return {"items": [render(i) for i in shown], "next_cursor": next_cursor}


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None
