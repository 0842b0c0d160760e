"""The browser harness itself, against a tiny server that sends the portal's kind of CSP:
axe finds what it should and nothing else, the CSP still binds the page, screenshots are
whole pages, and the response log sees a media request's Range and its 206."""

from __future__ import annotations

import asyncio
import struct
import wave
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import ConsoleMessage

from tests.browser.harness import (
    SCREENSHOTS,
    NewPage,
    ResponseLog,
    axe_violations,
    screenshot,
)
from tests.support.waiting import eventually

CSP = "default-src 'self'; script-src 'self'"
ALL_IMPACTS = ("minor", "moderate", "serious", "critical")


def _page(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title></head>
<body><main><h1>{title}</h1>{body}</main></body>
</html>"""


PAGES = {
    "/good": _page(
        "Recordings",
        '<img src="/static/dot.svg" alt="A dot">'
        '<form><label for="q">Search</label><input id="q" name="q" type="search"></form>',
    ),
    # The only fault: an image with no text alternative (axe's image-alt, critical).
    "/bad": _page("Recordings", '<img src="/static/dot.svg">'),
    # A same-origin script, an inline one, and the same fault as /bad for axe to find.
    "/csp": _page(
        "Scripts",
        '<script src="/static/external.js"></script>'
        "<script>window.inlineRan = true;</script>"
        '<img src="/static/dot.svg">',
    ),
    # The CSP refuses inline styles too (default-src): the height comes from a stylesheet.
    "/tall": _page(
        "Tall", '<link rel="stylesheet" href="/static/tall.css"><div class="tall">tall</div>'
    ),
    "/audio": _page(
        "Audio", '<audio controls preload="auto" src="/static/tone.wav">A tone</audio>'
    ),
}
DOT_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8">'
    '<circle cx="4" cy="4" r="4"/></svg>'
)


@pytest.fixture
def tone_wav(tmp_path: Path) -> Path:
    """One second of 8 kHz 16-bit silence."""
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 8000)
    return path


@pytest.fixture
async def site(tone_wav: Path) -> AsyncIterator[str]:
    """The test pages on a loopback port, every response with CSP; yields the base URL."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGES[request.path], content_type="text/html")

    async def external_js(request: web.Request) -> web.Response:
        return web.Response(text="window.externalRan = true;", content_type="text/javascript")

    async def dot(request: web.Request) -> web.Response:
        return web.Response(text=DOT_SVG, content_type="image/svg+xml")

    async def tall_css(request: web.Request) -> web.Response:
        return web.Response(
            text=".tall { height: 3000px; background: #cde; }", content_type="text/css"
        )

    async def tone(request: web.Request) -> web.FileResponse:
        return web.FileResponse(tone_wav)  # answers Range with 206

    async def with_csp(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Content-Security-Policy"] = CSP

    app = web.Application()
    app.on_response_prepare.append(with_csp)
    for path in PAGES:
        app.router.add_get(path, page)
    app.router.add_get("/static/external.js", external_js)
    app.router.add_get("/static/dot.svg", dot)
    app.router.add_get("/static/tall.css", tall_css)
    app.router.add_get("/static/tone.wav", tone)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("/"))


async def test_axe_reports_image_without_alt_and_nothing_on_good_page(
    new_page: NewPage, site: str
) -> None:
    page = await new_page(base_url=site)

    await page.goto("/bad")
    bad = await axe_violations(page)
    await page.goto("/good")
    good = await axe_violations(page, impacts=ALL_IMPACTS)

    assert [(v["id"], v["impact"]) for v in bad] == [("image-alt", "critical")]
    assert [n["target"] for n in bad[0]["nodes"]] == [["img"]]
    assert good == []


async def test_csp_still_blocks_inline_script_while_axe_runs(new_page: NewPage, site: str) -> None:
    page = await new_page(base_url=site)
    console: list[ConsoleMessage] = []
    page.on("console", lambda message: console.append(message))

    response = await page.goto("/csp")
    violations = await axe_violations(page)

    assert response is not None and response.headers["content-security-policy"] == CSP
    assert await page.evaluate("window.externalRan") is True  # scripts run: 'self' is allowed
    assert await page.evaluate("'inlineRan' in window") is False
    assert any("Content Security Policy" in m.text for m in console if m.type == "error")
    assert [v["id"] for v in violations] == ["image-alt"]


async def test_screenshot_writes_the_whole_page_as_png(new_page: NewPage, site: str) -> None:
    page = await new_page(base_url=site)
    await page.goto("/tall")

    path = await screenshot(page, "harness-tall")
    png = await asyncio.to_thread(path.read_bytes)

    assert path == SCREENSHOTS / "harness-tall.png"
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])  # IHDR, the first chunk
    assert width > 0 and height >= 3000  # the full page, not the viewport


async def test_response_log_records_range_request_and_206(new_page: NewPage, site: str) -> None:
    page = await new_page(base_url=site, locale="pl-PL")
    log = ResponseLog(page)

    await page.goto("/audio")
    audio = await eventually(lambda: log.for_path("/static/tone.wav"))
    documents = await log.for_path("/audio")

    assert audio[0].status == 206
    assert audio[0].request_headers["range"].startswith("bytes=0-")
    assert audio[0].headers["content-range"].startswith("bytes 0-")
    assert documents[0].status == 200
    assert documents[0].request_headers["accept-language"].startswith("pl-PL")
