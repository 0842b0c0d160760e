"""A real browser for the portal's pages: Debian's chromium, driven by Playwright.

Playwright's own browser builds cannot be downloaded here, so the browser is the system's
(`scripts/system-packages --test` installs it); `playwright install` is never needed. One
browser serves the whole run; each test gets fresh contexts (cookies, storage, locale), closed
after it. The helpers the tests call are in tests/browser/harness.py.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.browser.harness import NewContext, NewPage

# Headless in a container as root: no sandbox (it needs user namespaces), no GPU; and no
# traffic of Chromium's own (QUIC, component updates, sync, first-run and background
# fetches), since only loopback is reachable and a test's responses should all be its own.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
DEFAULT_TIMEOUT_MS = 10_000  # one step of a page on a busy two-core machine
DEFAULT_LOCALE = "en-US"  # not the machine's: a page's language is the test's choice


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    """The system's chromium, or a failure that says how to install it (never a skip)."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not installed: apt-get install -y chromium "
            "(scripts/system-packages --test does it as root)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
async def browser(chromium_executable: str) -> AsyncIterator[Browser]:
    """One headless Chromium for the whole run."""
    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=chromium_executable, headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
async def new_context(browser: Browser) -> AsyncIterator[NewContext]:
    """`await new_context(locale="pl-PL", base_url=server_url, **options)`: a fresh
    BrowserContext (any other `browser.new_context` option passes through), closed after
    the test."""
    contexts: list[BrowserContext] = []

    async def make(
        *, locale: str = DEFAULT_LOCALE, base_url: str | None = None, **options: Any
    ) -> BrowserContext:
        context = await browser.new_context(locale=locale, base_url=base_url, **options)
        context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        await context.close()


@pytest.fixture
def new_page(new_context: NewContext) -> NewPage:
    """`await new_page(locale=..., base_url=..., **options)`: a page in a context of its own
    (as new_context makes), closed after the test."""

    async def make(**options: Any) -> Page:
        context = await new_context(**options)
        return await context.new_page()

    return make
