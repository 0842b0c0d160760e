"""16-bit PCM to MP3 with LAME (FFmpeg's libmp3lame, through PyAV), in pieces.

For parity with other providers' MP3 downloads (API.md): 32 kbit/s per
channel at the recording's own rate (8 kHz narrowband becomes MPEG-2.5
layer III, which every player reads). Raw MP3 frames concatenated are a
valid .mp3 file, so the encoder's packets stream out as they come, in
constant memory; its length is known only at the end, hence no Range.
"""

from __future__ import annotations

import av
import numpy as np

BITRATE_PER_CHANNEL = 32_000


class Mp3Encoder:
    def __init__(self, sample_rate_hz: int, channels: int) -> None:
        self.channels = channels
        self.layout = "mono" if channels == 1 else "stereo"
        codec = av.CodecContext.create("libmp3lame", "w")
        assert isinstance(codec, av.AudioCodecContext)
        codec.sample_rate = sample_rate_hz
        codec.layout = self.layout
        codec.format = "s16p"
        codec.bit_rate = BITRATE_PER_CHANNEL * channels
        codec.open()
        self.codec = codec
        self.fifo = av.AudioFifo()
        self.rate = sample_rate_hz
        self.pending = b""  # an odd trailing byte or partial frame of the last piece

    def feed(self, pcm: bytes) -> bytes:
        """Interleaved little-endian s16 in, whatever MP3 frames that completes out."""
        data = self.pending + pcm
        frame_bytes = 2 * self.channels
        whole = len(data) - len(data) % frame_bytes
        self.pending = data[whole:]
        if not whole:
            return b""
        samples = np.frombuffer(data[:whole], dtype="<i2").reshape(-1, self.channels).T
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples), format="s16p", layout=self.layout
        )
        frame.sample_rate = self.rate
        self.fifo.write(frame)
        return self._drain(final=False)

    def close(self) -> bytes:
        out = self._drain(final=True)
        return out + b"".join(bytes(p) for p in self.codec.encode(None))

    def _drain(self, *, final: bool) -> bytes:
        size = self.codec.frame_size or 1152
        out = bytearray()
        while self.fifo.samples >= size or (final and self.fifo.samples):
            frame = self.fifo.read(min(size, self.fifo.samples) if final else size)
            if frame is None:
                break
            for packet in self.codec.encode(frame):
                out += bytes(packet)
        return bytes(out)
