"""`telephony decrypt`: open a sealed recording (SEALED-FORMAT.md) offline with the
customer's private key. Runs on the customer's machine: it reads no settings, no
database and no network, and the service never sees the key.

Samples (μ-law, A-law, L16) are written as a WAV of one channel per track, the codec's
own bytes unchanged; a recording kept in a packet codec is written in that codec's own
file (Ogg Opus, AMR-WB, G.722 WAV), as the service's `?encoding=` download of it is.
Nothing is left at `--out` unless every check passed: a refused container leaves no
half-written audio that could be mistaken for the recording.
"""

from __future__ import annotations

import argparse
import binascii
import json
import os
import sys
from pathlib import Path
from typing import Any

from storage.keys.sealed import ContainerRefused, load_private_key, open_container
from telephony.media import codecs, containers
from telephony.media.wav import riff_header


def decrypt(
    key_path: Path, in_path: Path, out_path: Path, jwks_path: Path | None
) -> dict[str, Any]:
    """Write the recording to `out_path`; what was opened, for the summary line."""
    try:
        key = load_private_key(key_path.read_bytes())
        jwks = json.loads(jwks_path.read_text()) if jwks_path else None
    except (OSError, ValueError) as exc:
        if isinstance(exc, ContainerRefused):
            raise
        raise ContainerRefused(f"cannot read {exc}") from None
    partial = out_path.with_name(out_path.name + ".part")
    try:
        with in_path.open("rb") as source, partial.open("wb") as out:
            opened = open_container(source, key, jwks)
            audio = opened.header["audio"]
            tracks = len(audio["tracks"])
            if audio["encoding"] in codecs.PACKET_CODECS:
                writer = containers.writer_for(audio["encoding"], tracks, audio["frames"])
                for plaintext in opened.records:
                    try:
                        batch = [(p.track, p.position, p.payload) for p in codecs.unpack(plaintext)]
                    except ValueError:
                        raise ContainerRefused("a chunk's packets are malformed") from None
                    out.write(writer.feed(batch))
                out.write(writer.close())
            else:
                written = 0
                out.write(
                    riff_header(audio["encoding"], audio["sample_rate_hz"], tracks, audio["frames"])
                )
                for plaintext in opened.records:
                    out.write(_little_endian(plaintext, audio["encoding"]))
                    written += len(plaintext)
                if written != audio["frames"] * tracks * (1 if "law" in audio["encoding"] else 2):
                    raise ContainerRefused("the audio's length differs from what the header states")
        os.replace(partial, out_path)
    except (KeyError, TypeError, binascii.Error) as exc:
        # Past a valid signature only if someone signed a header that is not ours.
        partial.unlink(missing_ok=True)
        raise ContainerRefused(f"the container's header is malformed ({exc!r})") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return {
        "recording_id": opened.header["recording_id"],
        "status": opened.header["status"],
        "chunks": opened.header["chunks"]["count"],
        "signed_by": opened.kid,
        "signer_pinned": jwks is not None,
        "out": str(out_path),
    }


def _little_endian(plaintext: bytes, encoding: str) -> bytes:
    if encoding != "l16be":
        return plaintext
    swapped = bytearray(plaintext)
    swapped[0::2], swapped[1::2] = plaintext[1::2], plaintext[0::2]
    return bytes(swapped)


async def cmd_decrypt(settings: object, args: argparse.Namespace) -> None:
    try:
        summary = decrypt(args.key, args.input, args.out, args.jwks)
    except ContainerRefused as refused:
        print(f"telephony decrypt: refused: {refused}", file=sys.stderr)
        raise SystemExit(2) from None
    print(json.dumps(summary))


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "decrypt",
        help="open a recording sealed to your key (SEALED-FORMAT.md), offline",
    )
    p.add_argument(
        "--key", type=Path, required=True, help="your private key (PEM, or hybrid base64)"
    )
    p.add_argument("--in", dest="input", type=Path, required=True, help="the sealed container")
    p.add_argument("--out", type=Path, required=True, help="where the audio goes")
    p.add_argument(
        "--jwks",
        type=Path,
        help="the service's published keys (/.well-known/telephony-keys.json): the header's"
        " signer must be one of them",
    )
    p.set_defaults(run=cmd_decrypt)
