"""`telephony security-log` (S2) and `telephony purge` (S3): the logs of security."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from telephony.cli.common import migrated_pool
from telephony.settings import Settings
from telephony.usecases import identity, retention


async def cmd_security_log(settings: Settings, args: argparse.Namespace) -> None:
    async with migrated_pool(settings, max_size=1) as pool:
        events = await identity.security_log(
            pool, email=args.email, user_id=None, before_id=None, limit=args.limit
        )
    for event in events:
        print(
            json.dumps(
                {
                    "id": event.id,
                    "at": event.at.isoformat(),
                    "event": event.event,
                    "outcome": event.outcome,
                    "user_id": event.user_id,
                    "email": event.email,
                    "source_address": event.source_address,
                    "user_agent": event.user_agent,
                }
            )
        )


async def cmd_purge(settings: Settings, args: argparse.Namespace) -> None:
    if args.days is not None:
        settings = settings.replace(log_retention_days=args.days)
    async with migrated_pool(settings, max_size=1) as pool:
        result = await retention.purge_logs(pool, settings, datetime.now(UTC))
    print(
        json.dumps(
            {
                "security_log": result.security_log,
                "access_log": result.access_log,
                "staff_notifications": result.staff_notifications,
            }
        )
    )


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    seclog = sub.add_parser("security-log", help="print sign-in attempts, newest first (S2)")
    seclog.add_argument("--email")
    seclog.add_argument("--limit", type=int, default=100)
    seclog.set_defaults(run=cmd_security_log)

    purge = sub.add_parser("purge", help="delete log rows past retention (S3)")
    purge.add_argument("--days", type=int, help="retention in days (default 60)")
    purge.set_defaults(run=cmd_purge)
