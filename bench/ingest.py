"""Media ingest benchmark: paced call legs against a real server process, and a bare baseline.

    .venv/bin/python bench/ingest.py            # or: make bench
    .venv/bin/python bench/ingest.py --blob-url moto   # parts shipped to S3 (moto, local)

N concurrent legs, each its own call with a recording running, send 160-byte
μ-law frames at real-time pace (50 per second) in the JSON dialect. N steps
up while every frame is stored, none is lost, and the server's p99 ingest lag
stays under 200 ms. The largest N that held is then run for --hold-seconds on
a fresh server process, and the same client drives a bare aiohttp WebSocket
server that only parses and discards frames, at the same N, for as long;
this pair is repeated --rounds times, alternating, so that a slow spell of
the shared machine does not fall on one side only. Figures printed: CPU
fraction (the median of one reading per 10 s), legs per fully used core
(N ÷ CPU fraction), RSS per leg (over the idle server's, first round), the
client's own CPU (the same work in every run: a gauge of the machine's
speed), and our legs-per-core as a ratio of the bare server's on the same
loop, per round and over all rounds. --without-recording streams the legs
without recording them, splitting the recorder's cost from ingest's.

--customer-key ALGORITHM (issue 14) adds a third run to each round: the same N
legs from a second account that seals its recordings to a key of its own (the
writer makes each data key and wraps it to that key), so the rounds give the
ratio to bare with and without customer keys, measured side by side.

PostgreSQL's own CPU is printed separately: it is the database, not the
server process, though each leg costs it one chunk row a second.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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
    free_port,
    postgres_pids,
    rss_bytes,
    sign_up,
    terminate,
    wait_ready,
)

FRAME = bytes(range(0x20, 0x20 + 160))
PAYLOAD = base64.b64encode(FRAME).decode()
TICK_S = 0.02
LAG_LIMIT_S = 0.2
WINDOW_S = 10.0

BARE_SERVER = textwrap.dedent(
    """
    import asyncio, base64, json, sys
    from aiohttp import web

    async def media(request):
        ws = web.WebSocketResponse(max_msg_size=256 * 1024)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == web.WSMsgType.TEXT:
                event = json.loads(msg.data)
                if event.get("event") == "media":
                    base64.b64decode(event["media"]["payload"])
        return ws

    app = web.Application()
    app.router.add_get("/v1/media/twilio", media)
    app.router.add_get("/healthz", lambda r: web.json_response({"status": "ok"}))
    loop = sys.argv[2]
    if loop == "uvloop":
        import uvloop
        uvloop.install()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
    """
)


@dataclass
class Measure:
    legs: int
    seconds: float
    cpu_fractions: list[float]  # one per WINDOW_S of the run
    rss_bytes: int
    rss_idle: int  # the server's RSS before the legs connected
    p99_lag_s: float | None
    frames_sent: int
    frames_stored: int | None
    pg_cpu_fraction: float = 0.0
    client_cpu_fraction: float = 0.0
    legs_closed: int = 0  # closed by the server before the run's end: never held

    @property
    def cpu_fraction(self) -> float:
        return statistics.median(self.cpu_fractions)

    @property
    def legs_per_core(self) -> float:
        return self.legs / self.cpu_fraction if self.cpu_fraction else float("inf")

    @property
    def rss_per_leg_kib(self) -> float:
        return (self.rss_bytes - self.rss_idle) / self.legs / 1024


class Leg:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, recording_id: str | None) -> None:
        self.ws = ws
        self.recording_id = recording_id
        self.sent = 0
        self.closed_by_server = False  # found when a send failed: nothing more is sent to it


async def pace(legs: list[Leg], seconds: float, first_tick: int = 0) -> int:
    """Send one frame per leg every 20 ms for `seconds`, stream time going on from
    `first_tick`; returns frames sent."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    ticks = int(seconds / TICK_S)
    sent = 0
    for tick in range(ticks):
        ts = str((first_tick + tick) * 20)
        frame = (
            '{"event":"media","media":{"track":"inbound","timestamp":"'
            + ts
            + '","payload":"'
            + PAYLOAD
            + '"}}'
        )
        for leg in legs:
            if leg.closed_by_server:
                continue
            try:
                await leg.ws.send_str(frame)
            except aiohttp.ClientConnectionResetError:
                # The server closed it (an overloaded step: its watchdog found it quiet
                # while this loop waited on another leg's full socket). The step fails
                # by `held`, with its figures printed, instead of ending the benchmark.
                leg.closed_by_server = True
                continue
            leg.sent += 1
            sent += 1
        delay = start + (tick + 1) * TICK_S - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
    return sent


async def paced_windows(
    legs: list[Leg], seconds: float, pid: int
) -> tuple[int, list[float], float]:
    """Pace for `seconds` without a break, reading the server's CPU every WINDOW_S:
    frames sent, each window's CPU fraction (the machine is shared: medians), and
    the client's own CPU fraction over the whole run."""
    windows = max(1, round(seconds / WINDOW_S))
    ticks = int(seconds / windows / TICK_S)
    sent, fractions = 0, []
    client0, start = time.process_time(), time.monotonic()
    for window in range(windows):
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        sent += await pace(legs, ticks * TICK_S, window * ticks)
        fractions.append((cpu_seconds(pid) - cpu0) / (time.monotonic() - t0))
    client = (time.process_time() - client0) / (time.monotonic() - start)
    return sent, fractions, client


def p99_from_metrics(
    text: str, before: dict[float, float]
) -> tuple[float | None, dict[float, float]]:
    """p99 of media_ingest_lag_seconds observed since `before` (bucket upper bound)."""
    buckets: dict[float, float] = {}
    for match in re.finditer(r'media_ingest_lag_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)', text):
        le = float("inf") if match.group(1) == "+Inf" else float(match.group(1))
        buckets[le] = float(match.group(2))
    delta = {le: count - before.get(le, 0.0) for le, count in buckets.items()}
    total = delta.get(float("inf"), 0.0)
    if not total:
        return None, buckets
    for le in sorted(delta):
        if delta[le] >= 0.99 * total:
            return le, buckets
    return float("inf"), buckets


async def open_legs(
    http: aiohttp.ClientSession, base: str, token: str, n: int, record: bool = True
) -> list[Leg]:
    """n calls, each consented and streaming; recording unless `record` is False."""
    headers = {"Authorization": f"Bearer {token}"}
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> Leg:
        async with sem:
            call = await consented_call(http, base, headers)
            ws = await http.ws_connect(
                f"{base.replace('http', 'ws')}/v1/media/twilio?token={call['media']['token']}",
                max_msg_size=0,
            )
            await ws.send_str(
                json.dumps(
                    {
                        "event": "start",
                        "start": {
                            "tracks": ["inbound"],
                            "mediaFormat": {
                                "encoding": "audio/x-mulaw",
                                "sampleRate": 8000,
                                "channels": 1,
                            },
                        },
                    }
                )
            )
            leg = Leg(ws, None)
            # Kept alive from here: under load the recording's start can take a while.
            opened.append(leg)
            if not record:
                return leg
            async with http.post(
                f"{base}/v1/calls/{call['id']}/recordings",
                headers=headers,
                json={"channels": "mono"},
            ) as resp:
                rec = await resp.json()
                assert resp.status == 201, rec
            leg.recording_id = rec["id"]
            return leg

    opened: list[Leg] = []
    keeping = asyncio.create_task(keep_alive(opened))
    try:
        return list(await asyncio.gather(*(one(i) for i in range(n))))
    finally:
        keeping.cancel()


async def keep_alive(legs: list[Leg]) -> None:
    """The legs opened first wait, silent, for the rest (a thousand take a while), and the
    server ends a stream quiet for 30 s as vanished: each says it is there meanwhile with
    a `mark`, which is not audio."""
    while True:
        await asyncio.sleep(5.0)
        for leg in list(legs):
            if not leg.ws.closed:
                await leg.ws.send_str('{"event":"mark","mark":{"name":"setup"}}')


async def explain_missing(conn: asyncpg.Connection, legs: list[Leg]) -> None:
    """Where frames went when a run stored fewer than it sent: each short recording's state,
    gaps and rows, so a loss is a finding, not a number."""
    rows = await conn.fetch(
        """SELECT r.id, r.status, r.stop_reason, r.gaps,
                  (SELECT count(*) FROM recording_segments s WHERE s.recording_id = r.id) AS segs,
                  coalesce((SELECT sum(samples) FROM recording_chunks c
                            WHERE c.recording_id = r.id), 0) AS samples
           FROM recordings r WHERE r.id = ANY($1)""",
        [leg.recording_id for leg in legs],
    )
    sent = {leg.recording_id: leg.sent for leg in legs}
    short = [r for r in rows if r["samples"] // len(FRAME) < sent[r["id"]]]
    print(f"      {len(short)} of {len(rows)} recordings short:", flush=True)
    for r in short[:5]:
        print(
            f"        {r['id']} {r['status']} ({r['stop_reason']}), {r['segs']} segment(s), "
            f"stored {r['samples'] // len(FRAME)} of {sent[r['id']]} frames, gaps {r['gaps']}",
            flush=True,
        )


async def stored_samples(conn: asyncpg.Connection, ids: list[str], wait_s: float = 30.0) -> int:
    """Samples (per channel) stored once every recording is finalized (or `wait_s` has
    passed): a busy server may still be sealing the last chunks when the streams end."""
    for _ in range(int(wait_s / 0.2)):
        unfinished = await conn.fetchval(
            "SELECT count(*) FROM recordings WHERE id = ANY($1) AND status <> 'completed'", ids
        )
        if not unfinished:
            break
        await asyncio.sleep(0.2)
    return int(
        await conn.fetchval(
            "SELECT coalesce(sum(samples), 0) FROM recording_chunks WHERE recording_id = ANY($1)",
            ids,
        )
    )


async def stored_frames(dsn: str, legs: list[Leg]) -> int:
    """Frames stored, every leg's recording finalized; where the missing ones went."""
    ids = [leg.recording_id for leg in legs if leg.recording_id]
    conn = await asyncpg.connect(dsn)
    try:
        samples = await stored_samples(conn, ids)
        if samples < sum(leg.sent for leg in legs) * len(FRAME):
            await explain_missing(conn, legs)
    finally:
        await conn.close()
    return int(samples) // len(FRAME)


async def run_ours(
    n: int,
    seconds: float,
    server: OurServer,
    http: aiohttp.ClientSession,
    token: str,
    record: bool = True,
) -> Measure:
    assert server.process is not None
    pid = server.process.pid
    idle_rss = rss_bytes(pid)  # before this step's legs: RSS per leg counts what they cost
    legs = await open_legs(http, server.url, token, n, record)
    await asyncio.sleep(1.0)  # writers are attached
    async with http.get(f"{server.url}/metrics") as resp:
        _, buckets = p99_from_metrics(await resp.text(), {})
    pg = postgres_pids(server.cluster)
    pg0, t0 = cpu_seconds_of(pg), time.monotonic()
    sent, fractions, client = await paced_windows(legs, seconds, pid)
    elapsed = time.monotonic() - t0
    pg1, rss = cpu_seconds_of(pg), rss_bytes(pid)
    async with http.get(f"{server.url}/metrics") as resp:
        p99, _ = p99_from_metrics(await resp.text(), buckets)
    for leg in legs:
        if not leg.closed_by_server:
            try:
                await leg.ws.send_str('{"event":"stop"}')
            except aiohttp.ClientConnectionResetError:
                leg.closed_by_server = True
        await leg.ws.close()
    stored = await stored_frames(server.cluster.dsn(), legs) if record else None
    return Measure(
        n,
        elapsed,
        fractions,
        rss,
        idle_rss,
        p99,
        sent,
        stored,
        (pg1 - pg0) / elapsed,
        client,
        sum(leg.closed_by_server for leg in legs),
    )


class BareServer:
    """The baseline: aiohttp on the same loop, parsing each frame and discarding it."""

    def __init__(self, loop_name: str) -> None:
        self.loop_name = loop_name
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: ASYNC220 - once, before measuring
            [sys.executable, "-c", BARE_SERVER, str(self.port), self.loop_name],
            cwd=ROOT,
        )
        await wait_ready(f"http://127.0.0.1:{self.port}/healthz", self.process)

    def stop(self) -> None:
        terminate(self.process, timeout_s=30)


async def run_bare(n: int, seconds: float, bare: BareServer) -> Measure:
    assert bare.process is not None
    pid = bare.process.pid
    idle_rss = rss_bytes(pid)
    async with unbounded_session() as http:
        legs = []
        for _ in range(n):
            ws = await http.ws_connect(f"ws://127.0.0.1:{bare.port}/v1/media/twilio")
            legs.append(Leg(ws, None))
        t0 = time.monotonic()
        sent, fractions, client = await paced_windows(legs, seconds, pid)
        elapsed = time.monotonic() - t0
        rss = rss_bytes(pid)
        for leg in legs:
            await leg.ws.close()
    return Measure(n, elapsed, fractions, rss, idle_rss, None, sent, None, 0.0, client)


def unbounded_session() -> aiohttp.ClientSession:
    """Every leg holds a socket for the whole run: aiohttp's default cap of 100
    connections would leave leg 101 waiting forever for one."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


def held(m: Measure) -> bool:
    return (
        m.legs_closed == 0
        and (m.frames_stored is None or m.frames_stored >= m.frames_sent)
        and m.p99_lag_s is not None
        and m.p99_lag_s <= LAG_LIMIT_S
    )


def show(label: str, m: Measure) -> None:
    lag = "n/a" if m.p99_lag_s is None else f"{m.p99_lag_s * 1000:.0f} ms"
    stored = "" if m.frames_stored is None else f", stored {m.frames_stored}/{m.frames_sent}"
    pg = f", postgres CPU {m.pg_cpu_fraction:.2f}" if m.pg_cpu_fraction else ""
    pg += f", {m.legs_closed} legs closed by the server" if m.legs_closed else ""
    print(
        f"{label:>10} N={m.legs:5d}: CPU {m.cpu_fraction:.2f} of a core (median of "
        f"{len(m.cpu_fractions)}, {min(m.cpu_fractions):.2f}-{max(m.cpu_fractions):.2f}), "
        f"{m.legs_per_core:,.0f} legs/core, RSS {m.rss_bytes / 2**20:.0f} MiB "
        f"({m.rss_per_leg_kib:.1f} KiB/leg), p99 lag {lag}{stored}{pg}, "
        f"client CPU {m.client_cpu_fraction:.2f}",
        flush=True,
    )


def pooled(runs: list[Measure]) -> Measure:
    """The rounds as one run: every window's CPU reading, the first round's RSS."""
    first = runs[0]
    return Measure(
        first.legs,
        sum(m.seconds for m in runs),
        [f for m in runs for f in m.cpu_fractions],
        first.rss_bytes,
        first.rss_idle,
        max((m.p99_lag_s for m in runs if m.p99_lag_s is not None), default=None),
        sum(m.frames_sent for m in runs),
        None if first.frames_stored is None else sum(m.frames_stored or 0 for m in runs),
        statistics.median(m.pg_cpu_fraction for m in runs),
        statistics.median(m.client_cpu_fraction for m in runs),
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="50,100,200,400,600,800,1000,1200")
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--hold-seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=3, help="ours-then-bare pairs to alternate")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument(
        "--blob-url",
        help="the server's TELEPHONY_BLOB_URL (s3://bucket/prefix?endpoint=…), or `moto`: a"
        " moto S3 server on 127.0.0.1 started here, with a fresh bucket",
    )
    parser.add_argument(
        "--part-seconds",
        type=int,
        help="the server's TELEPHONY_SPOOL_PART_S (how often a part ships; default the server's)",
    )
    parser.add_argument(
        "--without-compaction",
        action="store_true",
        help="with an S3 store, the server does not compact finished recordings meanwhile"
        " (TELEPHONY_COMPACTION_INTERVAL_S=0): splits that deferred cost from ingest's",
    )
    parser.add_argument(
        "--customer-key",
        choices=("hpke-x25519", "hpke-mlkem768-x25519", "rsa-oaep-sha256"),
        help="also run each round from an account sealing to a key of this algorithm",
    )
    parser.add_argument(
        "--without-recording",
        action="store_true",
        help="legs stream but record nothing: splits the recorder's cost from ingest's",
    )
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    record = not args.without_recording

    data = Path(tempfile.mkdtemp(prefix="bench-ingest-", dir="/tmp"))
    server = OurServer(data, args.loop)
    bare = BareServer(args.loop)
    moto = None
    if args.blob_url == "moto":
        moto, args.blob_url = await start_moto(data)
    if args.blob_url:
        server.env.update(TELEPHONY_BLOB_URL=args.blob_url, **MOTO_CREDENTIALS)
    if args.part_seconds:
        server.env["TELEPHONY_SPOOL_PART_S"] = str(args.part_seconds)
    if args.without_compaction:
        server.env["TELEPHONY_COMPACTION_INTERVAL_S"] = "0"
    store = "the object store" if args.blob_url else "files"
    print(
        f"ingest benchmark on {os.cpu_count()} cores, server loop: {args.loop}, blobs: {store}",
        flush=True,
    )
    try:
        await server.start()
        async with unbounded_session() as http:
            token = await sign_up(http, server.url)
            sealed = None
            if args.customer_key:
                sealed_token = await sign_up(http, server.url)
                await seal_to_a_new_key(http, server.url, sealed_token, args.customer_key)

                async def sealed(n: int, s: float) -> Measure:
                    return await run_ours(n, s, server, http, sealed_token, record)

            await bare.start()
            found = await step_then_hold(
                steps,
                args.rounds,
                lambda n, s: run_ours(n, s, server, http, token, record),
                lambda n, s: run_bare(n, s, bare),
                server,
                args.step_seconds,
                args.hold_seconds,
                also=sealed,
            )
        if found is not None:
            summarize(f"{found[0]} legs", found[1], found[2], args.loop, args.hold_seconds)
            if found[3]:
                summarize_sealed(args.customer_key, found[1], found[2], found[3])
    finally:
        bare.stop()
        server.stop()
        server.cluster.stop()
        if moto is not None:
            terminate(moto, timeout_s=10)
        report_server_log(data / "server.log")
        shutil.rmtree(data, ignore_errors=True)


async def step_then_hold(
    steps: list[int],
    rounds: int,
    ours: Callable[[int, float], Awaitable[Measure]],
    bare: Callable[[int, float], Awaitable[Measure]],
    server: OurServer,
    step_seconds: float,
    hold_seconds: float,
    also: Callable[[int, float], Awaitable[Measure]] | None = None,
) -> tuple[int, list[Measure], list[Measure], list[Measure]] | None:
    """Step N up while it holds; then the largest N held, ours and bare alternating for
    `rounds` pairs (a slow spell of the shared machine falls on both sides), with `also`
    between them when given. None: no step held. Shared by bench/ingest.py and
    bench/rtp.py."""
    best = 0
    for n in steps:
        m = await ours(n, step_seconds)
        show("step", m)
        if not held(m):
            break
        best = n
    if not best:
        print("no step held; nothing to hold for long")
        return None
    # A fresh server process for the long runs: the steps' larger N would otherwise leave
    # their peak in its RSS.
    server.stop()
    await server.start()
    ours_runs, bare_runs, also_runs = [], [], []
    for number in range(1, rounds + 1):
        ours_runs.append(await ours(best, hold_seconds))
        show(f"ours #{number}", ours_runs[-1])
        if also is not None:
            also_runs.append(await also(best, hold_seconds))
            show(f"sealed #{number}", also_runs[-1])
        bare_runs.append(await bare(best, hold_seconds))
        show(f"bare #{number}", bare_runs[-1])
    return best, ours_runs, bare_runs, also_runs


def summarize(
    what: str, ours_runs: list[Measure], bare_runs: list[Measure], loop: str, hold_s: float
) -> None:
    """The held runs' figures and the ratio to the bare baseline, per round and pooled."""
    ours, base = pooled(ours_runs), pooled(bare_runs)
    rounds = [o.legs_per_core / b.legs_per_core for o, b in zip(ours_runs, bare_runs, strict=True)]
    print(
        f"\nlargest N held: {what} for {hold_s:.0f} s, {len(ours_runs)} rounds "
        f"({'held' if all(held(m) for m in ours_runs) else 'NOT held'} in every round)\n"
        f"ours: {ours.legs_per_core:,.0f} legs per fully used core "
        f"(CPU {ours.cpu_fraction:.2f}, median of {len(ours.cpu_fractions)} readings), "
        f"{ours.rss_per_leg_kib:.1f} KiB RSS per leg\n"
        f"bare: {base.legs_per_core:,.0f} legs per fully used core "
        f"(CPU {base.cpu_fraction:.2f})\n"
        f"ratio ours/bare on {loop}: {ours.legs_per_core / base.legs_per_core:.2f} "
        f"(per round: {', '.join(f'{r:.2f}' for r in rounds)}; "
        f"median {statistics.median(rounds):.2f})",
        flush=True,
    )


def summarize_sealed(
    algorithm: str, ours_runs: list[Measure], bare_runs: list[Measure], sealed: list[Measure]
) -> None:
    """Sealing to a customer key beside the service's keys, each as a ratio to bare."""
    base = pooled(bare_runs).legs_per_core
    with_key, without = pooled(sealed).legs_per_core, pooled(ours_runs).legs_per_core
    rounds = [s.legs_per_core / o.legs_per_core for s, o in zip(sealed, ours_runs, strict=True)]
    print(
        f"sealed to a customer key ({algorithm}): {with_key:,.0f} legs per fully used core"
        f" ({'held' if all(held(m) for m in sealed) else 'NOT held'} in every round)\n"
        f"ratio to bare: with customer keys {with_key / base:.2f}, without {without / base:.2f};"
        f" with/without {with_key / without:.2f} (per round:"
        f" {', '.join(f'{r:.2f}' for r in rounds)}; median {statistics.median(rounds):.2f})",
        flush=True,
    )


async def seal_to_a_new_key(
    http: aiohttp.ClientSession, base: str, token: str, algorithm: str
) -> None:
    """Register a fresh public key of `algorithm` for the account and activate it: its
    recordings are sealed to it from now on (the private half is thrown away)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import mlkem, rsa, x25519

    if algorithm == "hpke-mlkem768-x25519":
        raw = (
            mlkem.MLKEM768PrivateKey.generate().public_key().public_bytes_raw()
            + x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
        )
        public = base64.b64encode(raw).decode()
    else:
        key = (
            x25519.X25519PrivateKey.generate()
            if algorithm == "hpke-x25519"
            else rsa.generate_private_key(65537, 3072)
        )
        public = (
            key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
    headers = {"Authorization": f"Bearer {token}"}
    async with http.post(
        f"{base}/v1/encryption-keys",
        json={"algorithm": algorithm, "public_key": public},
        headers=headers,
    ) as resp:
        made = await resp.json()
        assert resp.status == 201, made
    async with http.post(
        f"{base}/v1/encryption-keys/{made['id']}/activate", headers=headers
    ) as resp:
        assert resp.status == 200, await resp.text()


def report_server_log(path: Path) -> None:
    """What the server warned of during the run, counted by message, with one example's
    fields: a lost frame or a closed leg has its cause there. The whole log is kept
    beside the data folder when there is anything to read in it."""
    counts: dict[tuple[str, str], int] = {}
    examples: dict[tuple[str, str], dict[str, object]] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            entry = {"level": "output", "msg": line[:120]}
        if not isinstance(entry, dict) or entry.get("level") in ("info", "debug"):
            continue
        key = (str(entry.get("level")), str(entry.get("msg")))
        counts[key] = counts.get(key, 0) + 1
        examples.setdefault(key, entry)
    if not counts:
        return
    kept = path.parent.with_name(path.parent.name + "-server.log")
    shutil.copyfile(path, kept)
    print(f"\nthe server's warnings (its log: {kept}):")
    for (level, msg), count in sorted(counts.items(), key=lambda item: -item[1]):
        extra = {
            k: v
            for k, v in examples[(level, msg)].items()
            if k not in ("ts", "level", "logger", "msg", "request_id", "exc_info")
        }
        print(f"  {count:>6} x {level}: {msg[:100]} {json.dumps(extra)[:200] if extra else ''}")


MOTO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


async def start_moto(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    """moto in server mode on a loopback port, with one bucket; (process, blob URL)."""
    port = free_port()
    log = open(data / "moto.log", "wb")  # noqa: SIM115, ASYNC230 - the child owns it
    moto = subprocess.Popen(  # noqa: ASYNC220 - once, before measuring
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            async with aiohttp.ClientSession() as http, http.put(f"{endpoint}/bench") as resp:
                if resp.status < 300:
                    break
        except aiohttp.ClientError:
            await asyncio.sleep(0.1)
    else:
        raise RuntimeError("moto did not start")
    return moto, f"s3://bench/recordings?endpoint={endpoint}&region=us-east-1"


if __name__ == "__main__":
    asyncio.run(main())
