"""Route declarations: what each route answers and who may call it.

Each resource module in `api/` exports `ROUTES`; `app.py` registers them and
`openapi.py` documents them from the same list, so a route cannot be served
without being described, nor described otherwise than it is checked: the
body model, the query parameters and the statuses are the ones the handler
uses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import BaseModel

from telephony.web.inputs import Query

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Who may call a route; anything but ANYONE needs a bearer token (401 without one).
ANYONE = "anyone"
USER = "user"  # a person of a customer account
OWNER = "owner"
JSON = "application/json"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    who: str  # ANYONE, USER, OWNER, a scope, or a staff role: documents the check
    body: type[BaseModel] | None = None
    # Statuses the handler itself answers, with what they mean; those every route of
    # its kind answers (401, 413, 422 for a bad body...) are added by openapi.py.
    responses: Mapping[int, str] = field(default_factory=dict)
    tag: str = "api"
    query: Sequence[Query] = ()
    # Media type(s) of the success answers, when not JSON (audio, Prometheus text).
    produces: str | tuple[str, ...] = JSON
    throttled: bool = False  # 429 too-many-attempts (and 503 when the hasher is full)

    @property
    def name(self) -> str:
        return self.handler.__name__


Routes = list[Route]
