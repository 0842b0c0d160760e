"""The one input layer (API.md "Error codes"): everything the fuzzer found that once answered 500.

Each case here is a request that crashed the service before issue 10 (a NUL
in text, Unicode digits, an overlong or nested cursor, deep JSON, a year
with no UTC form), now answered with a problem document naming the field.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from telephony.web.inputs import (
    keyset_cursor,
    parse_keyset,
    parse_sequence,
    parse_timestamp,
    sequence_cursor,
)
from tests.conftest import Customer, new_call, signup_body
from tests.support.recordings import record

JSON = {"Content-Type": "application/json"}


async def problem(resp: ClientResponse, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body: dict[str, Any] = await resp.json()
    assert body["code"] == code
    return body


def fields(body: dict[str, Any]) -> list[str]:
    return [e["field"] for e in body.get("errors", [])]


# -- text ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("Ada\x00", id="NUL"),
        pytest.param("Ada\x1b[31m", id="escape"),
        pytest.param("Ada\x7f", id="DEL"),
        pytest.param("Ada\x85", id="C1 next line"),
        pytest.param("Ada\rLovelace", id="carriage return"),
        pytest.param(" Ada", id="leading space"),
        pytest.param("Ada ", id="trailing space"),
        pytest.param("   ", id="only spaces"),
    ],
)
async def test_text_fields_refuse_controls_and_untrimmed_values(
    client: TestClient, value: str
) -> None:
    resp = await client.post("/v1/signup", json=signup_body(name=value))

    body = await problem(resp, 422, "validation-failed")
    assert fields(body) == ["name"]


@pytest.mark.parametrize("value", ["line one\nline two", "tab\tseparated", "Łódź, ul. Żółta 3"])
async def test_newlines_tabs_and_letters_of_any_script_are_text(
    client: TestClient, value: str
) -> None:
    resp = await client.post("/v1/signup", json=signup_body(postal_address=value))

    assert resp.status == 201, await resp.text()


async def test_a_lone_surrogate_is_not_json(client: TestClient) -> None:
    raw = json.dumps(signup_body()).replace('"Ada Owner"', '"Ada \\ud800"').encode()

    resp = await client.post("/v1/signup", data=raw, headers=JSON)

    await problem(resp, 400, "malformed-json")


@pytest.mark.parametrize("depth", [9, 3000])
async def test_deeply_nested_json_is_refused_by_depth(client: TestClient, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    raw = json.dumps(signup_body()).replace('"Ada Owner"', nested).encode()

    resp = await client.post("/v1/signup", data=raw, headers=JSON)

    assert resp.status in (400, 422), await resp.text()
    assert resp.content_type == "application/problem+json"


async def test_json_nested_within_the_limit_is_judged_by_its_fields(client: TestClient) -> None:
    raw = json.dumps(signup_body(name=[[["deep"]]])).encode()

    resp = await client.post("/v1/signup", data=raw, headers=JSON)

    assert fields(await problem(resp, 422, "validation-failed")) == ["name"]


# -- numbers and cursors in queries --------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("limit=%C2%B2", id="superscript two"),
        pytest.param("limit=%D9%A3", id="Arabic-Indic three"),
        pytest.param("limit=0", id="zero"),
        pytest.param("limit=201", id="past the maximum"),
        pytest.param("limit=99999999999999999999999", id="past int64"),
        pytest.param("limit=%00", id="NUL"),
        pytest.param("limit=1&limit=2", id="twice"),
        pytest.param("limit=07", id="leading zero"),
        pytest.param("cursor=%00", id="NUL cursor"),
        pytest.param("cursor=not+base64!", id="not a cursor"),
        pytest.param(
            "cursor=k" + "9" * 18 + ".call_x",
            id="time past int64",
        ),
        pytest.param("cursor=" + "%5B" * 1000, id="nested"),
        pytest.param("cursor=s5", id="wrong kind"),
        pytest.param("cursor=k12.call%00x", id="NUL in the id"),
    ],
)
async def test_bad_paging_values_are_422_naming_the_field(
    client: TestClient, owner: Customer, query: str
) -> None:
    resp = await client.get(f"/v1/calls?{query}", headers=owner.auth)

    body = await problem(resp, 422, "validation-failed")
    assert fields(body) in (["limit"], ["cursor"])


@pytest.mark.parametrize(
    "query",
    [
        "cursor=s" + "9" * 19,
        "cursor=s%C2%B2",
        "cursor=k5.call_x",
        "cursor=%C2%B2",
    ],
)
async def test_sequence_cursors_are_checked_too(
    client: TestClient, owner: Customer, query: str
) -> None:
    resp = await client.get(f"/v1/audit?{query}", headers=owner.auth)

    assert fields(await problem(resp, 422, "validation-failed")) == ["cursor"]


def test_cursors_round_trip_and_each_kind_refuses_the_other() -> None:
    at = parse_timestamp("2026-12-01T10:00:00.123456+01:00")

    keyset = keyset_cursor(at, "call_abc")
    sequence = sequence_cursor(42)

    assert parse_keyset(keyset) == (at, "call_abc")
    assert parse_sequence(sequence) == 42
    with pytest.raises(ValueError, match="next_cursor"):
        parse_keyset(sequence)


async def test_pages_follow_their_cursor_to_the_end(client: TestClient, owner: Customer) -> None:
    made = [(await new_call(client, owner))["id"] for _ in range(5)]

    seen: list[str] = []
    url = "/v1/calls?limit=2"
    while url:
        page = await (await client.get(url, headers=owner.auth)).json()
        seen += [c["id"] for c in page["items"]]
        url = f"/v1/calls?limit=2&cursor={page['next_cursor']}" if page["next_cursor"] else ""

    assert seen == made


# -- ids in paths --------------------------------------------------------------------------


@pytest.mark.parametrize("ident", ["call%00x", "%C2%B2", "x" * 65, "a%20b", "..%2F..%2Fetc"])
async def test_a_path_id_that_is_not_an_id_is_not_found(
    client: TestClient, owner: Customer, ident: str
) -> None:
    resp = await client.get(f"/v1/calls/{ident}", headers=owner.auth)

    await problem(resp, 404, "not-found")


# -- times ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("0001-01-01T00:00:00+14:00", id="year 1 east of UTC"),
        pytest.param("9999-12-31T23:59:59-14:00", id="year 9999 west of UTC"),
        pytest.param("9998-12-31T23:59:59-14:00", id="year 9998 west of UTC"),
        pytest.param("2026-02-30T10:00:00Z", id="no such day"),
        pytest.param("2026-12-01T10:00:00", id="no offset"),
        pytest.param("2026-12-01 10:00:00Z", id="a space for T"),
        pytest.param("\uff12\uff10\uff12\uff16-12-01T10:00:00Z", id="fullwidth digits"),
        pytest.param(1764583200, id="a number"),
    ],
)
async def test_consent_times_without_a_storable_utc_form_are_refused(
    client: TestClient, owner: Customer, value: object
) -> None:
    call = await new_call(client, owner)

    resp = await client.post(
        f"/v1/calls/{call['id']}/consents",
        json={
            "counterpart_id": call["counterparts"][0]["id"],
            "decision": "granted",
            "method": "verbal",
            "obtained_at": value,
        },
        headers=owner.auth,
    )

    assert fields(await problem(resp, 422, "validation-failed")) == ["obtained_at"]


async def test_a_consent_time_with_any_offset_is_stored_in_utc(
    client: TestClient, owner: Customer
) -> None:
    call = await new_call(client, owner)

    resp = await client.post(
        f"/v1/calls/{call['id']}/consents",
        json={
            "counterpart_id": call["counterparts"][0]["id"],
            "decision": "granted",
            "method": "verbal",
            "obtained_at": "2026-01-01T01:00:00+14:00",
        },
        headers=owner.auth,
    )

    assert resp.status == 201, await resp.text()
    assert (await resp.json())["obtained_at"] == "2025-12-31T11:00:00Z"


# -- ranges --------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["bytes=²-", "bytes=-²", "bytes=0-99999999999999999999999"])
async def test_ranges_with_anything_but_ascii_digits_are_416(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, header: str
) -> None:
    recording = await record(client, owner, pool, frames=5)

    resp = await client.get(
        f"/v1/recordings/{recording}/audio", headers={**owner.auth, "Range": header}
    )

    assert resp.status == 416, await resp.text()
    assert resp.headers["Content-Range"].startswith("bytes */")
