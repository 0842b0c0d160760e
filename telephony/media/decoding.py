"""Stored packets back to 16-bit PCM, with FFmpeg's decoders through PyAV.

Only a download decodes; the recorder never does (media.codecs). A decoder
starts fresh for every stretch it is asked for, so the same stored packets
always give the same samples: a download and a Range request of the same
recording agree byte for byte.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable

import av
import numpy as np

from telephony.media.codecs import NATIVE_RATE, amrwb_frames

log = logging.getLogger(__name__)

# libopus: exact per packet (FFmpeg's own Opus decoder drops 24 samples of a first SILK
# packet). OpenCORE's AMR-WB: FFmpeg's own refuses comfort-noise (SID) frames.
DECODERS = {"g722": "g722", "opus": "libopus", "amrwb": "libopencore_amrwb"}


@functools.cache
def decodable(encoding: str) -> bool:
    """Whether this build of PyAV has the decoder: asked at a stream's start, so audio that
    could not be read back is never stored."""
    name = DECODERS.get(encoding)
    if name is None:
        return False
    try:
        av.codec.Codec(name, "r")
    except (av.error.FFmpegError, ValueError):  # unknown to this FFmpeg build
        return False
    return True


def decode_track(
    encoding: str, packets: Iterable[tuple[int, int, bytes]], start: int, length: int
) -> np.ndarray:
    """Samples [start, start + length) of one track: `packets` are (position, samples,
    payload) in position order; what no packet covers is silence. A packet the decoder
    cannot read (the engine sent it so) is silence too, never an error of the download."""
    out = np.zeros(length, np.int16)
    ctx = _decoder(encoding)
    failed = 0
    for position, samples, payload in packets:
        try:
            pcm = _decode(ctx, encoding, payload, samples)
        except (av.error.FFmpegError, ValueError):
            failed += 1
            ctx = _decoder(encoding)  # its state is unknown now
            continue
        at = position - start
        lo, hi = max(at, 0), min(at + len(pcm), length)
        if lo < hi:
            out[lo:hi] = pcm[lo - at : hi - at]
    if failed:  # once per stretch, not once per packet: a stream of them must not flood logs
        log.warning("undecodable %s packets left as silence", encoding, extra={"packets": failed})
    return out


def _decoder(encoding: str) -> av.AudioCodecContext:
    ctx = av.CodecContext.create(DECODERS[encoding], "r")
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate = NATIVE_RATE[encoding]
    ctx.layout = "mono"
    return ctx


def _decode(ctx: av.AudioCodecContext, encoding: str, payload: bytes, samples: int) -> np.ndarray:
    """One packet's samples, exactly `samples` long (cut, or padded with silence)."""
    if encoding == "amrwb":
        # RTP payload (either mode) to the storage frames the decoder reads, 20 ms each.
        pieces = [_pcm(ctx, frame.storage(), 320) for frame in amrwb_frames(payload)]
        pcm = np.concatenate(pieces) if pieces else np.zeros(0, np.int16)
    else:
        pcm = _pcm(ctx, payload, samples)
    if len(pcm) >= samples:
        return pcm[:samples]
    return np.concatenate([pcm, np.zeros(samples - len(pcm), np.int16)])


def _pcm(ctx: av.AudioCodecContext, data: bytes, expect: int) -> np.ndarray:
    frames = ctx.decode(av.Packet(data))
    if not frames:
        return np.zeros(expect, np.int16)  # a frame of no data (AMR-WB NO_DATA): silence
    parts = []
    for frame in frames:
        samples = frame.to_ndarray().reshape(-1)
        if samples.dtype != np.int16:  # a float decoder: [-1, 1)
            samples = np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)
        parts.append(samples)
    return np.concatenate(parts)
