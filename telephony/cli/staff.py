"""`telephony staff create`: staff users exist only through the CLI (API.md "Roles")."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, datetime

from storage.keys.passwords import PasswordHasher
from telephony.cli.common import CliError, migrated_pool
from telephony.domain.formats import PASSWORD_MAX, PASSWORD_MIN, is_email, is_password
from telephony.domain.roles import StaffRole
from telephony.settings import Settings
from telephony.usecases import identity


def _read_password(args: argparse.Namespace) -> str:
    """From a prompt (twice) or stdin, never argv: argv is visible to every local user."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise CliError("the passwords differ")
    if not is_password(password):
        raise CliError(
            f"the password must have {PASSWORD_MIN} to {PASSWORD_MAX} characters, none a control"
        )
    return password


async def cmd_staff_create(settings: Settings, args: argparse.Namespace) -> None:
    email = str(args.email)
    if not is_email(email):
        raise CliError("not a valid e-mail address")
    password = _read_password(args)
    hasher = PasswordHasher(settings.argon2)
    try:
        async with migrated_pool(settings) as pool:
            user = await identity.create_staff(
                pool,
                hasher,
                email=email,
                name=args.name or email.split("@")[0],
                role=StaffRole(args.role),
                password=password,
                now=datetime.now(UTC),
            )
    finally:
        hasher.close()
    print(json.dumps({"id": user.id, "email": user.email, "role": user.role.value}))


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    staff = sub.add_parser("staff", help="manage staff users").add_subparsers(
        dest="staff_command", required=True
    )
    create = staff.add_parser("create", help="create a staff user (password from a prompt)")
    create.add_argument("--email", required=True)
    create.add_argument("--role", required=True, choices=[r.value for r in StaffRole])
    create.add_argument("--name")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    create.set_defaults(run=cmd_staff_create)
