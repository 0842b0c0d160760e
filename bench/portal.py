"""Portal list pages with 100,000 recordings in one account, against the JSON lists.

    .venv/bin/python bench/portal.py             # or: make bench

A real server process (`python -m telephony serve`, its own PostgreSQL
cluster) gets one account through the API, and one real call with its
counterpart, consent, a recording (started, stopped) and the call ended,
all through the API. That call is then cloned in SQL to --recordings calls
(100,000 by default), one minute apart, each with its counterpart, consent
event, recording and coverage segment: the rows the pages read, as the
service writes them, and enough of them that a missing index or a query per
row shows.

A person signs in through the portal's own form (cookie session, CSRF
token). The client then asks, --runs times each, in turn:

    GET /calls                        the portal's first page (25, newest first)
    GET /calls?cursor=...             a page 50,000 calls deep (keyset)
    GET /calls?number=+4860...        filtered by number (matches every call)
    GET /calls?number=+1415...        a number no call has: the whole account searched
    GET /calls?has_recording=false    a filter no call passes: the same
    GET /recordings                   first page of recordings
    GET /recordings?cursor=...        a page 50,000 deep
    GET /v1/calls?limit=25            the JSON list of the same size (API key)
    GET /v1/calls?limit=25&cursor=... and 50,000 deep
    GET /v1/recordings?limit=25       (and deep)

one request at a time, each timed from send to last byte. Printed: p50 and
p95 per page, and for each portal page the ratio of its p95 to the p95 of
the JSON list of the same kind and depth, measured in the same run with the
requests interleaved, so load from other work falls on both alike.
Goals (the portal issue): p95 ≤ 100 ms, and ≤ 3x the JSON list's.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import sys
import tempfile
import time
from html import unescape
from pathlib import Path

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import PASSWORD, OurServer, consented_call, sign_up

PAGE = 25
GOAL_P95_MS = 100.0
GOAL_RATIO = 3.0

# Columns that change per clone; everything else is copied from the template row.
CLONES = {
    "calls": {
        "id": "t.id || '_' || g",
        "created_at": "t.created_at - g * interval '1 minute'",
        "ended_at": "t.ended_at - g * interval '1 minute'",
        "media_token_hash": "sha256(convert_to(t.id || '_' || g, 'UTF8'))",
    },
    "counterparts": {
        "id": "t.id || '_' || g",
        "call_id": "t.call_id || '_' || g",
        "added_at": "t.added_at - g * interval '1 minute'",
    },
    "consent_events": {
        "id": "t.id || '_' || g",
        "call_id": "t.call_id || '_' || g",
        "counterpart_id": "t.counterpart_id || '_' || g",
        "recorded_at": "t.recorded_at - g * interval '1 minute'",
        "obtained_at": "t.obtained_at - g * interval '1 minute'",
    },
    "recordings": {
        "id": "t.id || '_' || g",
        "call_id": "t.call_id || '_' || g",
        "started_at": "t.started_at - g * interval '1 minute'",
        "ended_at": "t.ended_at - g * interval '1 minute'",
    },
    "recording_segments": {
        "recording_id": "t.recording_id || '_' || g",
        "started_at": "t.started_at - g * interval '1 minute'",
        "ended_at": "t.ended_at - g * interval '1 minute'",
    },
}
GENERATED = {"consent_events": {"seq"}, "recording_segments": {"id"}}
TEMPLATE_KEY = {
    "calls": "id = $1",
    "counterparts": "call_id = $1",
    "consent_events": "call_id = $1",
    "recordings": "call_id = $1",
    "recording_segments": "recording_id IN (SELECT id FROM recordings WHERE call_id = $1)",
}


async def clone(conn: asyncpg.Connection, call_id: str, count: int) -> None:
    for table, overrides in CLONES.items():
        columns = [
            r["column_name"]
            for r in await conn.fetch(
                """SELECT column_name FROM information_schema.columns
                   WHERE table_name = $1 ORDER BY ordinal_position""",
                table,
            )
            if r["column_name"] not in GENERATED.get(table, set())
        ]
        chosen = ", ".join(overrides.get(c, f"t.{c}") for c in columns)
        await conn.execute(
            f"""INSERT INTO {table} ({", ".join(columns)})
                SELECT {chosen} FROM {table} t, generate_series(1, {count}) g
                WHERE t.{TEMPLATE_KEY[table]}""",
            call_id,
        )
    await conn.execute("ANALYZE")


async def portal_session(http: aiohttp.ClientSession, base: str, email: str) -> None:
    async with http.get(f"{base}/login") as resp:
        token = unescape(re.search(r'name="csrf_token" value="([^"]+)"', await resp.text())[1])
    async with http.post(
        f"{base}/login",
        data={"email": email, "password": PASSWORD, "csrf_token": token},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303, await resp.text()


async def timed(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    async with http.get(url, headers=headers, allow_redirects=False) as resp:
        await resp.read()
        assert resp.status == 200, (url, resp.status)
    return (time.perf_counter() - started) * 1000


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18]


async def run(args: argparse.Namespace) -> int:
    data = Path(tempfile.mkdtemp(prefix="bench-portal-"))
    server = OurServer(data, args.loop)
    try:
        server.cluster.ensure_running()
        await server.start()
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            base = server.url
            owner = await sign_up(http, base)
            auth = {"Authorization": f"Bearer {owner}"}
            async with http.get(f"{base}/v1/me", headers=auth) as resp:
                email = (await resp.json())["email"]
            async with http.post(
                f"{base}/v1/api-keys",
                json={"name": "bench", "scopes": ["calls", "recordings:read"]},
                headers=auth,
            ) as resp:
                api = {"Authorization": f"Bearer {(await resp.json())['token']}"}
            call = await consented_call(http, base, auth)
            async with http.post(
                f"{base}/v1/calls/{call['id']}/recordings", json={}, headers=auth
            ) as resp:
                rec = await resp.json()
            await http.post(f"{base}/v1/recordings/{rec['id']}/stop", headers=auth)
            await http.post(f"{base}/v1/calls/{call['id']}/end", headers=auth)
            started = time.perf_counter()
            conn = await asyncpg.connect(server.cluster.dsn())
            try:
                await clone(conn, call["id"], args.recordings - 1)
                total = await conn.fetchval("SELECT count(*) FROM recordings")
                deep_call = await conn.fetchrow(
                    "SELECT created_at, id FROM calls ORDER BY created_at DESC, id DESC"
                    " OFFSET $1 LIMIT 1",
                    args.recordings // 2,
                )
                deep_rec = await conn.fetchrow(
                    "SELECT started_at, id FROM recordings ORDER BY started_at DESC, id DESC"
                    " OFFSET $1 LIMIT 1",
                    args.recordings // 2,
                )
            finally:
                await conn.close()
            print(
                f"{total:,} recordings in one account, made in"
                f" {time.perf_counter() - started:.1f} s"
            )
            await portal_session(http, base, email)

            def cursor(at: object, ident: str) -> str:
                micros = int(at.timestamp() * 1_000_000)  # type: ignore[attr-defined]
                return f"k{micros}.{ident}"

            dc, dr = cursor(*deep_call), cursor(*deep_rec)
            number = "%2B48601234567"  # every call's counterpart
            rare = "%2B14155550123"  # nobody's: the whole account is searched
            pages = {
                "calls": ("/calls", f"/v1/calls?limit={PAGE}"),
                "calls deep": (f"/calls?cursor={dc}", f"/v1/calls?limit={PAGE}&cursor={dc}"),
                "calls by number": (
                    f"/calls?number={number}",
                    f"/v1/calls?limit={PAGE}&number={number}",
                ),
                "calls, no match": (
                    f"/calls?number={rare}",
                    f"/v1/calls?limit={PAGE}&number={rare}",
                ),
                "calls unrecorded": (
                    "/calls?has_recording=false",
                    f"/v1/calls?limit={PAGE}&has_recording=false",
                ),
                "recordings": ("/recordings", f"/v1/recordings?limit={PAGE}"),
                "recordings deep": (
                    f"/recordings?cursor={dr}",
                    f"/v1/recordings?limit={PAGE}&cursor={dr}",
                ),
            }
            times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in pages}
            for html_path, json_path in pages.values():  # warm both once
                await timed(http, base + html_path, {})
                await timed(http, base + json_path, api)
            for _ in range(args.runs):
                for name, (html_path, json_path) in pages.items():
                    times[name][0].append(await timed(http, base + html_path, {}))
                    times[name][1].append(await timed(http, base + json_path, api))
        failed = 0
        print(f"{args.runs} requests per page, one at a time; ms from send to last byte")
        for name, (html_times, json_times) in times.items():
            ratio = p95(html_times) / p95(json_times)
            ok = p95(html_times) <= GOAL_P95_MS and ratio <= GOAL_RATIO
            failed += not ok
            print(
                f"  {name:<16} portal p50 {statistics.median(html_times):6.1f}"
                f"  p95 {p95(html_times):6.1f}   json p50 {statistics.median(json_times):6.1f}"
                f"  p95 {p95(json_times):6.1f}   ratio p95 {ratio:4.2f}x"
                f"   {'PASS' if ok else 'FAIL'} (p95 <= {GOAL_P95_MS:.0f} ms, <= {GOAL_RATIO:.0f}x)"
            )
        return 1 if failed else 0
    finally:
        server.stop()
        server.cluster.stop()
        shutil.rmtree(data, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recordings", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"))
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
