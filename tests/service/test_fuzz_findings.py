"""What the fuzzer found in issue 10's runs, kept as regression tests (see test_fuzz.py).

Each was a request the schema accepted and the service refused as invalid,
a 500, or an answer before authentication; each is fixed where it arose and
pinned here, on the server and in /openapi.json alike.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from telephony.delivery.ssrf import TargetRefused, screen_url
from telephony.web.api.accounts import WEBHOOK_URL_PATTERN
from telephony.web.inputs import KEYSET_CURSOR, SEQUENCE_CURSOR, parse_keyset, parse_sequence
from tests.conftest import Customer, new_call


async def schema_of(client: TestClient) -> dict[str, Any]:
    return dict(await (await client.get("/openapi.json")).json())


def body_schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    return dict(document["components"]["schemas"][name])


def query_param(document: dict[str, Any], path: str, name: str) -> dict[str, Any]:
    params = document["paths"][path]["get"]["parameters"]
    return dict(next(p for p in params if p["name"] == name)["schema"])


# -- limit: the pattern admitted 0 and 201 to 999 ------------------------------------------


@pytest.mark.parametrize("value", ["0", "201", "999", "007"])
async def test_the_limit_pattern_refuses_what_the_service_refuses(
    client: TestClient, owner: Customer, value: str
) -> None:
    pattern = query_param(await schema_of(client), "/v1/calls", "limit")["pattern"]

    resp = await client.get(f"/v1/calls?limit={value}", headers=owner.auth)

    assert re.match(pattern, value) is None
    assert resp.status == 422


@pytest.mark.parametrize("value", ["1", "9", "10", "99", "100", "199", "200"])
async def test_the_limit_pattern_admits_every_limit_the_service_takes(
    client: TestClient, owner: Customer, value: str
) -> None:
    pattern = query_param(await schema_of(client), "/v1/calls", "limit")["pattern"]

    resp = await client.get(f"/v1/calls?limit={value}", headers=owner.auth)

    assert re.match(pattern, value)
    assert resp.status == 200


# -- cursors: any base64 was "valid"; now the pattern is the check ---------------------------


@given(st.from_regex(KEYSET_CURSOR, fullmatch=True))
def test_every_keyset_cursor_the_schema_admits_is_a_position(raw: str) -> None:
    at, ident = parse_keyset(raw)

    assert ident and at.year >= 1970


@given(st.from_regex(SEQUENCE_CURSOR, fullmatch=True))
def test_every_sequence_cursor_the_schema_admits_is_a_position(raw: str) -> None:
    assert 0 <= parse_sequence(raw) < 2**63


async def test_a_cursor_past_the_end_is_an_empty_page(client: TestClient, owner: Customer) -> None:
    await new_call(client, owner)

    resp = await client.get(f"/v1/calls?cursor=k{'9' * 17}.call_zzz", headers=owner.auth)

    assert resp.status == 200
    assert (await resp.json()) == {"items": [], "next_cursor": None}


# -- partial updates: null was in the schema of fields that may not be cleared ------------


@pytest.mark.parametrize(
    ("path", "model", "body", "field"),
    [
        ("/v1/me", "ProfilePatch", {"name": None}, "name"),
        ("/v1/me", "ProfilePatch", {"email": None}, "email"),
        ("/v1/account", "AccountPatch", {"name": None}, "name"),
        ("/v1/account", "AccountPatch", {"processing_restricted": None}, "processing_restricted"),
    ],
)
async def test_null_for_a_field_that_cannot_be_cleared_is_refused_and_undocumented(
    client: TestClient, owner: Customer, path: str, model: str, body: dict[str, Any], field: str
) -> None:
    schema = body_schema(await schema_of(client), model)

    resp = await client.patch(path, json=body, headers=owner.auth)

    assert "anyOf" not in schema["properties"][field]  # no {"type": "null"} alternative
    assert resp.status == 422
    assert [e["field"] for e in (await resp.json())["errors"]] == [field]


async def test_null_clears_a_field_that_may_be_cleared(client: TestClient, owner: Customer) -> None:
    await client.patch("/v1/account", json={"recording_retention_days": 30}, headers=owner.auth)

    resp = await client.patch(
        "/v1/account", json={"recording_retention_days": None}, headers=owner.auth
    )

    assert resp.status == 200
    assert (await resp.json())["recording_retention_days"] is None


@pytest.mark.parametrize("path", ["/v1/me", "/v1/account"])
async def test_an_empty_update_is_refused_and_the_schema_says_so(
    client: TestClient, owner: Customer, path: str
) -> None:
    model = {"/v1/me": "ProfilePatch", "/v1/account": "AccountPatch"}[path]
    schema = body_schema(await schema_of(client), model)

    resp = await client.patch(path, json={}, headers=owner.auth)

    assert schema["minProperties"] == 1
    assert resp.status == 422


# -- numbers: 1189.0 is an integer to JSON Schema ----------------------------------------------


async def test_an_integral_number_written_with_a_fraction_is_an_integer(
    client: TestClient, owner: Customer
) -> None:
    schema = body_schema(await schema_of(client), "AccountPatch")
    days = schema["properties"]["recording_retention_days"]["anyOf"][0]

    taken = await client.patch(
        "/v1/account", json={"recording_retention_days": 30.0}, headers=owner.auth
    )
    fraction = await client.patch(
        "/v1/account", json={"recording_retention_days": 30.5}, headers=owner.auth
    )
    zero = await client.patch(
        "/v1/account", json={"recording_retention_days": 0}, headers=owner.auth
    )

    assert (days["minimum"], days["maximum"]) == (1, 3650)  # not pydantic's "ge"/"le"
    assert taken.status == 200 and (await taken.json())["recording_retention_days"] == 30
    assert fraction.status == zero.status == 422


# -- webhook URLs: an IPv6-looking host answered 500 ---------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["https://[2f00cFc:8a1a53BA]/", "https://[::1]/x", "http://host:99999/", "ftp://example.com/"],
)
async def test_a_webhook_url_the_pattern_refuses_is_a_422_not_a_500(
    client: TestClient, owner: Customer, url: str
) -> None:
    resp = await client.patch("/v1/account", json={"webhook_url": url}, headers=owner.auth)

    assert resp.status == 422
    assert [e["field"] for e in (await resp.json())["errors"]] == ["webhook_url"]


# -- webhook URLs: a host with an empty label passed the pattern and got 422 (issue 13) -------


@pytest.mark.parametrize("url", ["http://.6t40RZrx6:28277", "https://a..example/", "http://./"])
async def test_a_host_with_an_empty_label_is_refused_by_the_pattern_too(
    client: TestClient, owner: Customer, url: str
) -> None:
    pattern = body_schema(await schema_of(client), "AccountPatch")["properties"]["webhook_url"]
    pattern = pattern["anyOf"][0]["pattern"]

    resp = await client.patch("/v1/account", json={"webhook_url": url}, headers=owner.auth)

    assert re.fullmatch(pattern, url) is None
    assert resp.status == 422
    assert [e["field"] for e in (await resp.json())["errors"]] == ["webhook_url"]


@given(st.from_regex(WEBHOOK_URL_PATTERN, fullmatch=True))
def test_every_url_the_pattern_admits_the_ssrf_screen_reads_as_a_url(url: str) -> None:
    """The screen may still refuse the address (private, loopback), never the URL's form:
    that 422 would be one the schema did not warn of."""
    try:
        screen_url(url, allow_private=True)
    except TargetRefused as refused:
        raise AssertionError(f"{url!r}: {refused}") from None


# -- phone numbers and consent times: formats, since no pattern can hold them ---------------------


async def test_phone_numbers_are_a_format_and_no_pattern_promises_more(
    client: TestClient, owner: Customer
) -> None:
    schema = body_schema(await schema_of(client), "CounterpartBody")["properties"]["number"]
    call = await new_call(client, owner)

    resp = await client.post(
        f"/v1/calls/{call['id']}/counterparts",
        json={"label": "x", "number": "+1000000"},  # E.164 in shape, no such number
        headers=owner.auth,
    )

    assert (schema["format"], "pattern" in schema) == ("e164", False)
    assert resp.status == 422


async def test_a_consent_time_in_the_future_is_refused_and_its_format_says_past(
    client: TestClient, owner: Customer
) -> None:
    schema = body_schema(await schema_of(client), "ConsentCreate")["properties"]["obtained_at"]
    call = await new_call(client, owner)

    resp = await client.post(
        f"/v1/calls/{call['id']}/consents",
        json={
            "counterpart_id": call["counterparts"][0]["id"],
            "decision": "granted",
            "method": "verbal",
            "obtained_at": "6949-04-08T18:48:50.0+18:00",
        },
        headers=owner.auth,
    )

    assert schema["anyOf"][0]["format"] == "past-date-time"
    assert resp.status == 422


# -- Idempotency-Key before authentication ---------------------------------------------------


async def test_a_keyed_post_without_a_token_is_401_and_claims_no_key(
    client: TestClient, owner: Customer
) -> None:
    body = {"name": "crm", "scopes": ["calls"]}
    key = {"Idempotency-Key": "same-key"}

    anonymous = await client.post("/v1/api-keys", json=body, headers=key)
    real = await client.post("/v1/api-keys", json=body, headers={**key, **owner.auth})

    assert anonymous.status == 401
    assert real.status == 201  # the key was not taken by the refused request
