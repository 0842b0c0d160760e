"""What a browser test calls besides its fixtures: axe-core's findings, full-page screenshots
under var/screenshots, and a log of every response a page received."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import pytest
from playwright.async_api import BrowserContext, Page, Response

ROOT = Path(__file__).resolve().parents[2]
AXE_JS = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = ROOT / "var" / "screenshots"

# -- the fixtures' factories, for tests' signatures ---------------------------------


class NewContext(Protocol):
    """The `new_context` fixture: a fresh BrowserContext, closed after the test."""

    def __call__(
        self, *, locale: str = ..., base_url: str | None = ..., **options: Any
    ) -> Awaitable[BrowserContext]: ...


class NewPage(Protocol):
    """The `new_page` fixture: a page in a context of its own, closed after the test."""

    def __call__(
        self, *, locale: str = ..., base_url: str | None = ..., **options: Any
    ) -> Awaitable[Page]: ...


# -- accessibility -----------------------------------------------------------------

# Runs in the page, after axe.min.js: only what a failing test prints, all JSON.
_RUN_AXE = """async () => {
    const result = await axe.run(document, {resultTypes: ["violations"]});
    return result.violations.map(v => ({
        id: v.id,
        impact: v.impact,
        help: v.help,
        helpUrl: v.helpUrl,
        nodes: v.nodes.map(n => ({target: n.target, html: n.html, summary: n.failureSummary})),
    }));
}"""


async def axe_violations(
    page: Page, *, impacts: Collection[str] = ("serious", "critical")
) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now, those at `impacts` only: each with
    id, impact, help, helpUrl and nodes (target selectors, html, summary).

    The script goes in through DevTools (`page.evaluate`), which the page's
    Content-Security-Policy does not govern: the page keeps the CSP it was served with, so
    an inline script of its own is still refused (no `bypass_csp`, no <script> element).
    """
    try:
        source = await asyncio.to_thread(AXE_JS.read_text, encoding="utf-8")
    except FileNotFoundError:
        pytest.fail(
            f"{AXE_JS.relative_to(ROOT)} is missing: `make test` installs it "
            "(or: npm ci --prefix tests/browser)",
            pytrace=False,
        )
    if not await page.evaluate("typeof window.axe === 'object'"):
        # `;undefined`: the script's own completion value is not ours to hand back.
        await page.evaluate(f"{source}\n;undefined")
    violations: list[dict[str, Any]] = await page.evaluate(_RUN_AXE)
    return [v for v in violations if v["impact"] in impacts]


# -- screenshots -------------------------------------------------------------------


async def screenshot(page: Page, name: str) -> Path:
    """The whole page (not just the viewport) as var/screenshots/<name>.png, in the project
    root whatever the working directory; returns the path."""
    if not name or Path(name).name != name or name.startswith("."):
        raise ValueError(f"a screenshot name is one plain file name, not {name!r}")
    png = await page.screenshot(full_page=True, type="png")
    path = SCREENSHOTS / f"{name}.png"
    await asyncio.to_thread(_write, path, png)
    return path


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# -- responses ---------------------------------------------------------------------


@dataclass(frozen=True)
class LoggedResponse:
    """One response, with the headers that actually went over the wire (Range included)."""

    url: str
    method: str
    status: int
    request_headers: dict[str, str]  # lower-case names
    headers: dict[str, str]  # the response's, lower-case names

    @property
    def path(self) -> str:
        return urlsplit(self.url).path


class ResponseLog:
    """Every response a page receives from now on, in arrival order.

    Attach before navigating: `log = ResponseLog(page)`. The handler only keeps the
    Response; `await log.entries()` reads the full headers when asked, so no task runs
    behind the test's back. Read it before the page's context closes.
    """

    def __init__(self, page: Page) -> None:
        self.responses: list[Response] = []
        page.on("response", self._record)

    def _record(self, response: Response) -> None:
        self.responses.append(response)

    async def entries(
        self, where: Callable[[LoggedResponse], bool] | None = None
    ) -> list[LoggedResponse]:
        """The responses so far (those `where` accepts, if given)."""
        logged = [await _logged(r) for r in list(self.responses)]
        return [e for e in logged if where is None or where(e)]

    async def for_path(self, path: str) -> list[LoggedResponse]:
        """The responses so far whose URL path is exactly `path`."""
        return await self.entries(lambda e: e.path == path)


async def _logged(response: Response) -> LoggedResponse:
    request = response.request
    return LoggedResponse(
        url=response.url,
        method=request.method,
        status=response.status,
        # all_headers(): the raw headers, not the provisional set Chromium reports first.
        request_headers=await request.all_headers(),
        headers=await response.all_headers(),
    )
