"""Driving the portal over HTTP as a browser would: a cookie jar, forms with their CSRF
token read off the page."""

from __future__ import annotations

import html
import re
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from tests.conftest import PASSWORD

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: str) -> str:
    found = _CSRF.search(page)
    assert found, "the page has no form with a CSRF token"
    return html.unescape(found.group(1))


async def form_token(client: TestClient, path: str) -> str:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    return csrf_of(await resp.text())


async def submit(
    client: TestClient, page_path: str, action: str, fields: dict[str, Any], **kw: Any
) -> ClientResponse:
    """Load `page_path`, then post `fields` to `action` with that page's CSRF token."""
    token = await form_token(client, page_path)
    return await client.post(
        action, data={**fields, "csrf_token": token}, allow_redirects=False, **kw
    )


async def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> ClientResponse:
    resp = await submit(client, "/login", "/login", {"email": email, "password": password})
    assert resp.status == 303, await resp.text()
    return resp


async def sign_out(client: TestClient) -> None:
    resp = await submit(client, "/logout", "/logout", {})
    assert resp.status == 303
