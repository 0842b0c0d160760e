"""What the benchmarks share: a real server process on a private cluster, /proc figures, login.

Imported by the scripts beside it (`bench/ingest.py`, `bench/download.py`)
once they have put the project root on sys.path; not a benchmark itself.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from storage.pgcluster import LocalCluster

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PASSWORD = "benchmark passphrase"  # noqa: S105 - a throwaway account in a temp cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def cpu_seconds_of(pids: list[int]) -> float:
    """Summed CPU of processes that still exist (a PostgreSQL backend may have exited)."""
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            continue
    return total


def rss_bytes(pid: int) -> int:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) * 1024 if match else 0


def postgres_pids(cluster: LocalCluster) -> list[int]:
    try:
        postmaster = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == postmaster:
                pids.append(int(entry.name))
    return pids


class OurServer:
    """`python -m telephony serve` on a fresh data dir, with its own cluster and master key."""

    def __init__(self, data: Path, loop: str) -> None:
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cluster = LocalCluster(data / "postgres")
        self.master_key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(data),
            "LANG": "C.UTF-8",
            "TELEPHONY_DATA_DIR": str(data),
            "TELEPHONY_MASTER_KEY": self.master_key,
            "TELEPHONY_EVENT_LOOP": loop,
            "TELEPHONY_ARGON2_MEMORY_KIB": "8192",
            "TELEPHONY_ARGON2_ITERATIONS": "1",
            "TELEPHONY_ARGON2_LANES": "1",
            "TELEPHONY_SIP_LISTEN": "127.0.0.1:0",  # benchmarks may run beside make run
        }
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        log = open(self.data / "server.log", "ab")  # noqa: SIM115, ASYNC230 - the child owns it
        self.process = subprocess.Popen(  # noqa: ASYNC220 - once, before measuring
            [sys.executable, "-m", "telephony", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        await wait_ready(f"{self.url}/healthz", self.process)

    def stop(self) -> None:
        terminate(self.process, timeout_s=60)


def terminate(process: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    """SIGTERM a server still running and wait for its graceful exit."""
    if process and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=timeout_s)


async def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            if process.poll() is not None:
                raise RuntimeError("server exited during start-up")
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("server did not start")


async def sign_up(http: aiohttp.ClientSession, base: str) -> str:
    """A fresh account through the real API; returns its owner's session token."""
    email = f"bench-{secrets.token_hex(4)}@example.com"
    async with http.post(
        f"{base}/v1/signup",
        json={
            "account_name": "bench",
            "name": "Bench",
            "email": email,
            "password": PASSWORD,
            "postal_address": "x",
            "accept_terms": True,
            "age_confirmed": True,
        },
    ):
        pass
    async with http.post(
        f"{base}/v1/sessions", json={"email": email, "password": PASSWORD}
    ) as resp:
        return str((await resp.json())["token"])


async def consented_call(
    http: aiohttp.ClientSession, base: str, headers: dict[str, str]
) -> dict[str, Any]:
    """An inbound call whose one counterpart has consented: ready to record (R2)."""
    async with http.post(
        f"{base}/v1/calls",
        headers=headers,
        json={
            "direction": "inbound",
            "from": "+48601234567",
            "to": "+48221234567",
            "counterparts": [{"label": "caller", "number": "+48601234567"}],
        },
    ) as resp:
        call = await resp.json()
        assert resp.status == 201, call
    async with http.post(
        f"{base}/v1/calls/{call['id']}/consents",
        headers=headers,
        json={
            "counterpart_id": call["counterparts"][0]["id"],
            "decision": "granted",
            "method": "announcement",
        },
    ) as resp:
        assert resp.status == 201, await resp.text()
    return call
