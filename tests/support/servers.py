"""`telephony serve` as a real process on a loopback port, for the tests about processes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.support.waiting import eventually

START_S = 20.0  # a cold start on a busy two-core machine: migrations, recovery, the pool


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    port: int
    node_id: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "telephony", "serve", "--port", str(self.port)],
                # Each its own SIP port (the media block's sip_uri names it), unless a
                # test chose one: several servers run at once, and 5060 is make run's.
                env={"TELEPHONY_SIP_LISTEN": "127.0.0.1:0", **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def start(self) -> None:
        """Spawn the process and return once it answers /readyz with 200."""
        process = self.process = await asyncio.to_thread(self._spawn)
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                if process.poll() is not None:
                    log = await asyncio.to_thread(self.log_path.read_text)
                    raise AssertionError(f"server exited: {log[-2000:]}")
                with contextlib.suppress(aiohttp.ClientError):  # not listening yet
                    async with http.get(f"{self.url}/readyz") as resp:
                        return resp.status == 200
                return False

            await eventually(ready, timeout_s=START_S, interval_s=0.05)

    async def kill(self) -> None:
        """SIGKILL, and reap the process."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.process.wait, 10)

    async def stop(self) -> None:
        """SIGTERM, and SIGKILL if it has not exited in 15 s."""
        if self.process is not None and self.process.poll() is None:
            await asyncio.to_thread(_terminate, self.process)


def _terminate(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
