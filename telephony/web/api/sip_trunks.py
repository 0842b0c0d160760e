"""`/v1/sip-trunks`: an account's SBC or PBX sending SIPREC or SIP with digest (API.md)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AfterValidator, Field, StringConstraints, WithJsonSchema

from storage.sip_trunks import Trunk
from telephony.usecases import sip_trunks
from telephony.web.api.calls import sip_address
from telephony.web.appkeys import KEYS, POOL
from telephony.web.auth import require_owner
from telephony.web.inputs import (
    KEYSET_PAGING,
    Body,
    Phone,
    iso,
    keyset_cursor,
    page,
    page_of,
    path_id,
    read_body,
    read_query,
    trimmed,
)
from telephony.web.routes import OWNER, Route


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ValueError("a CIDR, as in 198.51.100.0/24 or 2001:db8::/32") from None


# A CIDR's grammar (IPv6 included) is no pattern to write: the schema names the format,
# as `e164` does, and the fuzzer draws such networks (tests/processes/fuzz_hooks.py).
Cidr = Annotated[
    str,
    StringConstraints(min_length=2, max_length=49),
    AfterValidator(_cidr),
    WithJsonSchema(
        {"type": "string", "format": "cidr", "description": "198.51.100.0/24, 2001:db8::/32"}
    ),
]


class TrunkCreate(Body):
    name: Annotated[str, trimmed(200)]
    allowed_sources: Annotated[list[Cidr], Field(min_length=1, max_length=50)]
    # The customer's own numbers: in a call a trunk's session creates, these are the
    # customer's side and every other party a counterpart. Optional (none: all others).
    numbers: Annotated[list[Phone], Field(max_length=50)] = []
    # What a challenge offers, preferred first (RFC 8760): ["MD5"] for peers that give up
    # on any SHA-256 challenge (baresip 1.0, SBC firmware of its age).
    digest_algorithms: Annotated[
        list[Literal["SHA-256", "MD5"]], Field(min_length=1, max_length=2)
    ] = ["SHA-256", "MD5"]


def render_trunk(trunk: Trunk, request: web.Request) -> dict[str, Any]:
    address = sip_address(request)
    return {
        "id": trunk.id,
        "name": trunk.name,
        "username": trunk.username,
        "allowed_sources": [str(n) for n in trunk.allowed_sources],
        "numbers": list(trunk.numbers),
        "digest_algorithms": list(trunk.digest_algorithms),
        "sip_uri": f"sip:{trunk.username}@{address}" if address else None,
        "created_at": iso(trunk.created_at),
    }


async def create_trunk(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    body = await read_body(request, TrunkCreate)
    created = await sip_trunks.create_trunk(
        request.app[POOL],
        request.app[KEYS],
        owner,
        name=body.name,
        allowed_sources=sip_trunks.networks(body.allowed_sources),
        numbers=list(dict.fromkeys(body.numbers)),
        digest_algorithms=list(dict.fromkeys(body.digest_algorithms)),
        now=datetime.now(UTC),
    )
    rendered = render_trunk(created.trunk, request)
    rendered["password"] = created.password  # shown once, never again
    return web.json_response(rendered, status=201)


async def list_trunks(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    paging = page(read_query(request, KEYSET_PAGING))
    found = await sip_trunks.list_trunks(request.app[POOL], owner, paging.after, paging.limit + 1)
    return web.json_response(
        page_of(
            found,
            paging,
            lambda t: render_trunk(t, request),
            lambda t: keyset_cursor(t.created_at, t.id),
        )
    )


async def delete_trunk(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    await sip_trunks.delete_trunk(request.app[POOL], owner, path_id(request), datetime.now(UTC))
    return web.Response(status=204)


ROUTES = [
    Route(
        "POST",
        "/v1/sip-trunks",
        create_trunk,
        "Create a SIP trunk: digest credentials (the password shown once) for the allowed sources",
        OWNER,
        TrunkCreate,
        {201: "trunk with its password"},
        "sip-trunks",
    ),
    Route(
        "GET",
        "/v1/sip-trunks",
        list_trunks,
        "List SIP trunks (never their passwords)",
        OWNER,
        None,
        {200: "trunks"},
        "sip-trunks",
        query=KEYSET_PAGING,
    ),
    Route(
        "DELETE",
        "/v1/sip-trunks/{id}",
        delete_trunk,
        "Delete a SIP trunk: its credentials stop at once",
        OWNER,
        None,
        {204: "deleted"},
        "sip-trunks",
    ),
]
