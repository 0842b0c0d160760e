"""The `telephony` command run as users run it: a subprocess, its output captured."""

from __future__ import annotations

import subprocess
import sys

# Cheap Argon2 for the commands' processes, as conftest.FAST_ARGON2 is for the app.
FAST = {
    "TELEPHONY_ARGON2_MEMORY_KIB": "8192",
    "TELEPHONY_ARGON2_ITERATIONS": "1",
    "TELEPHONY_ARGON2_LANES": "1",
}


def run(
    args: list[str], env: dict[str, str], stdin: str = "", timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """Blocking: call it through asyncio.to_thread from a test on the event loop."""
    return subprocess.run(
        [sys.executable, "-m", "telephony", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout_s,
    )
