"""Who may do what: pure rules, no I/O (API.md "Roles").

Customer users act with every scope of their account; an owner also manages
users, keys and the account. API keys carry only the scopes given at their
creation. Staff have no account: `support` reads consent metadata (S5),
`security_admin` reads the security log; neither reaches customer routes.

A customer principal and a staff principal are two types, so a customer's
`account_id` is always a string and nothing asks `if account_id is None`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from telephony.domain.actors import Actor, ActorKind


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


class UserKind(StrEnum):
    CUSTOMER = "customer"
    STAFF = "staff"


ALL_SCOPES = frozenset(Scope)


@dataclass(frozen=True)
class CustomerPrincipal:
    """A person of a customer account, or one of its API keys, for one request."""

    id: str  # user id, or API key id
    account_id: str
    scopes: frozenset[Scope]
    role: CustomerRole | None = None  # None for an API key
    session_id: str | None = None  # a person's sign-in; None for an API key
    email: str | None = None

    @property
    def is_user(self) -> bool:
        return self.role is not None

    @property
    def is_owner(self) -> bool:
        return self.role is CustomerRole.OWNER

    @property
    def actor(self) -> Actor:
        kind = ActorKind.USER if self.is_user else ActorKind.API_KEY
        return Actor(kind, self.id, self.role.value if self.role else None)

    def may(self, scope: Scope) -> bool:
        return scope in self.scopes


@dataclass(frozen=True)
class StaffPrincipal:
    """Internal staff: no account, no scope, one role (S5: least access), plus what a
    security_admin approved for a time on the member's request (`granted`)."""

    id: str
    role: StaffRole
    session_id: str
    email: str
    granted: frozenset[StaffRole] = frozenset()

    @property
    def actor(self) -> Actor:
        return Actor(ActorKind.STAFF, self.id, self.role.value)

    def holds(self, role: StaffRole) -> bool:
        return role is self.role or role in self.granted


Principal = CustomerPrincipal | StaffPrincipal


def scopes_for_customer_role(role: CustomerRole) -> frozenset[Scope]:
    """People of an account act with every scope; the owner's extra rights are checked by role."""
    return ALL_SCOPES if role in (CustomerRole.OWNER, CustomerRole.MEMBER) else frozenset()
