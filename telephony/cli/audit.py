"""`telephony audit verify`: recompute the audit hash chains."""

from __future__ import annotations

import argparse
import json

from telephony.cli.common import CliError, migrated_pool
from telephony.settings import Settings
from telephony.usecases import audit_trail


async def cmd_audit_verify(settings: Settings, args: argparse.Namespace) -> None:
    async with migrated_pool(settings, max_size=1) as pool:
        breaks = await audit_trail.verify(pool, args.account)
    for b in breaks:
        print(
            json.dumps({"account_id": b.account_id, "first_broken_seq": b.seq, "reason": b.reason})
        )
    if breaks:
        raise CliError(f"audit chain broken in {len(breaks)} account(s)")
    print(json.dumps({"verified": True, "account": args.account}))


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit_cmd = sub.add_parser("audit", help="the audit trail").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit_cmd.add_parser("verify", help="recompute the hash chains; exit 1 when broken")
    verify.add_argument("--account", help="only this account")
    verify.set_defaults(run=cmd_audit_verify)
