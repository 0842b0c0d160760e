"""Real-browser tests: Debian's chromium through Playwright, axe-core for accessibility."""
