"""`telephony keys rotate`: re-wrap account keys under the current master key."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from storage.keys import hierarchy
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
    print(
        json.dumps(
            {
                "rewrapped": result.rewrapped,
                "remaining": result.remaining,
                "master_key_id": master.current_id,
            }
        )
    )


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys_cmd = sub.add_parser("keys", help="the key hierarchy").add_subparsers(
        dest="keys_command", required=True
    )
    keys_cmd.add_parser(
        "rotate",
        help="re-wrap account keys under TELEPHONY_MASTER_KEY; keep the old key in "
        "TELEPHONY_MASTER_KEY_PREVIOUS until it reports remaining: 0",
    ).set_defaults(run=cmd_keys_rotate)
