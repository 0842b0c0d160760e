"""Data-subject requests (D2, D3): the 30-day deadline, the states, overdue, who may file."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from telephony.domain.errors import Conflict, ErasureRequiresTermination, PrivacyRequestState
from telephony.domain.privacy import (
    CLOSED,
    OPEN,
    RESPONSE_DAYS,
    RequestKind,
    RequestStatus,
    check_can_file,
    check_transition,
    due_at_for,
    is_overdue,
)
from telephony.domain.roles import ALL_SCOPES, CustomerPrincipal, CustomerRole

St = RequestStatus
THIRTY_DAYS = timedelta(days=30)


# -- D3: due 30 calendar days after receipt, exactly, in UTC ---------------------------


def test_the_response_window_is_thirty_days() -> None:
    assert RESPONSE_DAYS == 30


@pytest.mark.parametrize(
    ("received_at", "due_at"),
    [
        pytest.param(
            datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 31, tzinfo=UTC), id="january"
        ),
        pytest.param(
            datetime(2024, 2, 15, 12, 0, tzinfo=UTC),
            datetime(2024, 3, 16, 12, 0, tzinfo=UTC),
            id="across-leap-day-2024",
        ),
        pytest.param(
            datetime(2025, 2, 15, 12, 0, tzinfo=UTC),
            datetime(2025, 3, 17, 12, 0, tzinfo=UTC),
            id="across-february-of-a-common-year",
        ),
        pytest.param(
            datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC),
            datetime(2024, 3, 30, 23, 59, 59, tzinfo=UTC),
            id="received-on-leap-day",
        ),
        pytest.param(
            datetime(2025, 3, 15, 12, 0, tzinfo=UTC),
            datetime(2025, 4, 14, 12, 0, tzinfo=UTC),
            id="across-spring-dst-change",
        ),
        pytest.param(
            datetime(2025, 10, 10, 8, 30, tzinfo=UTC),
            datetime(2025, 11, 9, 8, 30, tzinfo=UTC),
            id="across-autumn-dst-change",
        ),
        pytest.param(
            datetime(2024, 12, 15, 0, 0, 0, 123456, tzinfo=UTC),
            datetime(2025, 1, 14, 0, 0, 0, 123456, tzinfo=UTC),
            id="across-new-year-keeps-microseconds",
        ),
    ],
)
def test_a_request_is_due_exactly_thirty_days_after_receipt(
    received_at: datetime, due_at: datetime
) -> None:
    result = due_at_for(received_at)

    assert result == due_at
    assert result - received_at == THIRTY_DAYS
    assert result.utcoffset() == timedelta(0)


def test_a_local_receipt_time_still_gets_exactly_thirty_days_in_utc() -> None:
    # 12:00 CET (UTC+1) on 15 March is 11:00Z; Warsaw moves to CEST on 30 March. "Exactly, in
    # UTC" means 30 x 24 h of real time: 11:00Z on 14 April (13:00 CEST), not 12:00 CEST.
    received_at = datetime(2025, 3, 15, 12, 0, tzinfo=ZoneInfo("Europe/Warsaw"))

    result = due_at_for(received_at)

    assert result.astimezone(UTC) == datetime(2025, 4, 14, 11, 0, tzinfo=UTC)


# -- the request's states -------------------------------------------------------------

# Every (current, target) pair, written out: True where the move is legal.
TRANSITIONS: dict[tuple[RequestStatus, RequestStatus], bool] = {
    (St.RECEIVED, St.RECEIVED): False,
    (St.RECEIVED, St.IN_PROGRESS): True,
    (St.RECEIVED, St.COMPLETED): True,
    (St.RECEIVED, St.REJECTED): True,
    (St.IN_PROGRESS, St.RECEIVED): False,
    (St.IN_PROGRESS, St.IN_PROGRESS): False,
    (St.IN_PROGRESS, St.COMPLETED): True,
    (St.IN_PROGRESS, St.REJECTED): True,
    (St.COMPLETED, St.RECEIVED): False,
    (St.COMPLETED, St.IN_PROGRESS): False,
    (St.COMPLETED, St.COMPLETED): False,
    (St.COMPLETED, St.REJECTED): False,
    (St.REJECTED, St.RECEIVED): False,
    (St.REJECTED, St.IN_PROGRESS): False,
    (St.REJECTED, St.COMPLETED): False,
    (St.REJECTED, St.REJECTED): False,
}


def test_the_transition_table_covers_every_pair() -> None:
    every_pair = set(itertools.product(RequestStatus, RequestStatus))

    covered = set(TRANSITIONS)

    assert covered == every_pair


@pytest.mark.parametrize(
    ("current", "target"),
    [pytest.param(c, t, id=f"{c.value}-to-{t.value}") for (c, t), ok in TRANSITIONS.items() if ok],
)
def test_a_legal_request_transition_passes(current: RequestStatus, target: RequestStatus) -> None:
    check_transition(current, target)  # raises when refused


@pytest.mark.parametrize(
    ("current", "target"),
    [
        pytest.param(c, t, id=f"{c.value}-to-{t.value}")
        for (c, t), ok in TRANSITIONS.items()
        if not ok
    ],
)
def test_an_illegal_request_transition_is_refused(
    current: RequestStatus, target: RequestStatus
) -> None:
    with pytest.raises(PrivacyRequestState) as caught:
        check_transition(current, target)

    assert isinstance(caught.value, Conflict)
    assert caught.value.code == "invalid-state"


def test_open_and_closed_split_the_statuses() -> None:
    assert {St.RECEIVED, St.IN_PROGRESS} == OPEN
    assert {St.COMPLETED, St.REJECTED} == CLOSED
    assert set(RequestStatus) == OPEN | CLOSED


# -- overdue: open and past its deadline ----------------------------------------------

DUE = datetime(2025, 4, 14, 12, 0, tzinfo=UTC)
BEFORE = DUE - timedelta(microseconds=1)
AFTER = DUE + timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("status", "now", "overdue"),
    [
        pytest.param(St.RECEIVED, BEFORE, False, id="received-before-due"),
        pytest.param(St.RECEIVED, DUE, False, id="received-at-due"),
        pytest.param(St.RECEIVED, AFTER, True, id="received-after-due"),
        pytest.param(St.IN_PROGRESS, BEFORE, False, id="in-progress-before-due"),
        pytest.param(St.IN_PROGRESS, DUE, False, id="in-progress-at-due"),
        pytest.param(St.IN_PROGRESS, AFTER, True, id="in-progress-after-due"),
        pytest.param(St.IN_PROGRESS, DUE + timedelta(days=365), True, id="in-progress-long-after"),
        pytest.param(St.COMPLETED, BEFORE, False, id="completed-before-due"),
        pytest.param(St.COMPLETED, DUE, False, id="completed-at-due"),
        pytest.param(St.COMPLETED, AFTER, False, id="completed-after-due"),
        pytest.param(St.REJECTED, BEFORE, False, id="rejected-before-due"),
        pytest.param(St.REJECTED, DUE, False, id="rejected-at-due"),
        pytest.param(St.REJECTED, AFTER, False, id="rejected-after-due"),
    ],
)
def test_only_an_open_request_past_its_deadline_is_overdue(
    status: RequestStatus, now: datetime, overdue: bool
) -> None:
    result = is_overdue(status, DUE, now)

    assert result is overdue


# -- D2: who may file what ------------------------------------------------------------


def _person(role: CustomerRole) -> CustomerPrincipal:
    return CustomerPrincipal(
        id=f"user-{role.value}",
        account_id="acct-1",
        scopes=ALL_SCOPES,
        role=role,
        session_id="sess-1",
        email=f"{role.value}@example.com",
    )


def test_an_owners_erasure_requires_ending_the_service() -> None:
    owner = _person(CustomerRole.OWNER)

    with pytest.raises(ErasureRequiresTermination) as caught:
        check_can_file(owner, RequestKind.ERASURE)

    assert isinstance(caught.value, Conflict)
    assert caught.value.code == "erasure-requires-termination"


@pytest.mark.parametrize(
    ("role", "kind"),
    [
        *(pytest.param(CustomerRole.MEMBER, k, id=f"member-{k.value}") for k in RequestKind),
        *(
            pytest.param(CustomerRole.OWNER, k, id=f"owner-{k.value}")
            for k in RequestKind
            if k is not RequestKind.ERASURE
        ),
    ],
)
def test_every_other_request_may_be_filed(role: CustomerRole, kind: RequestKind) -> None:
    principal = _person(role)

    check_can_file(principal, kind)  # raises when refused
