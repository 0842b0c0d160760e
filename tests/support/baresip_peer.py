"""baresip (Debian's `baresip`) as a real UA: it dials the recorder and plays a WAV.

A real RTP stack (20 ms packets, random SSRC, sequence and timestamp,
symmetric RTP, RTCP on + 1) that no script of ours imitates (SIP.md 8). Its
`aufile` source plays 16-bit mono at the stream's rate; the samples given
are exact G.711 levels, so a correct encoder sends back the very bytes they
came from, and the test can compare the stored audio byte for byte.
"""

from __future__ import annotations

import asyncio
import shutil
import wave
from pathlib import Path

from tests.support.sipp_peer import free_udp_port

BARESIP = shutil.which("baresip")
MODULES = Path("/usr/lib/baresip/modules")


def write_config(folder: Path, source: Path, codec: str, *, account: str | None = None) -> None:
    """A config folder: G.711 only (`codec`, PCMA or PCMU), the WAV as the microphone, no
    sound card, no registration; `account` replaces the default account line."""
    rtp = free_udp_port(even=True)
    (folder / "config").write_text(
        "\n".join(
            [
                f"module_path {MODULES}",
                f"sip_listen 127.0.0.1:{free_udp_port()}",
                f"audio_source aufile,{source}",
                f"audio_player aufile,{folder / 'heard.wav'}",
                "audio_alert aufile,/dev/null",
                f"rtp_ports {rtp}-{rtp + 1}",
                "module g711.so",
                "module aufile.so",
                "module account.so",
                "module menu.so",
                "",
            ]
        )
    )
    line = account or f"<sip:tester@127.0.0.1>;regint=0;audio_codecs={codec}"
    (folder / "accounts").write_text(line + "\n")


def write_wav(path: Path, samples: list[int]) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"".join(s.to_bytes(2, "little", signed=True) for s in samples))


async def dial(folder: Path, uri: str, *, seconds: int) -> str:
    """baresip dials `uri`, plays its source, and quits (hanging up) after `seconds`;
    what it printed."""
    assert BARESIP is not None, "baresip: Debian's baresip, which make test installs"
    process = await asyncio.create_subprocess_exec(
        BARESIP,
        "-f",
        str(folder),
        "-e",
        f"/dial {uri}",
        "-t",
        str(seconds),
        "-n",
        "127.0.0.1",  # its SDP then names the address it sends RTP from
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return out.decode(errors="replace")
