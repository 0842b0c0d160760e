"""A portable archive of everything an account holds: the processor hands it back (R3).

`telephony export --account ID --out FILE` writes a ZIP with one WAV per
recording (decrypted, verified, streamed into the archive so memory does not
grow with the recordings; a recording sealed to the customer's key is its sealed
container instead, SEALED-FORMAT.md) and `manifest.json`: the account, its calls with
counterparts and consent events, recording metadata and the audit trail.
It is how a customer takes their data with them, notably during the grace
period after termination.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import zipfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from storage import accounts, audit, calls, consents, recordings, terminations
from storage.blobs.protocol import BlobStore
from storage.db import Conn
from storage.keys.providers import KeyProvider
from telephony.domain.actors import Actor
from telephony.domain.errors import IntegrityFailure
from telephony.usecases import playback, sealed
from telephony.usecases.trail import transaction

Progress = Callable[[int, int, str], None]  # (done, total, what)
_PAGE = 500


@dataclasses.dataclass(frozen=True)
class ExportResult:
    path: Path
    recordings: int
    damaged: list[str]  # recordings left out because they failed their integrity check
    calls: int
    audit_events: int


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


async def export_account(
    pool: asyncpg.Pool,
    blobs: BlobStore,
    keys: KeyProvider,
    account_id: str,
    out: Path,
    now: datetime,
    progress: Progress = lambda done, total, what: None,
) -> ExportResult:
    async with pool.acquire() as conn:
        account = await accounts.get_account(conn, account_id)
        all_calls = await _all_calls(conn, account_id)
        call_ids = [c.id for c in all_calls]
        parties = await calls.list_counterparts(conn, call_ids)
        events = await consents.list_for_calls(conn, call_ids)
        recs = await recordings.list_for_calls(conn, call_ids)
        trail = await _all_audit(conn, account_id)
    by_call: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_call.setdefault(event.call_id, []).append(dataclasses.asdict(event))
    manifest: dict[str, Any] = {
        "generated_at": now,
        "account": dataclasses.asdict(account),
        "calls": [
            {
                **dataclasses.asdict(call),
                "counterparts": [dataclasses.asdict(p) for p in parties.get(call.id, [])],
                "consent_events": by_call.get(call.id, []),
            }
            for call in all_calls
        ],
        "recordings": [],
        "audit_events": [dataclasses.asdict(e) for e in trail],
    }
    damaged: list[str] = []
    archive = await asyncio.to_thread(zipfile.ZipFile, out, "w", zipfile.ZIP_DEFLATED)
    try:
        for done, rec in enumerate(recs):
            progress(done, len(recs), rec.id)
            entry = dataclasses.asdict(rec)
            entry["file"] = None
            if rec.status in playback.DOWNLOADABLE:
                # Sealed to the customer's key: its container, which only they can open.
                name = f"recordings/{rec.id}.{'sealed' if rec.customer_key_id else 'wav'}"
                try:
                    await _write_recording(pool, blobs, keys, rec.id, archive, name)
                    entry["file"] = name
                except IntegrityFailure:
                    damaged.append(rec.id)
                    entry["error"] = "integrity-error: left out, never altered audio"
            manifest["recordings"].append(entry)
        progress(len(recs), len(recs), "manifest")
        text = json.dumps(manifest, default=_plain, indent=2, ensure_ascii=False)
        await asyncio.to_thread(archive.writestr, "manifest.json", text)
    finally:
        await asyncio.to_thread(archive.close)
    async with transaction(pool) as tx:
        await terminations.mark_exported(tx.conn, account_id, now)
        tx.audit(
            account_id,
            Actor.system("export"),
            "account.exported",
            {"account_id": account_id},
            now,
            recordings=len(recs) - len(damaged),
            damaged=damaged,
        )
    return ExportResult(out, len(recs) - len(damaged), damaged, len(all_calls), len(trail))


async def _write_recording(
    pool: asyncpg.Pool,
    blobs: BlobStore,
    keys: KeyProvider,
    recording_id: str,
    archive: zipfile.ZipFile,
    name: str,
) -> None:
    container = await sealed.open_sealed(pool, blobs, keys, recording_id, None)
    if container is not None:
        pieces = sealed.iter_sealed(container, blobs, 0, container.size_bytes)
    else:
        found = await playback.open_recording(pool, blobs, keys, recording_id, None)
        pieces = playback.iter_wav(found, blobs, 0, found.size_bytes)
    member = await asyncio.to_thread(archive.open, name, "w", force_zip64=True)
    try:
        async for piece in pieces:
            await asyncio.to_thread(member.write, piece)
    finally:
        await asyncio.to_thread(member.close)


async def _all_calls(conn: Conn, account_id: str) -> list[calls.Call]:
    found: list[calls.Call] = []
    after = None
    while True:
        page = await calls.list_calls(conn, account_id, after=after, limit=_PAGE)
        found += page
        if len(page) < _PAGE:
            return found
        after = (page[-1].created_at, page[-1].id)


async def _all_audit(conn: Conn, account_id: str) -> list[audit.AuditEvent]:
    found: list[audit.AuditEvent] = []
    while True:
        page = await audit.list_events(
            conn, account_id, after_seq=found[-1].seq if found else 0, limit=_PAGE
        )
        found += page
        if len(page) < _PAGE:
            return found


def text_progress(stream: Any, width: int = 30) -> Progress:
    """A progress bar on a terminal; one line per step when the output is not one."""
    interactive = stream.isatty()

    def show(done: int, total: int, what: str) -> None:
        filled = width * done // total if total else width
        line = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} recordings  {what}"
        stream.write(("\r" + line.ljust(width + 60)) if interactive else line + "\n")
        if interactive and done == total:
            stream.write("\n")
        stream.flush()

    return show
