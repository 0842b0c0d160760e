"""Data-subject requests (D2, D3): their kinds, states and deadline. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum

from telephony.domain.errors import ErasureRequiresTermination, PrivacyRequestState
from telephony.domain.roles import CustomerPrincipal

RESPONSE_DAYS = 30  # D3: handled within 30 calendar days


class RequestKind(StrEnum):
    ACCESS = "access"
    RECTIFICATION = "rectification"
    ERASURE = "erasure"
    RESTRICTION = "restriction"


class RequestStatus(StrEnum):
    RECEIVED = "received"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    REJECTED = "rejected"


OPEN = frozenset({RequestStatus.RECEIVED, RequestStatus.IN_PROGRESS})
CLOSED = frozenset({RequestStatus.COMPLETED, RequestStatus.REJECTED})

_NEXT: dict[RequestStatus, frozenset[RequestStatus]] = {
    RequestStatus.RECEIVED: frozenset(
        {RequestStatus.IN_PROGRESS, RequestStatus.COMPLETED, RequestStatus.REJECTED}
    ),
    RequestStatus.IN_PROGRESS: CLOSED,
}


def due_at_for(received_at: datetime) -> datetime:
    """D3: the deadline is 30 calendar days after receipt (exactly, in UTC)."""
    return received_at.astimezone(UTC) + timedelta(days=RESPONSE_DAYS)


def check_transition(current: RequestStatus, target: RequestStatus) -> None:
    """Raise PrivacyRequestState unless a request in `current` may move to `target`."""
    if target not in _NEXT.get(current, frozenset()):
        raise PrivacyRequestState(f"a {current.value} request cannot become {target.value}")


def is_overdue(status: RequestStatus, due_at: datetime, now: datetime) -> bool:
    return status in OPEN and due_at < now


def check_can_file(principal: CustomerPrincipal, kind: RequestKind) -> None:
    """D2: billing data is kept by law, so an owner's erasure means ending the service."""
    if kind is RequestKind.ERASURE and principal.is_owner:
        raise ErasureRequiresTermination(
            "an owner's data is the account's billing record, kept by law: hand ownership to "
            "another user and ask again as a member, or end the service (account termination)"
        )
