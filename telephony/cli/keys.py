"""`telephony keys rotate`: re-wrap account and signing keys under the current master key;
`telephony keys rotate-signing`: a new receipt-signing key (the old stay published)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from storage.keys import hierarchy, signing
from storage.keys.hierarchy import MasterKeyError
from telephony.cli.common import CliError, migrated_pool
from telephony.settings import Settings, master_keys


async def cmd_keys_rotate(settings: Settings, args: argparse.Namespace) -> None:
    try:
        master = master_keys(settings)
    except MasterKeyError as exc:
        raise CliError(str(exc)) from None
    async with migrated_pool(settings) as pool:
        result = await hierarchy.rotate(pool, master, datetime.now(UTC))
        async with pool.acquire() as conn, conn.transaction():
            signing_rewrapped = await signing.rewrap(conn, master)
    print(
        json.dumps(
            {
                "rewrapped": result.rewrapped,
                "remaining": result.remaining,
                "signing_keys_rewrapped": signing_rewrapped,
                "master_key_id": master.current_id,
            }
        )
    )


async def cmd_keys_rotate_signing(settings: Settings, args: argparse.Namespace) -> None:
    try:
        master = master_keys(settings)
    except MasterKeyError as exc:
        raise CliError(str(exc)) from None
    async with migrated_pool(settings) as pool, pool.acquire() as conn, conn.transaction():
        key = await signing.rotate(conn, master, datetime.now(UTC))
        published = len(await signing.published(conn))
    print(json.dumps({"kid": key.kid, "published": published}))


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys_cmd = sub.add_parser("keys", help="the key hierarchy").add_subparsers(
        dest="keys_command", required=True
    )
    keys_cmd.add_parser(
        "rotate",
        help="re-wrap account keys under TELEPHONY_MASTER_KEY; keep the old key in "
        "TELEPHONY_MASTER_KEY_PREVIOUS until it reports remaining: 0",
    ).set_defaults(run=cmd_keys_rotate)
    keys_cmd.add_parser(
        "rotate-signing",
        help="sign receipts with a new Ed25519 key from now on; every older key stays in "
        "/.well-known/telephony-keys.json, so the receipts it signed still verify",
    ).set_defaults(run=cmd_keys_rotate_signing)
