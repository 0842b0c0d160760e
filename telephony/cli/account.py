"""`telephony account terminate` and `telephony export`: the end of a contract."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from storage.blobs.regions import bind_database
from storage.blobs.stores import open_blob_store
from storage.keys.hierarchy import MasterKeyError
from storage.keys.providers import ServiceKeys
from telephony.cli.common import CliError, migrated_pool
from telephony.settings import Settings, master_keys
from telephony.usecases import export, retention


async def cmd_account_terminate(settings: Settings, args: argparse.Namespace) -> None:
    grace = settings.termination_grace_days if args.grace_days is None else args.grace_days
    if grace < 0:
        raise CliError("--grace-days must be 0 or more")
    async with migrated_pool(settings) as pool:
        done = await retention.terminate_account(
            pool, args.account_id, datetime.now(UTC), grace_days=grace
        )
    print(
        json.dumps(
            {
                "account_id": done.account_id,
                "terminated_at": done.terminated_at.isoformat(),
                "recordings_purge_after": done.recordings_purge_after.isoformat()
                if done.recordings_purge_after
                else None,
            }
        )
    )


async def cmd_export(settings: Settings, args: argparse.Namespace) -> None:
    try:
        keys = ServiceKeys(master_keys(settings))
    except MasterKeyError as exc:
        raise CliError(str(exc)) from None
    out = Path(args.out)
    if await asyncio.to_thread(out.exists):
        raise CliError(f"{out} exists; choose a new file")
    blobs = await open_blob_store(
        settings.blob_url,
        settings.data_dir / "blobs",
        regions=settings.region_blob_urls(),
        default_region=settings.data_region,
    )
    try:
        async with migrated_pool(settings) as pool:
            bind_database(blobs, pool)  # each recording's audio from its region's store
            result = await export.export_account(
                pool,
                blobs,
                keys,
                args.account,
                out,
                datetime.now(UTC),
                export.text_progress(sys.stderr),
            )
    finally:
        await blobs.close()
    print(
        json.dumps(
            {
                "out": str(result.path),
                "recordings": result.recordings,
                "damaged": result.damaged,
                "calls": result.calls,
                "audit_events": result.audit_events,
            }
        )
    )
    if result.damaged:
        raise CliError(f"{len(result.damaged)} recording(s) failed their integrity check")


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    account_cmd = sub.add_parser("account", help="customer accounts").add_subparsers(
        dest="account_command", required=True
    )
    terminate = account_cmd.add_parser(
        "terminate",
        help="end the contract: calls end, API keys stop, recordings go after the grace period, "
        "personal data five years later (D4)",
    )
    terminate.add_argument("account_id")
    terminate.add_argument(
        "--grace-days", type=int, help="days to export before recordings go (default 30)"
    )
    terminate.set_defaults(run=cmd_account_terminate)

    export_cmd = sub.add_parser(
        "export", help="write an account's recordings (WAV) and a JSON manifest to a ZIP"
    )
    export_cmd.add_argument("--account", required=True)
    export_cmd.add_argument("--out", required=True, help="the archive to create")
    export_cmd.set_defaults(run=cmd_export)
