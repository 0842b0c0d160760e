"""The `telephony` command: serve, migrate, staff, security-log, purge, audit, keys, account,
export, policy, news, backup, decrypt. A module per area; each adds its subcommands to the
parser."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence

from storage.keys.hierarchy import MasterKeyError
from telephony import logs
from telephony.cli import account, audit, backup, decrypt, keys, policy, security, serve, staff
from telephony.cli.common import CliError, database, migrate
from telephony.domain.errors import ServiceError
from telephony.settings import Settings, SettingsError

log = logging.getLogger("telephony")


async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> None:
    async with database(settings) as ready:
        applied = await migrate(ready)
    print(json.dumps({"applied": applied}))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="telephony", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    serve.add(sub)
    sub.add_parser("migrate", help="apply pending database migrations").set_defaults(
        run=cmd_migrate
    )
    staff.add(sub)
    security.add(sub)
    audit.add(sub)
    keys.add(sub)
    account.add(sub)
    policy.add(sub)
    backup.add(sub)
    decrypt.add(sub)
    return p


def loop_factory(
    settings: Settings, command: str
) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop for the server, the default loop elsewhere.

    The ingest issue measured about twice the bare legs per core on uvloop; on
    our 2-core CI machine the two loops came out within noise of each other
    (`bench/ingest.py --loop asyncio` compares). TELEPHONY_EVENT_LOOP=asyncio
    switches.
    """
    if command != "serve" or settings.event_loop != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        log.warning("uvloop is not installed; serving on asyncio's default loop")
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.configure(stream=sys.stdout if args.command == "serve" else sys.stderr)
    try:
        settings = Settings.from_env()
        with asyncio.Runner(loop_factory=loop_factory(settings, args.command)) as runner:
            runner.run(args.run(settings, args))
    except (CliError, SettingsError, ServiceError, MasterKeyError) as exc:
        print(f"telephony: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
