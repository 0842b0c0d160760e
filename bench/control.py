"""Control API benchmark: paced call lifecycles against a real server process, and a bare baseline.

    .venv/bin/python bench/control.py           # about 7 minutes with the defaults

A real server process (`python -m telephony serve`, its own PostgreSQL
cluster and master key) gets one account through the API and one API key
with every scope (`calls`, `recordings:write`, `recordings:read`): a
telephony engine's credentials, used for every request measured. The client
then drives call lifecycles, each a sequence of requests:

    POST /v1/calls                      open the call, one counterpart
    POST /v1/calls/{id}/consents        the counterpart grants (announcement)
    POST /v1/calls/{id}/recordings      the gate: consent checked, recording starts (201)
    POST /v1/recordings/{rec}/stop      even calls: the recording is stopped
      or POST /v1/calls/{id}/consents   odd calls: a revocation (verbal), which stops it
    POST /v1/calls/{id}/end             the call ends

at a paced --rate requests a second (200), open loop: request slots lie
1/rate apart (5 ms) on a fixed schedule, and each is sent at its time
whether or not earlier requests have returned. Slot n goes to step n mod 5
of call n // 5 - (n mod 5) x L, so one call's steps lie (5L + 1) slots apart
(L is chosen for about 200 ms: 205 ms at 200/s) and some thirty calls are in
flight at once, their steps interleaved. A step whose predecessor in the
same call has not yet answered waits for it (a call's steps are
sequential); a send more than 50 ms after its slot is counted and printed,
with how many of those waited on their predecessor, so a schedule that fell
behind cannot pass for a fast server. Latency is from the actual send to
the last byte of the response. Figures cover the requests whose slots lie
in the --seconds window after a warm-up (which also fills the pipeline, so
every slot of the window is used); calls still open at its end run to
completion outside it. Every status other than the expected one, and every
client error, is counted and printed, and makes the exit status 1.

Printed for ours: p50 and p99 of the gate and of a revocation (and, for
information, of the other steps), the rate achieved (requests sent in the
window, and answered in it, per second), the server process's CPU fraction,
PostgreSQL's (the database, not the server process), the client's own, and
the gate's p99 as the service's own /metrics histogram saw it (handler time,
interpolated within its buckets): beside the client's p99 it says whether
the time goes inside the handler or before and after it. And where
PostgreSQL's time goes: its busy client backends (pg_stat_activity, every
100 ms through the window), by state and wait event, with the statement
for lock waits; "idle in transaction" is a transaction waiting for the
server process's next statement.

The baseline is a bare aiohttp server on the same event loop kind
(--loop, uvloop by default) whose one handler reads a small JSON body,
checks for a Bearer header, and does one PostgreSQL round trip through an
asyncpg pool (SELECT now(); the pool's reset on release is a no-op, so it is
one round trip, not two) against the same cluster, driven by the same
client at the same paced rate with requests of the same shape. The pair
ours-then-bare is repeated --rounds times on the same two processes,
alternating, so that a slow spell of the shared machine does not fall on
one side only. Each round is printed; over all rounds, the verdicts use the
median of the per-round p99s (the p99 of all samples pooled is printed
beside it). Goals: gate p99 <= 20 ms, and gate p99 within 2x the bare
handler's p99 (the ratio gate p99 / bare p99 is printed, per round too);
the revocation's p99 is held to the same two.

--floor adds, for information, a third run per round on the bare server:
BEGIN, a one-row INSERT, COMMIT (a WAL flush), the least any recorded
decision costs. Beside the bare figure it says how much of the gap is
durability and how much is the gate's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROOT,
    OurServer,
    cpu_seconds,
    free_port,
    postgres_pids,
    sign_up,
    terminate,
    wait_ready,
)
from storage.pgcluster import LocalCluster

CALL_BODY: dict[str, Any] = {
    "direction": "inbound",
    "from": "+48601234567",
    "to": "+48221234567",
    "counterparts": [{"label": "caller", "number": "+48601234567"}],
}
SCOPES = ["calls", "recordings:write", "recordings:read"]
STEPS = 5  # create, grant, gate, stop or revoke, end
STEP_GAP_S = 0.2  # about this far apart on the schedule: one call's consecutive steps
WARMUP_S = 2.0  # at least: also long enough to fill the pipeline of interleaved calls
LATE_S = 0.05  # a send this far behind its slot is counted
GOAL_P99_S = 0.020
GOAL_RATIO = 2.0
GATE_ROUTE = "/v1/calls/{id}/recordings"
PG_SAMPLE_S = 0.1
PG_WAITS_SQL = """
SELECT state, wait_event_type, wait_event, left(query, 60) AS query FROM pg_stat_activity
WHERE backend_type = 'client backend' AND state <> 'idle' AND pid <> pg_backend_pid()
"""
# Ours, in the order printed; `revoke` is a POST /v1/calls/{id}/consents like `grant`.
KINDS = ("create", "grant", "gate", "stop", "revoke", "end")
BARE = "bare"
FLOOR = "floor"  # --floor: the bare server's durable one-row write transaction

BARE_SERVER = textwrap.dedent(
    """
    import sys
    import asyncpg
    from aiohttp import web

    POOL = web.AppKey("pool", asyncpg.Pool)

    async def keep_session(conn):
        pass  # no reset query on release: one round trip per request

    async def op(request):
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            raise web.HTTPUnauthorized()
        body = await request.json()
        async with request.app[POOL].acquire() as conn:
            now = await conn.fetchval("SELECT now()")
        return web.json_response({"fields": len(body), "at": now.isoformat()}, status=201)

    async def durable(request):
        # The least a recorded decision costs: BEGIN, one row, COMMIT (a WAL flush).
        if not request.headers.get("Authorization", "").startswith("Bearer "):
            raise web.HTTPUnauthorized()
        body = await request.json()
        async with request.app[POOL].acquire() as conn, conn.transaction():
            now = await conn.fetchval("INSERT INTO bench_floor (at) VALUES (now()) RETURNING at")
        return web.json_response({"fields": len(body), "at": now.isoformat()}, status=201)

    async def healthz(request):
        return web.json_response({"status": "ok"})

    async def pool(app):
        app[POOL] = await asyncpg.create_pool(
            sys.argv[3], min_size=1, max_size=10, reset=keep_session
        )
        async with app[POOL].acquire() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS bench_floor"
                " (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at timestamptz NOT NULL)"
            )
        yield
        await app[POOL].close()

    app = web.Application()
    app.cleanup_ctx.append(pool)
    app.router.add_post("/v1/op", op)
    app.router.add_post("/v1/durable", durable)
    app.router.add_get("/healthz", healthz)
    loop = sys.argv[2]
    if loop == "uvloop":
        import uvloop
        uvloop.install()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
    """
)
BARE_BODY: dict[str, Any] = {
    "counterpart_id": "cp_0123456789abcdef",
    "decision": "granted",
    "method": "announcement",
}


class BareServer:
    """The baseline: aiohttp and one asyncpg round trip per request, on the same loop kind."""

    def __init__(self, loop_name: str, dsn: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-c", BARE_SERVER, str(self.port), loop_name, dsn]
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.process = subprocess.Popen(self.args, cwd=ROOT)  # noqa: ASYNC220 - once, before measuring
        await wait_ready(f"{self.url}/healthz", self.process)

    def stop(self) -> None:
        terminate(self.process, timeout_s=30)


def pg_cpu(cluster: LocalCluster) -> dict[int, float]:
    """CPU seconds of each of the cluster's processes now running, by pid."""
    spent: dict[int, float] = {}
    for pid in postgres_pids(cluster):
        with contextlib.suppress(OSError):
            spent[pid] = cpu_seconds(pid)
    return spent


# -- figures ------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.1f} ms"


@dataclass
class Run:
    """One paced run: what was planned inside the window, and what the processes spent."""

    label: str
    bare: bool
    seconds: float = 0.0
    latencies: dict[str, list[float]] = field(default_factory=dict)
    sent: int = 0  # requests sent inside the window
    answered: int = 0  # responses completed inside the window
    failures: Counter[str] = field(default_factory=Counter)  # anywhere, warm-up and tail too
    examples: dict[str, str] = field(default_factory=dict)
    skipped: int = 0  # steps not sent because an earlier step of their call failed
    late: int = 0  # window slots sent more than LATE_S after their time
    late_waiting: int = 0  # of those: the call's previous step was still unanswered then
    max_late_s: float = 0.0
    server_cpu: float = 0.0
    pg_cpu: float = 0.0
    client_cpu: float = 0.0
    handler_p99: float | None = None  # the gate, from the service's /metrics
    pg_waits: list[tuple[str, float]] = field(default_factory=list)  # busy backends per sample

    def p(self, kind: str, q: float) -> float | None:
        values = self.latencies.get(kind)
        return quantile(values, q) if values else None

    def count(self, kind: str) -> int:
        return len(self.latencies.get(kind, []))

    def fail_count(self) -> int:
        return sum(self.failures.values())


class Driver:
    """Sends requests at their slots, times them and keeps the tally of one run."""

    def __init__(
        self, http: aiohttp.ClientSession, base: str, token: str, rate: float, run: Run
    ) -> None:
        self.http = http
        self.base = base
        self.headers = {"Authorization": f"Bearer {token}"}
        self.interval = 1.0 / rate
        self.run = run
        self.loop = asyncio.get_running_loop()
        self.t0 = 0.0
        self.window = (0.0, 0.0)

    def at(self, slot: int) -> float:
        return self.t0 + slot * self.interval

    def inside(self, t: float) -> bool:
        return self.window[0] <= t < self.window[1]

    async def post(
        self,
        kind: str,
        planned: float,
        ready: float | None,
        path: str,
        body: dict[str, Any],
        expect: int,
    ) -> tuple[bytes | None, float]:
        """POST at `planned` (or at once, if behind); the body, or None if it failed, and
        when it ended. `ready`: when the call's previous step answered."""
        delay = planned - self.loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        run = self.run
        sent = self.loop.time()
        measured = self.inside(planned)
        if measured and sent - planned > LATE_S:
            run.late += 1
            run.late_waiting += ready is not None and ready > planned
        if measured:
            run.max_late_s = max(run.max_late_s, sent - planned)
        run.sent += self.inside(sent)
        failure: str | None = None
        try:
            async with self.http.post(self.base + path, json=body, headers=self.headers) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure, raw, status = f"{kind}: {type(exc).__name__}", str(exc).encode(), 0
        done = self.loop.time()
        run.answered += self.inside(done)
        if failure is None and status != expect:
            failure = f"{kind}: HTTP {status} (expected {expect})"
        if failure is not None:
            run.failures[failure] += 1
            run.examples.setdefault(failure, raw[:300].decode(errors="replace"))
            return None, done
        if measured:
            run.latencies.setdefault(kind, []).append(done - sent)
        return raw, done


class OursPlan:
    """Call c's step j goes in slot STEPS * (c + j * lag) + j: a bijection of calls' steps
    onto the slots, one call's steps STEPS * lag + 1 slots apart."""

    def __init__(self, rate: float) -> None:
        self.lag = max(1, round(STEP_GAP_S * rate / STEPS))
        self.fill_s = (STEPS - 1) * (STEPS * self.lag + 1) / rate  # a call's first to last step

    def slot(self, call: int, step: int) -> int:
        return STEPS * (call + step * self.lag) + step

    def calls_before(self, slot: int) -> int:
        """Calls whose first step lies before `slot`."""
        return math.ceil(slot / STEPS)


async def one_call(d: Driver, plan: OursPlan, c: int) -> None:
    planned = [d.at(plan.slot(c, j)) for j in range(STEPS)]
    raw, done = await d.post("create", planned[0], None, "/v1/calls", CALL_BODY, 201)
    if raw is None:
        d.run.skipped += STEPS - 1
        return
    call = json.loads(raw)
    path = f"/v1/calls/{call['id']}"
    counterpart = call["counterparts"][0]["id"]
    grant = {"counterpart_id": counterpart, "decision": "granted", "method": "announcement"}
    raw, done = await d.post("grant", planned[1], done, f"{path}/consents", grant, 201)
    if raw is not None:
        raw, done = await d.post("gate", planned[2], done, f"{path}/recordings", {}, 201)
        if raw is not None:
            if c % 2 == 0:
                rec = json.loads(raw)["id"]
                stop = f"/v1/recordings/{rec}/stop"
                _, done = await d.post("stop", planned[3], done, stop, {}, 200)
            else:
                revoke = {"counterpart_id": counterpart, "decision": "revoked", "method": "verbal"}
                _, done = await d.post("revoke", planned[3], done, f"{path}/consents", revoke, 201)
        else:
            d.run.skipped += 1
    else:
        d.run.skipped += 2
    await d.post("end", planned[4], done, f"{path}/end", {}, 200)


async def one_bare(d: Driver, slot: int, kind: str = BARE) -> None:
    path = "/v1/op" if kind == BARE else "/v1/durable"
    await d.post(kind, d.at(slot), None, path, BARE_BODY, 201)


def handler_buckets(text: str, route: str) -> dict[float, float]:
    """POST `route`'s cumulative http_request_duration_seconds buckets in /metrics text."""
    buckets: dict[float, float] = {}
    pattern = r"^http_request_duration_seconds_bucket\{(.*)\} (\S+)$"
    for match in re.finditer(pattern, text, re.MULTILINE):
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1)))
        if labels.get("method") == "POST" and labels.get("route") == route:
            le = float("inf") if labels["le"] == "+Inf" else float(labels["le"])
            buckets[le] = float(match.group(2))
    return buckets


def bucket_quantile(
    before: dict[float, float], after: dict[float, float], q: float
) -> float | None:
    """q of what was observed between two readings, linear within the bucket it falls in."""
    delta = {le: count - before.get(le, 0.0) for le, count in after.items()}
    total = delta.get(float("inf"), 0.0)
    if total <= 0:
        return None
    rank, low, below = q * total, 0.0, 0.0
    for le in sorted(delta):
        if delta[le] >= rank:
            if math.isinf(le):
                return low  # beyond the last finite bucket: its bound, a floor
            span = delta[le] - below
            return low + (le - low) * ((rank - below) / span if span else 1.0)
        low, below = le, delta[le]
    return None


async def paced(
    http: aiohttp.ClientSession,
    run: Run,
    base: str,
    token: str,
    rate: float,
    seconds: float,
    pid: int,
    cluster: LocalCluster,
    spawn: Callable[[Driver], list[tuple[float, Callable[[], Awaitable[None]]]]],
    warmup_s: float,
    metrics_url: str | None = None,
) -> Run:
    """Run the schedule `spawn` lays out (start times and coroutines, in time order),
    reading CPU (and the gate's handler histogram) at the window's edges."""
    d = Driver(http, base, token, rate, run)
    d.t0 = d.loop.time() + 0.5
    d.window = (d.t0 + warmup_s, d.t0 + warmup_s + seconds)
    run.seconds = seconds

    async def edges() -> None:
        await asyncio.sleep(d.window[0] - d.loop.time())
        before = await buckets()
        cpu0, pg0, client0 = cpu_seconds(pid), pg_cpu(cluster), time.process_time()
        t0 = d.loop.time()
        await asyncio.sleep(d.window[1] - d.loop.time())
        cpu1, pg1, client1 = cpu_seconds(pid), pg_cpu(cluster), time.process_time()
        elapsed = d.loop.time() - t0
        run.server_cpu = (cpu1 - cpu0) / elapsed
        # A backend that exited meanwhile is lost; one started meanwhile counts from its start.
        run.pg_cpu = sum(cpu - pg0.get(p, 0.0) for p, cpu in pg1.items()) / elapsed
        run.client_cpu = (client1 - client0) / elapsed
        if metrics_url is not None:
            run.handler_p99 = bucket_quantile(before, await buckets(), 0.99)

    async def waits() -> None:
        """What PostgreSQL's busy backends are doing, sampled through the window."""
        conn = await asyncpg.connect(cluster.dsn())
        seen: Counter[str] = Counter()
        samples = 0
        try:
            await asyncio.sleep(d.window[0] - d.loop.time())
            while d.loop.time() < d.window[1]:
                for row in await conn.fetch(PG_WAITS_SQL):
                    what = f"{row['state']} {row['wait_event_type']}/{row['wait_event']}"
                    if row["wait_event_type"] == "Lock":
                        what += f" in {row['query']!r}"
                    seen[what] += 1
                samples += 1
                await asyncio.sleep(PG_SAMPLE_S)
        finally:
            await conn.close()
        run.pg_waits = [(what, n / samples) for what, n in seen.most_common()]

    async def buckets() -> dict[float, float]:
        if metrics_url is None:
            return {}
        async with http.get(metrics_url) as resp:
            return handler_buckets(await resp.text(), GATE_ROUTE)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(edges())
        if metrics_url is not None:
            tasks.create_task(waits())
        for start, work in spawn(d):
            delay = start - 0.1 - d.loop.time()  # a little ahead: the task sleeps to its slot
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.create_task(work())
    return run


async def run_ours(
    http: aiohttp.ClientSession,
    server: OurServer,
    key: str,
    rate: float,
    seconds: float,
    label: str,
) -> Run:
    assert server.process is not None
    plan = OursPlan(rate)
    warmup_s = max(WARMUP_S, plan.fill_s + 1.0)

    def spawn(d: Driver) -> list[tuple[float, Callable[[], Awaitable[None]]]]:
        calls = plan.calls_before(round((warmup_s + seconds) * rate))
        return [(d.at(plan.slot(c, 0)), partial(one_call, d, plan, c)) for c in range(calls)]

    return await paced(
        http,
        Run(label, bare=False),
        server.url,
        key,
        rate,
        seconds,
        server.process.pid,
        server.cluster,
        spawn,
        warmup_s,
        f"{server.url}/metrics",
    )


async def run_bare(
    http: aiohttp.ClientSession,
    bare: BareServer,
    server: OurServer,
    key: str,
    rate: float,
    seconds: float,
    label: str,
    kind: str = BARE,
) -> Run:
    assert bare.process is not None
    warmup_s = max(WARMUP_S, OursPlan(rate).fill_s + 1.0)  # the same warm-up as ours

    def spawn(d: Driver) -> list[tuple[float, Callable[[], Awaitable[None]]]]:
        slots = round((warmup_s + seconds) * rate)
        return [(d.at(n), partial(one_bare, d, n, kind)) for n in range(slots)]

    return await paced(
        http,
        Run(label, bare=True),
        bare.url,
        key,
        rate,
        seconds,
        bare.process.pid,
        server.cluster,
        spawn,
        warmup_s,
    )


# -- output ----------------------------------------------------------------------------


def pq(run: Run, kind: str) -> str:
    return f"p50 {ms(run.p(kind, 0.5))}, p99 {ms(run.p(kind, 0.99))} (n={run.count(kind)})"


def show(run: Run) -> None:
    late = (
        f"late sends (> {LATE_S * 1000:.0f} ms behind their slot) {run.late}"
        f" ({run.late_waiting} waiting on their call's previous step), "
        f"max {ms(run.max_late_s)}"
    )
    common = (
        f"{run.sent / run.seconds:.1f} req/s sent, {run.answered / run.seconds:.1f} answered "
        f"over {run.seconds:.0f} s; server CPU {run.server_cpu:.2f}, "
        f"postgres CPU {run.pg_cpu:.2f}, client CPU {run.client_cpu:.2f}; {late}; "
        f"failed {run.fail_count()}, skipped {run.skipped}"
    )
    indent = " " * 12
    if run.bare:
        kind = FLOOR if FLOOR in run.latencies else BARE
        print(f"{run.label:>10}: {kind} {pq(run, kind)}\n{indent}{common}", flush=True)
    else:
        others = "; ".join(
            f"{kind} {ms(run.p(kind, 0.5))}/{ms(run.p(kind, 0.99))}"
            for kind in KINDS
            if kind not in ("gate", "revoke")
        )
        print(
            f"{run.label:>10}: gate {pq(run, 'gate')}; revoke {pq(run, 'revoke')}; "
            f"gate p99 in the handler (its /metrics) ~{ms(run.handler_p99)}\n"
            f"{indent}{common}\n"
            f"{indent}other steps p50/p99: {others}",
            flush=True,
        )
    if run.pg_waits:
        top = ", ".join(f"{n:.2f} {what}" for what, n in run.pg_waits[:5])
        print(
            f"{indent}postgres busy backends (mean per {PG_SAMPLE_S * 1000:.0f} ms sample): {top}"
        )
    if run.client_cpu > 0.8:
        print(f"{indent}client CPU {run.client_cpu:.2f}: the client may be the bottleneck")
    for failure, n in run.failures.most_common():
        print(f"{indent}FAILED {n} x {failure}: {run.examples[failure]}", flush=True)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def summary(
    ours: list[Run], bare: list[Run], floor: list[Run], rate: float, seconds: float, loop: str
) -> None:
    def med(runs: list[Run], kind: str, q: float) -> float | None:
        values = [v for v in (r.p(kind, q) for r in runs) if v is not None]
        return statistics.median(values) if values else None

    def pooled(runs: list[Run], kind: str) -> tuple[float | None, int]:
        values = [v for r in runs for v in r.latencies.get(kind, [])]
        return (quantile(values, 0.99) if values else None), len(values)

    bare_p99 = med(bare, BARE, 0.99)
    lines = [
        f"\nover {len(ours)} rounds of {seconds:.0f} s at {rate:.0f} req/s on {loop} "
        f"(p50, p99: medians of the per-round figures, which the verdicts use; "
        f"in brackets the p99 of all rounds' samples pooled)"
    ]
    for kind, name in (
        ("gate", "gate (POST /v1/calls/{id}/recordings)"),
        ("revoke", "revocation (POST /v1/calls/{id}/consents, revoked)"),
    ):
        p99_all, n = pooled(ours, kind)
        lines.append(
            f"{name}: p50 {ms(med(ours, kind, 0.5))}, p99 {ms(med(ours, kind, 0.99))} "
            f"[pooled p99 {ms(p99_all)}, n={n}]"
        )
    p99_all, n = pooled(bare, BARE)
    lines.append(
        f"bare (aiohttp + one asyncpg round trip): p50 {ms(med(bare, BARE, 0.5))}, "
        f"p99 {ms(bare_p99)} [pooled p99 {ms(p99_all)}, n={n}]"
    )
    if floor:
        floor_p99, (p99_all, n) = med(floor, FLOOR, 0.99), pooled(floor, FLOOR)
        lines.append(
            f"floor, for information (the bare server's BEGIN, one-row INSERT, COMMIT): "
            f"p50 {ms(med(floor, FLOOR, 0.5))}, p99 {ms(floor_p99)} "
            f"[pooled p99 {ms(p99_all)}, n={n}]; floor p99 / bare p99 = "
            + ("n/a" if floor_p99 is None or not bare_p99 else f"{floor_p99 / bare_p99:.2f}")
        )
    lines.append(
        "achieved rate: ours "
        + ", ".join(f"{r.sent / r.seconds:.1f}" for r in ours)
        + " req/s sent; bare "
        + ", ".join(f"{r.sent / r.seconds:.1f}" for r in bare)
        + f"; late sends ours {sum(r.late for r in ours)}, bare {sum(r.late for r in bare)}"
    )
    lines.append(
        f"server CPU (median of rounds): ours {statistics.median(r.server_cpu for r in ours):.2f}"
        f", bare {statistics.median(r.server_cpu for r in bare):.2f}; postgres CPU: ours "
        f"{statistics.median(r.pg_cpu for r in ours):.2f}, bare "
        f"{statistics.median(r.pg_cpu for r in bare):.2f}; client CPU: ours "
        f"{statistics.median(r.client_cpu for r in ours):.2f}, bare "
        f"{statistics.median(r.client_cpu for r in bare):.2f}"
    )
    for kind, name in (("gate", "gate"), ("revoke", "revocation")):
        p99 = med(ours, kind, 0.99)
        lines.append(
            f"goal {name} p99 <= {GOAL_P99_S * 1000:.0f} ms: {ms(p99)} "
            f"{verdict(p99 is not None and p99 <= GOAL_P99_S)}"
        )
        per_round = [
            f"{o / b:.2f}"
            for o, b in (
                (o.p(kind, 0.99), b.p(BARE, 0.99)) for o, b in zip(ours, bare, strict=True)
            )
            if o is not None and b
        ]
        ratio = p99 / bare_p99 if p99 is not None and bare_p99 else None
        shown = "n/a" if ratio is None else f"{ratio:.2f}"
        lines.append(
            f"goal {name} p99 within {GOAL_RATIO:.0f}x bare p99: {name} p99 / bare p99 = "
            f"{shown} (per round: {', '.join(per_round)}) "
            f"{verdict(ratio is not None and ratio <= GOAL_RATIO)}"
        )
    failed = sum(r.fail_count() for r in ours + bare + floor)
    lines.append(
        f"failed requests: {failed}"
        + ("" if not failed else " (each printed with its round above): the run FAILED")
    )
    print("\n".join(lines), flush=True)


# -- the run -------------------------------------------------------------------------


async def api_key(http: aiohttp.ClientSession, base: str, session: str) -> str:
    """An API key with every scope, as a telephony engine holds one."""
    async with http.post(
        f"{base}/v1/api-keys",
        headers={"Authorization": f"Bearer {session}"},
        json={"name": "bench", "scopes": SCOPES},
    ) as resp:
        body = await resp.json()
        if resp.status != 201:
            raise RuntimeError(f"POST /v1/api-keys answered {resp.status}: {body}")
    return str(body["token"])


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window per run")
    parser.add_argument("--rate", type=float, default=200.0, help="requests a second, paced")
    parser.add_argument("--rounds", type=int, default=3, help="ours-then-bare pairs to alternate")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server.log)")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="each round also runs the bare server's durable one-row write (for information)",
    )
    args = parser.parse_args()
    if args.rounds < 1 or args.seconds <= 0 or args.rate <= 0:
        parser.error("--rounds, --seconds and --rate must be positive")

    task = asyncio.current_task()
    assert task is not None
    # SIGTERM cancels like Ctrl-C does, so the finally below still stops everything.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    data = Path(tempfile.mkdtemp(prefix="bench-control-", dir="/tmp"))
    server = OurServer(data, args.loop)
    bare = BareServer(args.loop, server.cluster.dsn())
    plan = OursPlan(args.rate)
    print(
        f"control benchmark on {os.cpu_count()} cores, server loop: {args.loop}, "
        f"{args.rate:.0f} req/s paced for {args.seconds:.0f} s, {args.rounds} rounds; "
        f"a call's steps {STEPS * plan.lag + 1} slots "
        f"({(STEPS * plan.lag + 1) / args.rate * 1000:.0f} ms) apart",
        flush=True,
    )
    ours: list[Run] = []
    base: list[Run] = []
    floor: list[Run] = []
    try:
        try:
            await server.start()
        except RuntimeError:
            log = data / "server.log"
            tail = log.read_text(errors="replace").splitlines()[-20:] if log.exists() else []
            print("the server did not start; the end of its log:", *tail, sep="\n  ", flush=True)
            raise
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            key = await api_key(http, server.url, await sign_up(http, server.url))
            await bare.start()
            for number in range(1, args.rounds + 1):
                ours.append(
                    await run_ours(http, server, key, args.rate, args.seconds, f"ours #{number}")
                )
                show(ours[-1])
                await asyncio.sleep(1.0)
                base.append(
                    await run_bare(
                        http, bare, server, key, args.rate, args.seconds, f"bare #{number}"
                    )
                )
                show(base[-1])
                await asyncio.sleep(1.0)
                if args.floor:
                    floor.append(
                        await run_bare(
                            http,
                            bare,
                            server,
                            key,
                            args.rate,
                            args.seconds,
                            f"floor #{number}",
                            FLOOR,
                        )
                    )
                    show(floor[-1])
                    await asyncio.sleep(1.0)
        summary(ours, base, floor, args.rate, args.seconds, args.loop)
    finally:
        bare.stop()
        server.stop()
        if server.cluster.root.exists():  # not made when the server failed early
            server.cluster.stop()
        if args.keep:
            print(f"kept {data} (server log: {data / 'server.log'})", flush=True)
        else:
            shutil.rmtree(data, ignore_errors=True)
    return 1 if any(r.fail_count() for r in ours + base) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
