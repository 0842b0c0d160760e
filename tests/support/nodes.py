"""Three `telephony serve` nodes behind Debian's HAProxy on loopback, sharing one
PostgreSQL database and one S3 bucket (DESIGN.md "More than one node").

HAProxy runs with the shipped deploy/haproxy.cfg: its global and defaults
sections (timeouts, health checks, redispatch) as they are, only the bind
address and the servers made loopback ones, so the tests exercise the
configuration an operator copies.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from tests.support.s3 import CREDENTIALS
from tests.support.servers import Server, free_port
from tests.support.waiting import eventually

SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "haproxy.cfg"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"  # Debian's, from system-packages


def loopback_config(shipped: str, port: int, backends: list[tuple[str, int]]) -> str:
    """The shipped configuration with a loopback bind and static servers (no Docker DNS)."""
    text = shipped.replace("bind *:8080", f"bind 127.0.0.1:{port}")
    text = re.sub(r"\n\s*server-template [^\n]*", "", text)
    text = re.sub(r"\nresolvers docker\n(?:[ \t]+[^\n]*\n?)*", "\n", text)
    servers = "".join(f"    server {name} 127.0.0.1:{p} check\n" for name, p in backends)
    block = re.search(r"^backend nodes\n(?:[ \t]+[^\n]*\n?)*", text, re.MULTILINE)
    assert block is not None, "deploy/haproxy.cfg has no `backend nodes`"
    end = block.end()
    return text[:end].rstrip("\n") + "\n" + servers + text[end:]


@dataclass
class HAProxy:
    port: int
    config: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, backends: list[tuple[str, int]]) -> None:
        text = loopback_config(await asyncio.to_thread(SHIPPED.read_text), self.port, backends)
        await asyncio.to_thread(self.config.write_text, text)
        check = await asyncio.to_thread(
            subprocess.run, [HAPROXY, "-c", "-f", str(self.config)], capture_output=True
        )
        assert check.returncode == 0, check.stderr.decode()
        self.process = await asyncio.to_thread(self._spawn)

    def _spawn(self) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(
                [HAPROXY, "-db", "-f", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            await asyncio.to_thread(self.process.wait, 10)


@dataclass
class Nodes:
    servers: list[Server]
    proxy: HAProxy
    master_key: bytes

    @property
    def url(self) -> str:
        return self.proxy.url

    def named(self, node_id: str) -> Server:
        return next(s for s in self.servers if s.node_id == node_id)

    async def all_up(self) -> None:
        """Every node is in HAProxy's rotation: each answers through it within a few tries."""

        async def in_rotation() -> bool:
            async with aiohttp.ClientSession() as http:
                statuses = []
                for _ in range(6):
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"{self.url}/readyz") as resp:
                            statuses.append(resp.status)
                return statuses == [200] * 6

        await eventually(in_rotation, timeout_s=30, interval_s=0.5)


@contextlib.asynccontextmanager
async def three_nodes(
    database_url: str, blob_url: str, folder: Path, **extra: str
) -> AsyncIterator[Nodes]:
    """Start three nodes (ids node-a, node-b, node-c) and HAProxy in front of them."""
    key = secrets.token_bytes(32)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(folder),
        "LANG": "C.UTF-8",
        **CREDENTIALS,
        "TELEPHONY_DATABASE_URL": database_url,
        "TELEPHONY_BLOB_URL": blob_url,
        "TELEPHONY_MASTER_KEY": base64.b64encode(key).decode(),
        "TELEPHONY_TRUSTED_PROXIES": "127.0.0.1/32",
        **extra,
    }
    servers = [
        Server(
            free_port(),
            f"node-{name}",
            {
                **env,
                "TELEPHONY_NODE_ID": f"node-{name}",
                "TELEPHONY_DATA_DIR": str(folder / f"node-{name}"),  # its own spool
            },
            folder / f"node-{name}.log",
        )
        for name in ("a", "b", "c")
    ]
    proxy = HAProxy(free_port(), folder / "haproxy.cfg", folder / "haproxy.log")
    try:
        # One at a time: the first applies the migrations, the others find them done.
        for server in servers:
            await server.start()
        await proxy.start([(s.node_id, s.port) for s in servers])
        nodes = Nodes(servers, proxy, key)
        await nodes.all_up()
        yield nodes
    finally:
        await proxy.stop()
        for server in servers:
            await server.stop()
