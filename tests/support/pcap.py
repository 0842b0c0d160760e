"""What a pcap that sipp plays holds: the RTP payloads a download must give back.

Classic libpcap files of Ethernet frames carrying IPv4/UDP/RTP, as sip-tester
ships them (`/usr/share/sip-tester/*.pcap`); read with `struct`, nothing
else is needed for these.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

PCAPS = Path("/usr/share/sip-tester")  # Debian's sip-tester: g711a.pcap, dtmf_2833_*.pcap


@dataclass(frozen=True)
class RtpPacket:
    pt: int
    seq: int
    ts: int
    ssrc: int
    payload: bytes


def rtp_packets(path: Path) -> list[RtpPacket]:
    data = path.read_bytes()
    magic, _, _, _, _, _, link = struct.unpack_from("<IHHiIII", data)
    assert magic == 0xA1B2C3D4 and link == 1, "a little-endian pcap of Ethernet frames"
    packets, offset = [], 24
    while offset < len(data):
        _, _, length, _ = struct.unpack_from("<IIII", data, offset)
        frame = data[offset + 16 : offset + 16 + length]
        offset += 16 + length
        ip = frame[14:]
        header = (ip[0] & 0x0F) * 4
        assert ip[9] == 17, "UDP"
        rtp = ip[header + 8 :]
        first, second, seq, ts, ssrc = struct.unpack_from("!BBHII", rtp)
        start = 12 + 4 * (first & 0x0F)
        if first & 0x10:  # an extension: its length in 32-bit words follows its profile
            start += 4 + 4 * struct.unpack_from("!H", rtp, start + 2)[0]
        end = len(rtp) - (rtp[-1] if first & 0x20 else 0)
        packets.append(RtpPacket(second & 0x7F, seq, ts, ssrc, rtp[start:end]))
    return packets
