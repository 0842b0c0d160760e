"""Staff users, made as the CLI makes them (staff exist only that way: API.md "Roles")."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from aiohttp.test_utils import TestClient

from telephony.domain.roles import StaffRole
from telephony.usecases import identity
from telephony.web.appkeys import HASHER
from tests.conftest import PASSWORD


async def new_staff(
    client: TestClient, pool: asyncpg.Pool, role: str, email: str | None = None
) -> str:
    """A staff user with `role` and the tests' password; their e-mail."""
    email = email or f"{role}@staff.example.com"
    await identity.create_staff(
        pool,
        client.app[HASHER],
        email=email,
        name=role,
        role=StaffRole(role),
        password=PASSWORD,
        now=datetime.now(UTC),
    )
    return email
