"""RTP ingest benchmark (issue 13): SIPREC sessions against a real server, and a bare baseline.

    .venv/bin/python bench/rtp.py

N concurrent SIPREC sessions, each its own consented call with a recording
running, each two labelled streams of 20 ms A-law (a leg each), paced at
real time. N steps up while every frame is stored and the server's p99 lag
(how far placed audio runs behind the recording clock, jitter window
included) stays under 200 ms. The largest N that held is then run for
--hold-seconds, and the same client sends the same packets to a bare asyncio
UDP receiver on the same loop that only parses each RTP header, at the same
N, for as long; the pair is repeated --rounds times, alternating. Printed:
CPU fraction (median of one reading per 10 s), legs per fully used core, RSS
per leg, and our legs per core as a ratio of the bare receiver's. Goal: 0.5.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROOT,
    OurServer,
    consented_call,
    cpu_seconds,
    cpu_seconds_of,
    postgres_pids,
    rss_bytes,
    sign_up,
    terminate,
)
from bench.ingest import (
    WINDOW_S,
    Measure,
    p99_from_metrics,
    step_then_hold,
    stored_samples,
    summarize,
)
from tests.support.sip import RtpSender, SipCaller

FRAME = bytes(range(0x20, 0x20 + 160))  # 20 ms of A-law
TICK_S = 0.02
LABELS = ("1", "2")

BARE_RECEIVER = textwrap.dedent(
    """
    import asyncio, struct, sys
    HEADER = struct.Struct("!BBHII")

    class Receiver(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            HEADER.unpack_from(data)

    async def main(count):
        loop = asyncio.get_running_loop()
        ports = []
        for _ in range(count):
            transport, _ = await loop.create_datagram_endpoint(
                Receiver, local_addr=("127.0.0.1", 0)
            )
            ports.append(transport.get_extra_info("sockname")[1])
        print(" ".join(map(str, ports)), flush=True)
        await asyncio.Event().wait()

    if sys.argv[1] == "uvloop":
        import uvloop
        uvloop.install()
    asyncio.run(main(int(sys.argv[2])))
    """
)


def metadata(customer: str, other: str) -> str:
    return (
        '<recording xmlns="urn:ietf:params:xml:ns:recording:1">'
        f'<participant participant_id="a"><nameID aor="tel:{customer}"/></participant>'
        f'<participant participant_id="b"><nameID aor="tel:{other}"/></participant>'
        '<stream stream_id="s1"><label>1</label></stream>'
        '<stream stream_id="s2"><label>2</label></stream>'
        '<participantstreamassoc participant_id="a"><send>s1</send></participantstreamassoc>'
        '<participantstreamassoc participant_id="b"><send>s2</send></participantstreamassoc>'
        "</recording>"
    )


def siprec_offer(port: int) -> str:
    sdp = "".join(
        f"m=audio {port + 2 * i} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=label:{label}\r\n"
        "a=sendonly\r\n"
        for i, label in enumerate(LABELS)
    )
    sdp = "v=0\r\no=SRC 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" + sdp
    parts = [
        f"Content-Type: application/sdp\r\n\r\n{sdp}",
        "Content-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session"
        f"\r\n\r\n{metadata('+48221234567', '+48601234567')}\r\n",
    ]
    return "".join(f"--b1\r\n{p}" for p in parts) + "--b1--\r\n"


class Session:
    def __init__(self, recording_id: str | None, senders: list[RtpSender], dialog: object) -> None:
        self.recording_id = recording_id
        self.senders = senders
        self.dialog = dialog
        self.sent = 0  # frames per stream


async def open_sessions(
    http: aiohttp.ClientSession, base: str, token: str, sip_port: int, n: int
) -> tuple[SipCaller, list[Session]]:
    """n SIPREC sessions, each a consented call whose recording runs before the INVITE."""
    headers = {"Authorization": f"Bearer {token}"}
    caller = await SipCaller(sip_port).open()
    sessions = []
    for _ in range(n):
        call = await consented_call(http, base, headers)
        async with http.post(
            f"{base}/v1/calls/{call['id']}/recordings", headers=headers, json={}
        ) as resp:
            rec = await resp.json()
            assert resp.status == 201, rec
        senders = [await RtpSender(0).open() for _ in LABELS]
        dialog = await caller.invite(
            call["media"]["token"],
            siprec_offer(senders[0].port),
            headers=("Require: siprec", "Contact: <sip:src@127.0.0.1>;+sip.src"),
            content_type="multipart/mixed;boundary=b1",
        )
        assert dialog.answer.status == 200, dialog.answer
        for sender, port in zip(senders, dialog.rtp_ports, strict=True):
            sender.to = ("127.0.0.1", port)
        sessions.append(Session(rec["id"], senders, dialog))
    return caller, sessions


async def pace(sessions: list[Session], seconds: float) -> int:
    """A packet on every stream every 20 ms for `seconds`; packets sent."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    ticks = int(seconds / TICK_S)
    for tick in range(ticks):
        for session in sessions:
            for sender in session.senders:
                sender.send(FRAME)
            session.sent += 1
        delay = start + (tick + 1) * TICK_S - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
    return ticks * len(sessions) * len(LABELS)


async def paced_windows(
    sessions: list[Session], seconds: float, pid: int
) -> tuple[int, list[float], float]:
    windows = max(1, round(seconds / WINDOW_S))
    sent, fractions = 0, []
    client0, start = time.process_time(), time.monotonic()
    for _ in range(windows):
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        sent += await pace(sessions, seconds / windows)
        fractions.append((cpu_seconds(pid) - cpu0) / (time.monotonic() - t0))
    return sent, fractions, (time.process_time() - client0) / (time.monotonic() - start)


async def stored_frames(dsn: str, sessions: list[Session]) -> int:
    """Frames stored, counting each stream's, once every recording is finalized."""
    conn = await asyncpg.connect(dsn)
    try:
        samples = await stored_samples(conn, [s.recording_id for s in sessions if s.recording_id])
    finally:
        await conn.close()
    return samples // len(FRAME) * len(LABELS)  # samples are per channel


async def run_ours(
    n: int,
    seconds: float,
    server: OurServer,
    sip_port: int,
    http: aiohttp.ClientSession,
    token: str,
) -> Measure:
    assert server.process is not None
    pid = server.process.pid
    idle_rss = rss_bytes(pid)
    caller, sessions = await open_sessions(http, server.url, token, sip_port, n)
    async with http.get(f"{server.url}/metrics") as resp:
        _, buckets = p99_from_metrics(await resp.text(), {})
    pg = postgres_pids(server.cluster)
    pg0, t0 = cpu_seconds_of(pg), time.monotonic()
    sent, fractions, client = await paced_windows(sessions, seconds, pid)
    elapsed = time.monotonic() - t0
    pg1, rss = cpu_seconds_of(pg), rss_bytes(pid)
    async with http.get(f"{server.url}/metrics") as resp:
        p99, _ = p99_from_metrics(await resp.text(), buckets)
    await asyncio.sleep(0.3)  # the last packets leave the jitter window
    for session in sessions:
        await caller.in_dialog(session.dialog, "BYE")  # type: ignore[arg-type]
        for sender in session.senders:
            sender.close()
    caller.close()
    stored = await stored_frames(server.cluster.dsn(), sessions)
    legs = n * len(LABELS)
    return Measure(
        legs, elapsed, fractions, rss, idle_rss, p99, sent, stored, (pg1 - pg0) / elapsed, client
    )


class BareReceiver:
    def __init__(self, loop_name: str, streams: int) -> None:
        self.loop_name = loop_name
        self.streams = streams
        self.ports: list[int] = []
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """The receiver binds its own ports (any free ones) and says which."""
        self.process = subprocess.Popen(
            [sys.executable, "-c", BARE_RECEIVER, self.loop_name, str(self.streams)],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        assert self.process.stdout is not None
        self.ports = [int(p) for p in self.process.stdout.readline().split()]
        assert len(self.ports) == self.streams, "the bare receiver did not start"

    def stop(self) -> None:
        terminate(self.process, timeout_s=10)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_bare(n: int, seconds: float, loop_name: str) -> Measure:
    bare = BareReceiver(loop_name, n * len(LABELS))
    bare.start()
    try:
        assert bare.process is not None
        pid = bare.process.pid
        idle_rss = rss_bytes(pid)
        sessions = []
        for i in range(n):
            senders = [await RtpSender(bare.ports[i * 2 + k]).open() for k in range(len(LABELS))]
            sessions.append(Session(None, senders, None))
        t0 = time.monotonic()
        sent, fractions, client = await paced_windows(sessions, seconds, pid)
        elapsed = time.monotonic() - t0
        rss = rss_bytes(pid)
        for session in sessions:
            for sender in session.senders:
                sender.close()
    finally:
        bare.stop()
    return Measure(
        n * len(LABELS), elapsed, fractions, rss, idle_rss, None, sent, None, 0.0, client
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="25,50,100,200,300,400")
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--hold-seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    # Four sockets a session on the server (RTP and RTCP a stream), two here: past the
    # usual 1,024 descriptors at a few hundred sessions. The server inherits the limit.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    data = Path(tempfile.mkdtemp(prefix="bench-rtp-", dir="/tmp"))
    server = OurServer(data, args.loop)
    sip_port = free_udp_port()
    server.env["TELEPHONY_SIP_LISTEN"] = f"127.0.0.1:{sip_port}"
    server.env["TELEPHONY_RTP_PORTS"] = "30000-39999"
    print(f"RTP benchmark on {os.cpu_count()} cores, server loop: {args.loop}", flush=True)
    try:
        await server.start()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            token = await sign_up(http, server.url)
            found = await step_then_hold(
                steps,
                args.rounds,
                lambda n, s: run_ours(n, s, server, sip_port, http, token),
                lambda n, s: run_bare(n, s, args.loop),
                server,
                args.step_seconds,
                args.hold_seconds,
            )
        if found is not None:
            what = f"{found[0]} SIPREC sessions ({found[0] * len(LABELS)} legs)"
            summarize(what, found[1], found[2], args.loop, args.hold_seconds)
            print("goal: a ratio of 0.5 or more", flush=True)
    finally:
        server.stop()
        server.cluster.stop()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
