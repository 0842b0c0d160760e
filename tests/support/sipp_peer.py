"""sipp (Debian's sip-tester) as a real SIP peer: scenarios kept with the tests, or its own.

`make test` installs it (scripts/system-packages --test). Its pcap replay
needs root or CAP_NET_RAW, which CI has; `pcap/...` in its scenarios resolves
against the working directory, so the run's folder links to the packaged
pcaps (SIP.md 8).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

from tests.support.pcap import PCAPS

SCENARIOS = Path(__file__).resolve().parent / "sipp"
SIPP = shutil.which("sipp")


def free_udp_port(even: bool = False) -> int:
    """A UDP port nobody holds now (an even one with its odd neighbour free, for RTP)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not even:
            return port
        if port % 2 == 0 and port < 65535:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port


async def sipp(
    port: int,
    folder: Path,
    *,
    scenario: str | None = None,
    builtin: str | None = None,
    user: str | None = None,
    transport: str = "u1",
    timeout_s: int = 20,
    variables: dict[str, str] | None = None,
) -> str:
    """One call of a scenario file kept with the tests, or of one of sipp's own (`-sn`),
    at 127.0.0.1:`port`, `variables` its [$name]s; its traces, after asserting it passed."""
    assert SIPP is not None, "sipp: Debian's sip-tester, which make test installs"
    await asyncio.to_thread((folder / "pcap").symlink_to, PCAPS)
    which = ["-sf", str(SCENARIOS / scenario)] if scenario else ["-sn", str(builtin)]
    process = await asyncio.create_subprocess_exec(
        SIPP,
        *which,
        *(["-s", user] if user else []),
        *[arg for name, value in (variables or {}).items() for arg in ("-set", name, value)],
        "-m",
        "1",
        "-nostdin",
        "-t",
        transport,
        "-i",
        "127.0.0.1",
        "-p",
        str(free_udp_port()),
        "-mp",
        str(free_udp_port(even=True)),
        "-timeout",
        f"{timeout_s}s",
        "-timeout_error",
        "-trace_msg",
        f"127.0.0.1:{port}",
        cwd=folder,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    traces = await asyncio.to_thread(read_traces, folder)
    assert process.returncode == 0, out.decode(errors="replace")[-2000:] + traces[-3000:]
    return traces


def read_traces(folder: Path) -> str:
    """sipp's -trace_msg files: every message it sent and received."""
    return "\n".join(p.read_text(errors="replace") for p in folder.glob("*_messages.log"))
