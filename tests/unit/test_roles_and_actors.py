"""Principals and actors: who may do what, and how an actor is named in stored rows."""

from __future__ import annotations

import json
from typing import Any

import pytest

from telephony.domain.actors import Actor, ActorKind
from telephony.domain.roles import (
    ALL_SCOPES,
    CustomerPrincipal,
    CustomerRole,
    Scope,
    StaffPrincipal,
    StaffRole,
    scopes_for_customer_role,
)


def _person(role: CustomerRole, scopes: frozenset[Scope] = ALL_SCOPES) -> CustomerPrincipal:
    return CustomerPrincipal(
        id=f"user-{role.value}",
        account_id="acct-1",
        scopes=scopes,
        role=role,
        session_id="sess-1",
        email=f"{role.value}@example.com",
    )


def _api_key(scopes: frozenset[Scope]) -> CustomerPrincipal:
    return CustomerPrincipal(id="key-1", account_id="acct-1", scopes=scopes)


def _staff(role: StaffRole) -> StaffPrincipal:
    return StaffPrincipal(
        id=f"staff-{role.value}", role=role, session_id="sess-9", email="staff@example.com"
    )


# -- customer principals --------------------------------------------------------------


@pytest.mark.parametrize(
    ("principal", "is_user", "is_owner"),
    [
        pytest.param(_person(CustomerRole.OWNER), True, True, id="owner"),
        pytest.param(_person(CustomerRole.MEMBER), True, False, id="member"),
        pytest.param(_api_key(ALL_SCOPES), False, False, id="api-key-with-every-scope"),
        pytest.param(_api_key(frozenset()), False, False, id="api-key-without-scopes"),
    ],
)
def test_a_customer_principal_knows_whether_it_is_a_person_and_an_owner(
    principal: CustomerPrincipal, is_user: bool, is_owner: bool
) -> None:
    assert principal.is_user is is_user
    assert principal.is_owner is is_owner


@pytest.mark.parametrize(
    ("scopes", "scope", "allowed"),
    [
        pytest.param(ALL_SCOPES, Scope.CALLS, True, id="all-calls"),
        pytest.param(ALL_SCOPES, Scope.RECORDINGS_WRITE, True, id="all-recordings-write"),
        pytest.param(ALL_SCOPES, Scope.RECORDINGS_READ, True, id="all-recordings-read"),
        pytest.param(frozenset(), Scope.CALLS, False, id="none-calls"),
        pytest.param(frozenset(), Scope.RECORDINGS_READ, False, id="none-recordings-read"),
        pytest.param(frozenset({Scope.CALLS}), Scope.CALLS, True, id="calls-only-calls"),
        pytest.param(
            frozenset({Scope.CALLS}), Scope.RECORDINGS_WRITE, False, id="calls-only-write"
        ),
        pytest.param(
            frozenset({Scope.RECORDINGS_READ}),
            Scope.RECORDINGS_WRITE,
            False,
            id="read-does-not-imply-write",
        ),
        pytest.param(
            frozenset({Scope.RECORDINGS_WRITE}),
            Scope.RECORDINGS_READ,
            False,
            id="write-does-not-imply-read",
        ),
    ],
)
def test_an_api_key_may_use_only_the_scopes_it_was_given(
    scopes: frozenset[Scope], scope: Scope, allowed: bool
) -> None:
    key = _api_key(scopes)

    result = key.may(scope)

    assert result is allowed


@pytest.mark.parametrize("scope", [pytest.param(s, id=s.value) for s in Scope])
@pytest.mark.parametrize("role", [pytest.param(r, id=r.value) for r in CustomerRole])
def test_a_person_with_their_roles_scopes_may_use_every_scope(
    role: CustomerRole, scope: Scope
) -> None:
    person = _person(role, scopes_for_customer_role(role))

    result = person.may(scope)

    assert result is True


@pytest.mark.parametrize("role", [pytest.param(r, id=r.value) for r in CustomerRole])
def test_people_of_an_account_get_every_scope(role: CustomerRole) -> None:
    scopes = scopes_for_customer_role(role)

    assert scopes == {Scope.CALLS, Scope.RECORDINGS_WRITE, Scope.RECORDINGS_READ}
    assert scopes == ALL_SCOPES


# -- actors of principals -------------------------------------------------------------


@pytest.mark.parametrize(
    ("principal", "expected"),
    [
        pytest.param(
            _person(CustomerRole.OWNER), Actor(ActorKind.USER, "user-owner", "owner"), id="owner"
        ),
        pytest.param(
            _person(CustomerRole.MEMBER),
            Actor(ActorKind.USER, "user-member", "member"),
            id="member",
        ),
        pytest.param(_api_key(ALL_SCOPES), Actor(ActorKind.API_KEY, "key-1", None), id="api-key"),
        pytest.param(
            _staff(StaffRole.SUPPORT),
            Actor(ActorKind.STAFF, "staff-support", "support"),
            id="support",
        ),
        pytest.param(
            _staff(StaffRole.SECURITY_ADMIN),
            Actor(ActorKind.STAFF, "staff-security_admin", "security_admin"),
            id="security-admin",
        ),
    ],
)
def test_a_principal_acts_as_its_kind_id_and_role(
    principal: CustomerPrincipal | StaffPrincipal, expected: Actor
) -> None:
    actor = principal.actor

    assert actor == expected
    # The stored role is the plain value, not the enum (it lands in hash-chained JSON).
    assert actor.role is None or type(actor.role) is str


# -- the stored JSON shape ------------------------------------------------------------


@pytest.mark.parametrize(
    ("actor", "stored"),
    [
        pytest.param(
            Actor(ActorKind.USER, "user-1", "owner"),
            {"type": "user", "id": "user-1", "role": "owner"},
            id="user",
        ),
        pytest.param(
            Actor(ActorKind.API_KEY, "key-1"),
            {"type": "api_key", "id": "key-1", "role": None},
            id="api-key",
        ),
        pytest.param(
            Actor(ActorKind.STAFF, "staff-1", "support"),
            {"type": "staff", "id": "staff-1", "role": "support"},
            id="staff",
        ),
        pytest.param(
            Actor.system("retention"),
            {"type": "system", "id": "retention", "role": None},
            id="system",
        ),
        pytest.param(Actor.anonymous(), {"type": "anonymous"}, id="anonymous"),
    ],
)
def test_an_actor_is_stored_in_its_exact_shape_and_read_back_equal(
    actor: Actor, stored: dict[str, Any]
) -> None:
    shape = actor.as_json()
    through_text = json.loads(json.dumps(shape))

    assert shape == stored
    assert list(shape) == list(stored)
    assert Actor.from_json(through_text) == actor
    assert Actor.from_json(stored) == actor


def test_anonymous_carries_nothing_but_its_type() -> None:
    actor = Actor.anonymous()

    shape = actor.as_json()

    assert shape == {"type": "anonymous"}
    assert actor.id is None
    assert actor.role is None


def test_system_names_its_task_as_the_id() -> None:
    actor = Actor.system("media-node")

    assert actor == Actor(ActorKind.SYSTEM, "media-node", None)


@pytest.mark.parametrize(
    "principal",
    [
        pytest.param(_person(CustomerRole.OWNER), id="owner"),
        pytest.param(_person(CustomerRole.MEMBER), id="member"),
        pytest.param(_api_key(frozenset({Scope.CALLS})), id="api-key"),
        pytest.param(_staff(StaffRole.SUPPORT), id="support"),
        pytest.param(_staff(StaffRole.SECURITY_ADMIN), id="security-admin"),
    ],
)
def test_a_principals_actor_survives_the_stored_round_trip(
    principal: CustomerPrincipal | StaffPrincipal,
) -> None:
    stored = json.dumps(principal.actor.as_json())

    actor = Actor.from_json(json.loads(stored))

    assert actor == principal.actor
