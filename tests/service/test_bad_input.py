"""Bad input gets a clear problem+json answer: never a 500, never a traceback (API.md "Errors")."""

from __future__ import annotations

import io
import json

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from tests.conftest import Customer, signup_body

JSON = {"Content-Type": "application/json"}


async def assert_problem(resp: ClientResponse, status: int, code: str) -> dict:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body = await resp.json()
    assert body["code"] == code
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    assert "Traceback" not in await resp.text()
    return body


@pytest.mark.parametrize("raw", [b"{", b"", b"nul", b'{"email": }', b"\xff\xfe{}"])
async def test_malformed_json_is_a_400(client: TestClient, raw: bytes) -> None:
    resp = await client.post("/v1/signup", data=raw, headers=JSON)

    await assert_problem(resp, 400, "malformed-json")


async def test_a_body_that_is_not_json_is_a_415(client: TestClient) -> None:
    resp = await client.post("/v1/signup", data="email=a", headers={"Content-Type": "text/plain"})

    await assert_problem(resp, 415, "unsupported-media-type")


@pytest.mark.parametrize("raw", [b"[]", b'"text"', b"42", b"null"])
async def test_json_that_is_not_an_object_is_a_422(client: TestClient, raw: bytes) -> None:
    resp = await client.post("/v1/signup", data=raw, headers=JSON)

    problem = await assert_problem(resp, 422, "validation-failed")
    assert problem["errors"][0]["field"] == "body"


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"account_name": 42}, "account_name"),
        ({"age_confirmed": "true"}, "age_confirmed"),
        ({"email": ["a@example.com"]}, "email"),
        ({"name": "n" * 201}, "name"),
        ({"postal_address": ""}, "postal_address"),
        ({"email": "a" * 250 + "@example.com"}, "email"),
        ({"email": "not-an-email"}, "email"),
        ({"password": "p" * 1025}, "password"),
        ({"vat_number": "x" * 33}, "vat_number"),
        ({"is_admin": True}, "is_admin"),
    ],
)
async def test_wrong_types_long_strings_and_unknown_fields_name_the_field(
    client: TestClient, override: dict, field: str
) -> None:
    resp = await client.post("/v1/signup", json=signup_body(**override))

    problem = await assert_problem(resp, 422, "validation-failed")
    assert [e["field"] for e in problem["errors"]] == [field]
    assert all(e["message"] for e in problem["errors"])


async def test_missing_fields_are_all_listed(client: TestClient) -> None:
    resp = await client.post("/v1/signup", json={})

    problem = await assert_problem(resp, 422, "validation-failed")
    assert {e["field"] for e in problem["errors"]} == {
        "account_name",
        "name",
        "email",
        "password",
        "postal_address",
        "accept_terms",
        "age_confirmed",
    }


async def test_a_ten_megabyte_password_is_refused_without_hashing(client: TestClient) -> None:
    body = json.dumps(signup_body(password="p" * 10_000_000)).encode()

    resp = await client.post("/v1/signup", data=io.BytesIO(body), headers=JSON)

    await assert_problem(resp, 413, "payload-too-large")


async def test_a_ten_megabyte_login_password_is_refused(
    client: TestClient, owner: Customer
) -> None:
    body = json.dumps({"email": owner.email, "password": "p" * 10_000_000}).encode()

    resp = await client.post("/v1/sessions", data=io.BytesIO(body), headers=JSON)

    await assert_problem(resp, 413, "payload-too-large")


async def test_problem_bodies_never_echo_the_submitted_password(client: TestClient) -> None:
    secret = "SuperSecret-value-1"
    resp = await client.post("/v1/signup", json=signup_body(password=secret, accept_terms=False))

    assert resp.status == 422
    assert secret not in await resp.text()


async def test_unknown_route_is_a_problem_404(client: TestClient) -> None:
    resp = await client.get("/v1/nothing-here")

    await assert_problem(resp, 404, "not-found")


async def test_wrong_method_is_a_problem_405(client: TestClient) -> None:
    resp = await client.put("/v1/signup", json={})

    await assert_problem(resp, 405, "method-not-allowed")
    assert "POST" in resp.headers["Allow"]
