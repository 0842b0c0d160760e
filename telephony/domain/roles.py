"""Who may do what: pure rules, no I/O (API.md "Roles").

Customer users act with every scope of their account; an owner also manages
users, keys and the account. API keys carry only the scopes given at their
creation. Staff have no account: `support` reads consent metadata (S5),
`security_admin` reads the security log; neither reaches customer routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    CALLS = "calls"
    RECORDINGS_WRITE = "recordings:write"
    RECORDINGS_READ = "recordings:read"


class CustomerRole(StrEnum):
    OWNER = "owner"
    MEMBER = "member"


class StaffRole(StrEnum):
    SUPPORT = "support"
    SECURITY_ADMIN = "security_admin"


ALL_SCOPES = frozenset(Scope)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    kind: str  # "user" or "api_key"
    id: str  # user id, or API key id
    account_id: str | None  # None for staff
    role: str | None  # customer or staff role; None for an API key
    scopes: frozenset[str]
    session_id: str | None = None
    email: str | None = None

    @property
    def is_staff(self) -> bool:
        return self.kind == "user" and self.account_id is None

    @property
    def is_customer_user(self) -> bool:
        return self.kind == "user" and self.account_id is not None

    @property
    def is_owner(self) -> bool:
        return self.is_customer_user and self.role == CustomerRole.OWNER

    @property
    def actor(self) -> dict[str, str | None]:
        """How audit rows and notifications name this caller (never a token)."""
        kind = "staff" if self.is_staff else self.kind
        return {"type": kind, "id": self.id, "role": self.role}

    def may(self, scope: Scope) -> bool:
        return self.account_id is not None and scope in self.scopes


def scopes_for_customer_role(role: str) -> frozenset[str]:
    return (
        frozenset(ALL_SCOPES) if role in (CustomerRole.OWNER, CustomerRole.MEMBER) else frozenset()
    )
