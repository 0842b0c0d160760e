"""`telephony policy publish` and `telephony policy list`: the privacy policy's versions (P1);
`telephony news send`: product news, to the people who did not turn it off.

The operator publishes the text as a file (Markdown or plain text, UTF-8);
`--material` announces the change to every person by e-mail, as P1 promises.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

from telephony.cli.common import CliError, migrated_pool
from telephony.domain.actors import Actor
from telephony.settings import Settings
from telephony.usecases import policy


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CliError(f"{path} is not UTF-8 text") from None


async def cmd_publish(settings: Settings, args: argparse.Namespace) -> None:
    body = await asyncio.to_thread(_read, Path(args.file))
    async with migrated_pool(settings) as pool:
        published = await policy.publish(
            pool,
            version=args.version,
            body=body,
            material=args.material,
            actor=Actor.system("cli"),
            now=datetime.now(UTC),
        )
    print(
        json.dumps(
            {
                "version": published.version.version,
                "published_at": published.version.published_at.isoformat(),
                "material": published.version.material,
                "announced_to": published.announced_to,
            }
        )
    )


async def cmd_list(settings: Settings, args: argparse.Namespace) -> None:
    async with migrated_pool(settings) as pool:
        found = await policy.versions(pool)
    for version in found:
        print(
            json.dumps(
                {
                    "version": version.version,
                    "published_at": version.published_at.isoformat(),
                    "material": version.material,
                }
            )
        )


async def cmd_news(settings: Settings, args: argparse.Namespace) -> None:
    body = await asyncio.to_thread(_read, Path(args.file))
    async with migrated_pool(settings) as pool:
        sent = await policy.announce_news(
            pool, subject=args.subject, body=body, now=datetime.now(UTC)
        )
    print(json.dumps({"queued": sent}))


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("policy", help="publish the privacy policy (P1)").add_subparsers(
        dest="policy_command", required=True
    )
    publish = group.add_parser("publish", help="publish a new version of the privacy policy")
    publish.add_argument("--file", required=True, help="the policy text, UTF-8")
    publish.add_argument("--version", required=True, help="its version, e.g. 2026-12")
    publish.add_argument(
        "--material",
        action="store_true",
        help="a material change: announce it to every user by e-mail (P1)",
    )
    publish.set_defaults(run=cmd_publish)
    group.add_parser("list", help="the published versions, newest first").set_defaults(run=cmd_list)
    news = sub.add_parser("news", help="product news by e-mail").add_subparsers(
        dest="news_command", required=True
    )
    send = news.add_parser("send", help="mail product news to everyone who wants it")
    send.add_argument("--subject", required=True)
    send.add_argument("--file", required=True, help="the message, UTF-8 plain text")
    send.set_defaults(run=cmd_news)
