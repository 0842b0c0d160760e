"""Many-nodes benchmark: paced legs spread over three nodes behind HAProxy, and one node alone.

    .venv/bin/python bench/nodes.py            # or: make bench

Three `telephony serve` nodes (tests/support/nodes.py: the shipped
deploy/haproxy.cfg, round robin, Debian's haproxy) share one PostgreSQL
cluster and one S3 bucket (moto in server mode on 127.0.0.1). N legs, each its
own call with a recording running, connect through HAProxy and send paced
μ-law frames (50 a second, JSON dialect, bench/ingest.py's client). N steps up
while every frame is stored, none is lost and the p99 ingest lag stays under
200 ms on every node (a step that fails is run once more: the machine may be
shared, and a busy spell passes). The largest N that held is then held for --hold-seconds
through HAProxy and, as the baseline of the same run, the same N straight to
one of the nodes (no HAProxy), --rounds times, alternating, so that a slow
spell of the shared machine does not fall on one side only. Figures printed,
per step and per hold: legs per node, each node's CPU fraction (the median of
one reading per 10 s), the CPU of PostgreSQL, HAProxy, moto and the client,
legs per fully used core (N ÷ the nodes' summed CPU), and the ratio 3-node ÷
1-node legs per core.

For the scaling plan (README "Many nodes"), each run also counts what the
shared services take: chunk rows written per second (PostgreSQL), the
transactions that carried them, NOTIFY messages (a LISTEN on every channel the
nodes use, split into opening the legs, pacing and closing), object-store PUTs
(`object_store_requests_total{op="put"}` of every node) and WAL bytes
(`pg_current_wal_lsn()` deltas), per second and per leg.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cpu_seconds, cpu_seconds_of, postgres_pids, sign_up, terminate
from bench.ingest import (
    FRAME,
    LAG_LIMIT_S,
    TICK_S,
    WINDOW_S,
    open_legs,
    p99_from_metrics,
    pace,
    start_moto,
    unbounded_session,
)
from storage.db import ensure_database
from storage.pgcluster import LocalCluster
from tests.support.nodes import Nodes, three_nodes

# Every channel a node LISTENs on (storage/recordings.py, webhooks.py, outbox.py, mail.py).
CHANNELS = ("recording_control", "webhook_events", "staff_notifications", "mail_messages")


class NotifyCounter:
    """A LISTEN on every channel: each NOTIFY the nodes send reaches it (and every node)."""

    def __init__(self) -> None:
        self.count = 0
        self.by_channel: dict[str, int] = {}
        self.conn: asyncpg.Connection | None = None

    async def start(self, dsn: str) -> None:
        self.conn = await asyncpg.connect(dsn)
        for channel in CHANNELS:
            await self.conn.add_listener(channel, self._on_notify)

    def _on_notify(self, _c: object, _pid: int, channel: str, _payload: object) -> None:
        self.count += 1
        self.by_channel[channel] = self.by_channel.get(channel, 0) + 1

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()


@dataclass
class NodeFigures:
    legs: int = 0
    cpu_fractions: list[float] = field(default_factory=list)
    p99_lag_s: float | None = None
    sent: int = 0
    stored: int = 0
    puts: float = 0.0

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpu_fractions) if self.cpu_fractions else 0.0

    @property
    def held(self) -> bool:
        return (
            self.stored >= self.sent
            and (self.legs == 0 or self.p99_lag_s is not None)
            and (self.p99_lag_s is None or self.p99_lag_s <= LAG_LIMIT_S)
        )


@dataclass
class Measure:
    legs: int
    route: str  # "haproxy" or the node's name
    seconds: float = 0.0
    nodes: dict[str, NodeFigures] = field(default_factory=dict)
    pg_cpu: float = 0.0
    haproxy_cpu: float = 0.0
    moto_cpu: float = 0.0
    client_cpu: float = 0.0
    chunk_rows: int = 0
    transactions: int = 0
    wal_bytes: int = 0
    notifies_open: int = 0
    notifies_paced: int = 0
    notifies_close: int = 0
    open_s: float = 0.0

    rounds_held: bool = True  # pooled rounds: every one of them held
    rounds: int = 1  # runs pooled into this one (each opened `legs` legs)

    @property
    def held(self) -> bool:
        return (
            self.rounds_held
            and all(f.held for f in self.nodes.values())
            and sum(f.legs for f in self.nodes.values()) == self.legs
        )

    @property
    def nodes_cpu(self) -> float:
        """The CPU of the nodes that carry legs (one, for the 1-node baseline)."""
        return sum(f.cpu for f in self.nodes.values() if f.legs)

    @property
    def idle_cpu(self) -> float:
        return sum(f.cpu for f in self.nodes.values() if not f.legs)

    @property
    def legs_per_core(self) -> float:
        return self.legs / self.nodes_cpu if self.nodes_cpu else float("inf")

    def per_s(self, value: float) -> float:
        return value / self.seconds if self.seconds else 0.0


@dataclass
class Rig:
    nodes: Nodes
    cluster: LocalCluster
    dsn: str
    moto_pid: int
    notifies: NotifyCounter
    http: aiohttp.ClientSession
    token: str = ""

    @property
    def names(self) -> list[str]:
        return [s.node_id for s in self.nodes.servers]

    def pid(self, name: str) -> int:
        process = self.nodes.named(name).process
        assert process is not None
        return process.pid

    @property
    def haproxy_pid(self) -> int:
        assert self.nodes.proxy.process is not None
        return self.nodes.proxy.process.pid


async def scrape(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(f"{url}/metrics") as resp:
        return await resp.text()


def puts_of(text: str) -> float:
    return sum(
        float(m.group(1))
        for m in re.finditer(r'object_store_requests_total\{[^}]*op="put"[^}]*\} ([0-9.e+]+)', text)
    )


async def db_counters(conn: asyncpg.Connection, ids: list[str]) -> tuple[int, int, int]:
    """(chunk rows of these recordings, committed transactions, WAL position in bytes)."""
    rows = await conn.fetchval(
        "SELECT count(*) FROM recording_chunks WHERE recording_id = ANY($1)", ids
    )
    xacts = await conn.fetchval(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    )
    wal = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")
    return int(rows), int(xacts), int(wal)


async def stored_by_recording(conn: asyncpg.Connection, ids: list[str]) -> dict[str, int]:
    """Frames stored per recording once all are completed (or 60 s have passed)."""
    for _ in range(300):
        unfinished = await conn.fetchval(
            "SELECT count(*) FROM recordings WHERE id = ANY($1) AND status <> 'completed'", ids
        )
        if not unfinished:
            break
        await asyncio.sleep(0.2)
    rows = await conn.fetch(
        """SELECT recording_id, coalesce(sum(samples), 0) AS samples FROM recording_chunks
           WHERE recording_id = ANY($1) GROUP BY recording_id""",
        ids,
    )
    return {r["recording_id"]: int(r["samples"]) // len(FRAME) for r in rows}


async def run(rig: Rig, n: int, seconds: float, route: str) -> Measure:
    """N legs through HAProxy (`route` "haproxy") or straight to the node named `route`."""
    base = rig.nodes.url if route == "haproxy" else rig.nodes.named(route).url
    m = Measure(n, route)
    notified = rig.notifies.count
    t_open = time.monotonic()
    legs = await open_legs(rig.http, base, rig.token, n)
    m.open_s = time.monotonic() - t_open
    await asyncio.sleep(1.0)  # writers are attached
    m.notifies_open = rig.notifies.count - notified
    ids = [leg.recording_id for leg in legs if leg.recording_id]
    conn = await asyncpg.connect(rig.dsn)
    try:
        placed = await conn.fetch("SELECT id, node_id FROM recordings WHERE id = ANY($1)", ids)
        node_of = {r["id"]: r["node_id"] for r in placed}
        m.nodes = {name: NodeFigures() for name in rig.names}
        for leg in legs:
            name = node_of.get(leg.recording_id or "")
            if name in m.nodes:
                m.nodes[name].legs += 1
        before = {name: await scrape(rig.http, rig.nodes.named(name).url) for name in rig.names}
        buckets = {name: p99_from_metrics(text, {})[1] for name, text in before.items()}
        rows0, xacts0, wal0 = await db_counters(conn, ids)
        pg = postgres_pids(rig.cluster)
        others = [rig.haproxy_pid, rig.moto_pid]
        pg0, ha0, moto0 = cpu_seconds_of(pg), *(cpu_seconds(p) for p in others)
        notified = rig.notifies.count
        client0, t0 = time.process_time(), time.monotonic()

        windows = max(1, round(seconds / WINDOW_S))
        ticks = int(seconds / windows / TICK_S)
        for window in range(windows):
            cpu0 = {name: cpu_seconds(rig.pid(name)) for name in rig.names}
            w0 = time.monotonic()
            await pace(legs, ticks * TICK_S, window * ticks)
            elapsed = time.monotonic() - w0
            for name in rig.names:
                used = cpu_seconds(rig.pid(name)) - cpu0[name]
                m.nodes[name].cpu_fractions.append(used / elapsed)

        m.seconds = time.monotonic() - t0
        m.client_cpu = (time.process_time() - client0) / m.seconds
        m.pg_cpu = (cpu_seconds_of(pg) - pg0) / m.seconds
        m.haproxy_cpu = (cpu_seconds(rig.haproxy_pid) - ha0) / m.seconds
        m.moto_cpu = (cpu_seconds(rig.moto_pid) - moto0) / m.seconds
        m.notifies_paced = rig.notifies.count - notified
        rows1, xacts1, wal1 = await db_counters(conn, ids)
        m.chunk_rows, m.transactions, m.wal_bytes = rows1 - rows0, xacts1 - xacts0, wal1 - wal0
        for name in rig.names:
            text = await scrape(rig.http, rig.nodes.named(name).url)
            m.nodes[name].p99_lag_s, _ = p99_from_metrics(text, buckets[name])
            m.nodes[name].puts = puts_of(text) - puts_of(before[name])

        notified = rig.notifies.count
        for leg in legs:
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                await leg.ws.send_str('{"event":"stop"}')
            await leg.ws.close()
        stored = await stored_by_recording(conn, ids)
        await asyncio.sleep(0.5)  # the last NOTIFYs of the closing
        m.notifies_close = rig.notifies.count - notified
    finally:
        await conn.close()
    for leg in legs:
        name = node_of.get(leg.recording_id or "")
        if name in m.nodes:
            m.nodes[name].sent += leg.sent
            m.nodes[name].stored += stored.get(leg.recording_id or "", 0)
    return m


async def compacted(rig: Rig) -> tuple[int, int]:
    """(finished recordings whose whole is written, finished recordings)."""
    conn = await asyncpg.connect(rig.dsn)
    try:
        row = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE compacted_at IS NOT NULL) AS done, count(*) AS all
               FROM recordings WHERE status IN ('completed', 'interrupted')"""
        )
    finally:
        await conn.close()
    return int(row["done"]), int(row["all"])


def pooled(runs: list[Measure]) -> Measure:
    """The rounds as one run: every window's CPU reading, every counter summed, the worst
    p99, the legs per node averaged."""
    first = runs[0]
    pool = Measure(first.legs, first.route, rounds_held=all(m.held for m in runs), rounds=len(runs))
    for name in first.nodes:
        figures = [m.nodes[name] for m in runs]
        lags = [f.p99_lag_s for f in figures if f.p99_lag_s is not None]
        pool.nodes[name] = NodeFigures(
            round(statistics.mean(f.legs for f in figures)),
            [c for f in figures for c in f.cpu_fractions],
            max(lags) if lags else None,
            sum(f.sent for f in figures),
            sum(f.stored for f in figures),
            sum(f.puts for f in figures),
        )
    pool.legs = first.legs
    for name in (
        "seconds",
        "chunk_rows",
        "transactions",
        "wal_bytes",
        "notifies_open",
        "notifies_paced",
        "notifies_close",
        "open_s",
    ):
        setattr(pool, name, sum(getattr(m, name) for m in runs))
    for name in ("pg_cpu", "haproxy_cpu", "moto_cpu", "client_cpu"):
        setattr(pool, name, statistics.median(getattr(m, name) for m in runs))
    return pool


def show(label: str, m: Measure) -> None:
    def lag(f: NodeFigures) -> str:
        return "-" if f.p99_lag_s is None else f"{f.p99_lag_s * 1000:.0f} ms"

    per_node = "; ".join(
        f"{name} {f.legs} legs CPU {f.cpu:.2f} p99 {lag(f)}"
        + ("" if f.stored >= f.sent else f" LOST {f.sent - f.stored}")
        for name, f in m.nodes.items()
    )
    total = m.nodes_cpu + m.idle_cpu + m.pg_cpu + m.haproxy_cpu + m.moto_cpu
    print(
        f"{label:>8} N={m.legs:4d} via {m.route}: {'held' if m.held else 'NOT held'}; "
        f"{per_node}\n{'':>10}nodes CPU {m.nodes_cpu:.2f} ({m.legs_per_core:,.0f} legs/core), "
        f"postgres {m.pg_cpu:.2f}, haproxy {m.haproxy_cpu:.2f}, moto {m.moto_cpu:.2f}, "
        f"client {m.client_cpu:.2f}; total {total:.2f} (+client {total + m.client_cpu:.2f}); "
        f"stored {sum(f.stored for f in m.nodes.values())}/"
        f"{sum(f.sent for f in m.nodes.values())} frames; "
        f"{m.per_s(m.chunk_rows):.0f} chunk rows/s, {m.per_s(m.transactions):.0f} xacts/s, "
        f"{m.per_s(sum(f.puts for f in m.nodes.values())):.1f} PUT/s, "
        f"{m.per_s(m.wal_bytes) / 1024:.0f} KiB WAL/s; legs opened in {m.open_s:.0f} s",
        flush=True,
    )


def show_idle(m: Measure) -> None:
    """What three nodes cost with no call at all: their workers, leases, health checks."""
    print(
        "    idle, no legs: nodes CPU "
        + " + ".join(f"{f.cpu:.3f}" for f in m.nodes.values())
        + f", postgres {m.pg_cpu:.3f}, haproxy {m.haproxy_cpu:.3f}, moto {m.moto_cpu:.3f}; "
        f"{m.per_s(m.transactions):.1f} xacts/s, {m.per_s(m.wal_bytes) / 1024:.1f} KiB WAL/s, "
        f"{m.per_s(m.notifies_paced):.2f} NOTIFY/s",
        flush=True,
    )


def show_scaling(m: Measure) -> None:
    """The shared services' load per second and per leg: what the scaling plan multiplies."""
    puts = sum(f.puts for f in m.nodes.values())
    n, opened = m.legs, m.legs * m.rounds
    rows, xacts, wal = m.per_s(m.chunk_rows), m.per_s(m.transactions), m.per_s(m.wal_bytes)
    each = rows / xacts if xacts else 0.0
    print(
        f"\nshared load while {n} legs recorded over 3 nodes ({m.seconds:.0f} s):\n"
        f"  chunk rows written  {rows:8.1f}/s   {rows / n:.3f}/s per leg\n"
        f"  transactions        {xacts:8.1f}/s   (all of them: {each:.1f} chunk rows each)"
        f"\n  WAL                 {wal / 1024:8.1f} KiB/s   {wal / n:,.0f} bytes/s per leg\n"
        f"  object-store PUTs   {m.per_s(puts):8.2f}/s   {m.per_s(puts) / n:.3f}/s per leg\n"
        f"  NOTIFY, pacing      {m.per_s(m.notifies_paced):8.2f}/s\n"
        f"  NOTIFY, per leg     {m.notifies_open / opened:.2f} opening (call, consent, start), "
        f"{m.notifies_close / opened:.2f} closing; each one delivered to every node's LISTEN\n"
        f"  postgres CPU        {m.pg_cpu:8.2f}     {m.pg_cpu / n * 1000:.2f} ms/s per leg",
        flush=True,
    )


@contextlib.asynccontextmanager
async def rig(data: Path, loop: str, part_seconds: int | None) -> AsyncIterator[Rig]:
    cluster = LocalCluster(data / "postgres")
    moto = None
    notifies = NotifyCounter()
    await asyncio.to_thread(cluster.ensure_running)
    try:
        dsn = cluster.dsn()
        await ensure_database(dsn)
        moto, blob_url = await start_moto(data)
        extra = {
            "TELEPHONY_EVENT_LOOP": loop,
            "TELEPHONY_ARGON2_MEMORY_KIB": "8192",
            "TELEPHONY_ARGON2_ITERATIONS": "1",
            "TELEPHONY_ARGON2_LANES": "1",
        }
        if part_seconds:
            extra["TELEPHONY_SPOOL_PART_S"] = str(part_seconds)
        async with three_nodes(dsn, blob_url, data, **extra) as nodes, unbounded_session() as http:
            await notifies.start(dsn)
            yield Rig(nodes, cluster, dsn, moto.pid, notifies, http)
    finally:
        await notifies.close()
        terminate(moto, timeout_s=10)
        await asyncio.to_thread(cluster.stop)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="50,100,200,300,350,400,450,500")
    parser.add_argument("--max-legs", type=int, help="leave out the steps above this N")
    parser.add_argument("--step-seconds", type=float, default=10.0)
    parser.add_argument("--hold-seconds", type=float, default=60.0)
    parser.add_argument(
        "--rounds", type=int, default=2, help="3-node-then-1-node holds to alternate"
    )
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument(
        "--part-seconds",
        type=int,
        help="TELEPHONY_SPOOL_PART_S of the nodes (default: the server's, 10 s; "
        "docker-compose.yml uses 2)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data folder (logs)")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    if args.max_legs:
        steps = [s for s in steps if s <= args.max_legs] or [args.max_legs]

    data = Path(tempfile.mkdtemp(prefix="bench-nodes-", dir="/tmp"))
    started = time.monotonic()
    print(
        f"nodes benchmark on {os.cpu_count()} cores: 3 nodes behind HAProxy, loop {args.loop}, "
        f"parts every {args.part_seconds or 10} s to moto; data in {data}",
        flush=True,
    )
    try:
        async with rig(data, args.loop, args.part_seconds) as r:
            r.token = await sign_up(r.http, r.nodes.url)
            idle = await run(r, 0, args.step_seconds, "haproxy")
            show_idle(idle)
            best = 0
            for n in steps:
                m = await run(r, n, args.step_seconds, "haproxy")
                show("step", m)
                if not m.held:  # once more: the machine is shared, a busy spell passes
                    m = await run(r, n, args.step_seconds, "haproxy")
                    show("again", m)
                if not m.held:
                    break
                best = n
            if not best:
                print("no step held; nothing to hold for long")
                return
            spreads, alones = [], []
            for number in range(1, args.rounds + 1):
                spreads.append(await run(r, best, args.hold_seconds, "haproxy"))
                show(f"3 nodes#{number}", spreads[-1])
                alones.append(await run(r, best, args.hold_seconds, r.names[0]))
                show(f"1 node#{number}", alones[-1])
            compaction = await compacted(r)
        spread, alone = pooled(spreads), pooled(alones)
        rounds = [s.legs_per_core / a.legs_per_core for s, a in zip(spreads, alones, strict=True)]
        report(best, args.hold_seconds, spread, alone, rounds)
        print(
            f"  compaction          {compaction[0]} of {compaction[1]} finished recordings "
            f"compacted by the end ({time.monotonic() - started:.0f} s of run; one node at a "
            "time, 20 a pass, a pass a minute)",
            flush=True,
        )
    finally:
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)


def report(best: int, hold_s: float, spread: Measure, alone: Measure, rounds: list[float]) -> None:
    one = alone.nodes[next(iter(alone.nodes))]
    both = "held" if spread.held and alone.held else "NOT held"
    print(
        f"\nlargest N held over 3 nodes: {best} legs, then "
        f"{len(rounds)} x {hold_s:.0f} s each way, alternating ({both}: "
        f"3 nodes {'held' if spread.held else 'NOT held'}, "
        f"1 node {'held' if alone.held else 'NOT held'})\n"
        f"3 nodes: {spread.legs_per_core:,.0f} legs per fully used core (nodes' CPU "
        f"{spread.nodes_cpu:.2f} = "
        + " + ".join(f"{f.cpu:.2f}" for f in spread.nodes.values())
        + f"; with HAProxy's {spread.haproxy_cpu:.2f}: "
        f"{spread.legs / (spread.nodes_cpu + spread.haproxy_cpu):,.0f} legs/core)\n"
        f"1 node:  {alone.legs_per_core:,.0f} legs per fully used core (its CPU {one.cpu:.2f}, "
        f"the idle two {alone.idle_cpu:.2f})\n"
        f"ratio 3-node/1-node legs per core: {spread.legs_per_core / alone.legs_per_core:.2f} "
        f"(with HAProxy counted: "
        f"{spread.legs / (spread.nodes_cpu + spread.haproxy_cpu) / alone.legs_per_core:.2f}; "
        f"per round: {', '.join(f'{x:.2f}' for x in rounds)})",
        flush=True,
    )
    show_scaling(spread)


if __name__ == "__main__":
    asyncio.run(main())
