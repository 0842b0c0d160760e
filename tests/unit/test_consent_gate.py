"""The recording gate (R1, R2): who may start or resume a recording, as tables of call facts."""

from __future__ import annotations

import pytest

from telephony.domain.consent import (
    CallFacts,
    Consent,
    CounterpartFacts,
    Decision,
    can_resume,
    check_can_record,
    check_can_resume,
    check_consent,
    current_flags,
    missing_consent,
)
from telephony.domain.errors import (
    CallNotActive,
    ConsentRequired,
    ProcessingRestricted,
    RecordingInProgress,
    ServiceError,
)

G, P, F, V = Consent.GRANTED, Consent.PENDING, Consent.REFUSED, Consent.REVOKED


def _call(
    *consents: Consent,
    active: bool = True,
    live: bool = False,
    restricted: bool = False,
) -> CallFacts:
    """A call whose counterparts are cp1, cp2, … with the given flags, in that order."""
    return CallFacts(
        id="call-1",
        active=active,
        counterparts=[CounterpartFacts(f"cp{i}", c) for i, c in enumerate(consents, start=1)],
        has_live_recording=live,
        processing_restricted=restricted,
    )


# -- current_flags: a counterpart's flag is its latest decision ------------------------


@pytest.mark.parametrize(
    ("counterparts", "decisions", "expected"),
    [
        pytest.param(["cp1"], [], {"cp1": P}, id="no-decision-is-pending"),
        pytest.param([], [("cp1", Decision.GRANTED)], {}, id="no-counterparts-no-flags"),
        pytest.param(["cp1"], [("cp1", Decision.GRANTED)], {"cp1": G}, id="a-grant-is-granted"),
        pytest.param(["cp1"], [("cp1", Decision.REFUSED)], {"cp1": F}, id="a-refusal-is-refused"),
        pytest.param(
            ["cp1"],
            [("cp1", Decision.GRANTED), ("cp1", Decision.REVOKED)],
            {"cp1": V},
            id="revocation-after-grant-is-revoked",
        ),
        pytest.param(
            ["cp1"],
            [("cp1", Decision.GRANTED), ("cp1", Decision.REVOKED), ("cp1", Decision.GRANTED)],
            {"cp1": G},
            id="grant-after-revocation-is-granted-again",
        ),
        pytest.param(
            ["cp1"],
            [("cp1", Decision.REFUSED), ("cp1", Decision.GRANTED)],
            {"cp1": G},
            id="grant-after-refusal-is-granted",
        ),
        pytest.param(
            ["cp1", "cp2"],
            [("cp1", Decision.GRANTED), ("cp9", Decision.REVOKED), ("stranger", Decision.GRANTED)],
            {"cp1": G, "cp2": P},
            id="decisions-for-unknown-counterparts-are-ignored",
        ),
        pytest.param(
            ["cp1", "cp2", "cp3"],
            [
                ("cp2", Decision.GRANTED),
                ("cp1", Decision.REFUSED),
                ("cp2", Decision.REVOKED),
                ("cp1", Decision.GRANTED),
            ],
            {"cp1": G, "cp2": V, "cp3": P},
            id="each-counterpart-keeps-its-own-latest",
        ),
    ],
)
def test_a_counterparts_flag_is_its_latest_decision(
    counterparts: list[str],
    decisions: list[tuple[str, Decision]],
    expected: dict[str, Consent],
) -> None:
    flags = current_flags(counterparts, decisions)

    assert flags == expected
    assert all(isinstance(flag, Consent) for flag in flags.values())


def test_current_flags_accepts_one_shot_iterables() -> None:
    counterparts = iter(["cp1", "cp2"])
    decisions = iter([("cp2", Decision.GRANTED)])

    flags = current_flags(counterparts, decisions)

    assert flags == {"cp1": P, "cp2": G}


# -- missing_consent / check_consent ---------------------------------------------------


@pytest.mark.parametrize(
    ("consents", "missing"),
    [
        pytest.param((), [], id="no-counterparts"),
        pytest.param((G,), [], id="one-granted"),
        pytest.param((G, G, G), [], id="all-granted"),
        pytest.param((P,), ["cp1"], id="one-pending"),
        pytest.param((F,), ["cp1"], id="one-refused"),
        pytest.param((V,), ["cp1"], id="one-revoked"),
        pytest.param((G, P), ["cp2"], id="granted-and-pending"),
        pytest.param((V, G, F), ["cp1", "cp3"], id="revoked-granted-refused"),
        pytest.param((P, F, V, G), ["cp1", "cp2", "cp3"], id="every-kind-of-not-granted"),
    ],
)
def test_missing_consent_lists_every_counterpart_not_granted_in_call_order(
    consents: tuple[Consent, ...], missing: list[str]
) -> None:
    call = _call(*consents)

    result = missing_consent(call)

    assert result == missing


@pytest.mark.parametrize(
    "consents",
    [
        pytest.param((P,), id="pending"),
        pytest.param((F,), id="refused"),
        pytest.param((V,), id="revoked"),
        pytest.param((G, V), id="one-of-two-revoked"),
    ],
)
def test_check_consent_refuses_without_every_grant(consents: tuple[Consent, ...]) -> None:
    call = _call(*consents)

    with pytest.raises(ConsentRequired) as caught:
        check_consent(call)

    assert caught.value.extra["missing"] == missing_consent(call)
    assert caught.value.code == "consent-required"


def test_check_consent_ignores_call_state_other_than_consent() -> None:
    call = _call(G, active=False, live=True, restricted=True)

    check_consent(call)  # raises when refused


# -- check_can_record: the gate ------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "missing"),
    [
        pytest.param(_call(G, active=False), CallNotActive, None, id="call-ended"),
        pytest.param(_call(G, restricted=True), ProcessingRestricted, None, id="restricted"),
        pytest.param(_call(G, live=True), RecordingInProgress, None, id="live-recording"),
        pytest.param(_call(P), ConsentRequired, ["cp1"], id="pending"),
        pytest.param(_call(F), ConsentRequired, ["cp1"], id="refused"),
        pytest.param(_call(V), ConsentRequired, ["cp1"], id="revoked"),
        pytest.param(_call(G, V, G), ConsentRequired, ["cp2"], id="one-revoked-among-grants"),
        pytest.param(
            _call(F, G, P, V), ConsentRequired, ["cp1", "cp3", "cp4"], id="several-missing"
        ),
        # Precedence: the code checks ended, then restricted, then live, then consent.
        pytest.param(
            _call(P, active=False, restricted=True, live=True),
            CallNotActive,
            None,
            id="ended-beats-restricted-live-and-missing",
        ),
        pytest.param(
            _call(P, active=False, restricted=True),
            CallNotActive,
            None,
            id="ended-beats-restricted-and-missing",
        ),
        pytest.param(
            _call(V, restricted=True, live=True),
            ProcessingRestricted,
            None,
            id="restricted-beats-live-and-missing",
        ),
        pytest.param(_call(F, live=True), RecordingInProgress, None, id="live-beats-missing"),
    ],
)
def test_the_gate_refuses_with_the_first_condition_that_applies(
    call: CallFacts, error: type[ServiceError], missing: list[str] | None
) -> None:
    with pytest.raises(ServiceError) as caught:
        check_can_record(call)

    assert type(caught.value) is error
    if missing is not None:
        assert caught.value.extra["missing"] == missing


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(_call(G), id="one-granted"),
        pytest.param(_call(G, G, G), id="all-granted"),
        # No counterpart: nobody is missing, so the gate opens (R2 holds vacuously).
        pytest.param(_call(), id="no-counterparts"),
    ],
)
def test_the_gate_opens_when_every_counterpart_has_granted(call: CallFacts) -> None:
    check_can_record(call)  # raises when refused


def test_a_revoked_counterpart_blocks_the_gate() -> None:
    call = _call(G, V)

    with pytest.raises(ConsentRequired) as caught:
        check_can_record(call)

    assert caught.value.extra == {"missing": ["cp2"]}


# -- resume: everything the start checks, except the live recording ------------------


@pytest.mark.parametrize(
    ("call", "error", "missing"),
    [
        pytest.param(_call(G, live=True, active=False), CallNotActive, None, id="call-ended"),
        pytest.param(
            _call(G, live=True, restricted=True), ProcessingRestricted, None, id="restricted"
        ),
        pytest.param(_call(P, live=True), ConsentRequired, ["cp1"], id="pending"),
        pytest.param(_call(G, F, live=True), ConsentRequired, ["cp2"], id="refused"),
        pytest.param(_call(V, G, live=True), ConsentRequired, ["cp1"], id="revoked"),
        pytest.param(
            _call(V, live=True, active=False, restricted=True),
            CallNotActive,
            None,
            id="ended-beats-restricted-and-missing",
        ),
        pytest.param(
            _call(V, live=True, restricted=True),
            ProcessingRestricted,
            None,
            id="restricted-beats-missing",
        ),
    ],
)
def test_resume_refuses_what_start_refuses(
    call: CallFacts, error: type[ServiceError], missing: list[str] | None
) -> None:
    with pytest.raises(ServiceError) as caught:
        check_can_resume(call)

    assert type(caught.value) is error
    if missing is not None:
        assert caught.value.extra["missing"] == missing
    assert can_resume(call) is False


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(_call(G, live=True), id="the-live-recording-is-this-one"),
        pytest.param(_call(G, G, live=False), id="no-live-recording"),
        pytest.param(_call(live=True), id="no-counterparts"),
    ],
)
def test_resume_ignores_the_live_recording_itself(call: CallFacts) -> None:
    check_can_resume(call)  # raises when refused

    assert can_resume(call) is True


def test_resume_does_not_change_the_callers_facts() -> None:
    call = _call(G, live=True)

    check_can_resume(call)

    assert call.has_live_recording is True
