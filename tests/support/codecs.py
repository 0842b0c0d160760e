"""Real encoded speech for the codec tests: what an engine would stream, made here.

Speech comes from espeak-ng (a system package: scripts/system-packages), so
it has what speech has (voiced and unvoiced sounds, pauses) and is the same
on every run. It is encoded with PyAV (FFmpeg's encoders, the library the
service decodes with) into RTP payloads of 20 ms; AMR-WB, for which FFmpeg
has no encoder, with the VisualOn encoder (Debian's libvo-amrwbenc0) through
ctypes, framed per RFC 4867 in either of its two RTP modes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import subprocess
import tempfile
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from telephony.media.codecs import AMRWB_BITS

TEXT = (
    "The recording starts only when every counterpart has given consent. "
    "Withdrawn consent stops it at once. Seven, eight, nine."
)


@functools.cache
def _speech_22k(text: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", "en", "-s", "160", "-w", str(path), text], check=True)
        with wave.open(str(path)) as wav:
            assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
            rate = wav.getframerate()
            samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
    assert rate == 22050
    return samples.copy()


def speech(rate: int, text: str = TEXT) -> np.ndarray:
    """Mono int16 speech at `rate` (blocking: call it through asyncio.to_thread)."""
    source = _speech_22k(text)
    if rate == 22050:
        return source
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    frame = av.AudioFrame.from_ndarray(source.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = 22050
    parts = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(parts).astype(np.int16)


def _pyav(codec: str, pcm: np.ndarray, rate: int, **options: str) -> list[bytes]:
    ctx = av.CodecContext.create(codec, "w")
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate = rate
    ctx.layout = "mono"
    ctx.format = "s16"
    ctx.time_base = Fraction(1, rate)
    if codec == "libopus":
        ctx.bit_rate = 32000
    if options:
        ctx.options = options
    out: list[bytes] = []
    step = rate // 50  # 20 ms frames in, whatever the encoder packs
    for at in range(0, len(pcm) - step + 1, step):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm[at : at + step]).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = rate
        frame.pts = at
        out += [bytes(p) for p in ctx.encode(frame)]
    out += [bytes(p) for p in ctx.encode(None)]
    return out


def _cut(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data) - size + 1, size)]


def encode(codec: str, pcm: np.ndarray, rate: int) -> list[bytes]:
    """20 ms RTP payloads of `pcm` (mono int16 at `rate`, the codec's own rate)."""
    if codec in ("mulaw", "alaw"):
        return _cut(b"".join(_pyav(f"pcm_{codec}", pcm, rate)), rate // 50)
    if codec == "l16be":
        return _cut(pcm.astype(">i2").tobytes(), 2 * rate // 50)
    if codec == "g722":
        assert rate == 16000
        return _cut(b"".join(_pyav("g722", pcm, rate)), 160)  # 8000 bytes a second
    if codec == "opus":
        assert rate == 48000
        return _pyav("libopus", pcm, rate, application="voip", frame_duration="20")
    if codec in ("amrwb-oa", "amrwb-be"):
        assert rate == 16000
        frames = _amrwb_storage_frames(pcm, mode=2)
        return [_rtp(frame, octet_aligned=codec == "amrwb-oa") for frame in frames]
    raise ValueError(codec)


# -- AMR-WB: Debian's VisualOn encoder, then RFC 4867 framing ---------------------------


@functools.cache
def _vo_amrwbenc() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("vo-amrwbenc") or "libvo-amrwbenc.so.0")
    lib.E_IF_init.restype = ctypes.c_void_p
    lib.E_IF_encode.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_short),
        ctypes.c_char_p,
        ctypes.c_int,
    ]
    lib.E_IF_exit.argtypes = [ctypes.c_void_p]
    return lib


def _amrwb_storage_frames(pcm: np.ndarray, mode: int) -> list[bytes]:
    """One storage frame (ToC byte + speech bits) per 20 ms; mode 2 is 12.65 kbit/s."""
    lib = _vo_amrwbenc()
    state = lib.E_IF_init()
    out = []
    buf = ctypes.create_string_buffer(64)
    samples = np.ascontiguousarray(pcm, dtype=np.int16)
    try:
        for at in range(0, len(samples) // 320 * 320, 320):
            frame = samples[at : at + 320]
            size = lib.E_IF_encode(
                state, mode, frame.ctypes.data_as(ctypes.POINTER(ctypes.c_short)), buf, 0
            )
            out.append(buf.raw[:size])
    finally:
        lib.E_IF_exit(state)
    return out


def _rtp(frame: bytes, *, octet_aligned: bool, cmr: int = 15) -> bytes:
    """One storage frame as an RFC 4867 payload of one frame (no interleaving, no CRC)."""
    kind, quality = (frame[0] >> 3) & 0x0F, (frame[0] >> 2) & 1
    if octet_aligned:
        return bytes([cmr << 4, (kind << 3) | (quality << 2)]) + frame[1:]
    width = AMRWB_BITS[kind]
    value, bits = (cmr << 6) | (kind << 1) | quality, 10  # CMR, then F=0 FT Q
    if width:
        value = (value << width) | (int.from_bytes(frame[1:], "big") >> (-width % 8))
        bits += width
    pad = -bits % 8
    return (value << pad).to_bytes((bits + pad) // 8, "big")


# -- comparing audio --------------------------------------------------------------------


def correlation(reference: np.ndarray, decoded: np.ndarray, rate: int) -> float:
    """Normalised cross-correlation at the best lag within ±50 ms: a lossy codec's output
    is neither byte-exact nor aligned to the sample (its algorithmic delay)."""
    a = reference.astype(np.float64)
    b = decoded.astype(np.float64)
    limit = int(rate * 0.05)
    size = 1 << math.ceil(math.log2(len(a) + len(b)))
    cross = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)
    lags = np.r_[0 : limit + 1, -limit:0]
    lag = int(lags[np.argmax(np.r_[cross[: limit + 1], cross[size - limit :]])])
    x, y = (a[: len(a) - lag], b[lag:]) if lag >= 0 else (a[-lag:], b[: len(b) + lag])
    n = min(len(x), len(y))
    x, y = x[:n], y[:n]
    return float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12))
