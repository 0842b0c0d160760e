"""The recording state machine: every (action, status) pair, written out by hand."""

from __future__ import annotations

import itertools

import pytest

from telephony.domain.errors import Conflict, InvalidTransition
from telephony.domain.recordings import (
    FINISHED,
    HELD_BY_A_NODE,
    LIVE,
    Action,
    RecordingStatus,
    check_transition,
)

S = RecordingStatus

# The whole table, written out (not read from the module): True where the action is legal.
# recording <-> paused -> stopped -> completed; a stop never comes back.
EXPECTED: dict[tuple[Action, RecordingStatus], bool] = {
    (Action.PAUSE, S.RECORDING): True,
    (Action.PAUSE, S.PAUSED): False,
    (Action.PAUSE, S.STOPPED): False,
    (Action.PAUSE, S.COMPLETED): False,
    (Action.PAUSE, S.INTERRUPTED): False,
    (Action.PAUSE, S.DELETED): False,
    (Action.RESUME, S.RECORDING): False,
    (Action.RESUME, S.PAUSED): True,
    (Action.RESUME, S.STOPPED): False,
    (Action.RESUME, S.COMPLETED): False,
    (Action.RESUME, S.INTERRUPTED): False,
    (Action.RESUME, S.DELETED): False,
    (Action.STOP, S.RECORDING): True,
    (Action.STOP, S.PAUSED): True,
    (Action.STOP, S.STOPPED): False,
    (Action.STOP, S.COMPLETED): False,
    (Action.STOP, S.INTERRUPTED): False,
    (Action.STOP, S.DELETED): False,
}

ALLOWED = [
    pytest.param(a, s, id=f"{a.value}-from-{s.value}") for (a, s), ok in EXPECTED.items() if ok
]
REFUSED = [
    pytest.param(a, s, id=f"{a.value}-from-{s.value}") for (a, s), ok in EXPECTED.items() if not ok
]


def test_the_table_covers_every_action_and_status() -> None:
    every_pair = set(itertools.product(Action, RecordingStatus))

    covered = set(EXPECTED)

    assert covered == every_pair


@pytest.mark.parametrize(("action", "status"), ALLOWED)
def test_a_legal_action_passes(action: Action, status: RecordingStatus) -> None:
    check_transition(action, status)  # raises when refused


@pytest.mark.parametrize(("action", "status"), REFUSED)
def test_an_illegal_action_is_an_invalid_transition_naming_the_status(
    action: Action, status: RecordingStatus
) -> None:
    with pytest.raises(InvalidTransition) as caught:
        check_transition(action, status)

    assert caught.value.extra["recording_status"] == status.value
    assert caught.value.extra == {"recording_status": status.value}
    assert isinstance(caught.value, Conflict)
    assert caught.value.code == "invalid-state"


@pytest.mark.parametrize(
    ("group", "members"),
    [
        pytest.param(LIVE, {S.RECORDING, S.PAUSED}, id="live"),
        pytest.param(FINISHED, {S.COMPLETED, S.INTERRUPTED}, id="finished"),
        pytest.param(HELD_BY_A_NODE, {S.RECORDING, S.PAUSED, S.STOPPED}, id="held-by-a-node"),
    ],
)
def test_status_groups_hold_exactly_their_states(
    group: frozenset[RecordingStatus], members: set[RecordingStatus]
) -> None:
    assert set(group) == members
    assert isinstance(group, frozenset)


def test_a_deleted_recording_is_in_no_group() -> None:
    groups = (LIVE, FINISHED, HELD_BY_A_NODE)

    holding = [g for g in groups if S.DELETED in g]

    assert holding == []


def test_live_and_finished_are_disjoint() -> None:
    overlap = LIVE & FINISHED

    assert overlap == frozenset()
