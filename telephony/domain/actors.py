"""Who did something: the one way audit rows, consent events and notifications name an actor."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ActorKind(StrEnum):
    USER = "user"  # a person of a customer account
    API_KEY = "api_key"
    STAFF = "staff"
    SYSTEM = "system"  # work no caller asked for: retention, a media node, the CLI
    ANONYMOUS = "anonymous"  # before sign-in (signup, an accepted invitation)


@dataclass(frozen=True)
class Actor:
    """Never a token, an e-mail or a name: audit rows are hash-chained and cannot be scrubbed."""

    kind: ActorKind
    id: str | None = None
    role: str | None = None

    @classmethod
    def system(cls, task: str) -> Actor:
        return cls(ActorKind.SYSTEM, task)

    @classmethod
    def anonymous(cls) -> Actor:
        return cls(ActorKind.ANONYMOUS)

    def as_json(self) -> dict[str, Any]:
        """The stored form (audit rows, notification payloads); stable, the hash covers it."""
        if self.kind is ActorKind.ANONYMOUS:
            return {"type": self.kind.value}
        return {"type": self.kind.value, "id": self.id, "role": self.role}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Actor:
        return cls(ActorKind(data["type"]), data.get("id"), data.get("role"))
