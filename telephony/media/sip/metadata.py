"""SIPREC recording metadata (RFC 7865; SIP.md 4.1 to 4.4): who sends which stream.

Parsed with defusedxml and `forbid_dtd`: no DTD, so no entity of any kind,
no external fetch (XXE) and no expansion (billion laughs); the size and the
element count are capped before and after parsing. Names are matched by
local name, namespaces ignored (one SBC's form drops the `:1`, another uses
prefixes), `*_id` attributes or the drafts' `id`, unknown elements skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

MEDIA_TYPES = frozenset({"application/rs-metadata+xml", "application/rs-metadata"})
MAX_BYTES = 64 * 1024
MAX_ELEMENTS = 2000
_NUMBER_NOISE = re.compile(r"[-.() ]")


class BadMetadata(ValueError):
    """Answered 400 with a Warning naming the reason."""


@dataclass(frozen=True)
class Participant:
    id: str
    aors: tuple[str, ...]

    @property
    def numbers(self) -> tuple[str, ...]:
        return tuple(n for n in (number_of(a) for a in self.aors) if n)


@dataclass
class Metadata:
    complete: bool = True  # datamode: absent means complete
    participants: dict[str, Participant] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # stream_id -> its a=label
    sends: dict[str, set[str]] = field(default_factory=dict)  # participant_id -> stream_ids

    def sender_of(self, label: str | None) -> Participant | None:
        """The participant sending the stream `label` names: one, or None when none or
        several do (a mix is nobody's side)."""
        if label is None:
            return None
        streams = {sid for sid, value in self.labels.items() if value == label}
        senders = [
            p for pid, p in self.participants.items() if self.sends.get(pid, set()) & streams
        ]
        return senders[0] if len(senders) == 1 else None

    def merged(self, update: Metadata) -> Metadata:
        """A `complete` update replaces the model; a `partial` one replaces by id."""
        if update.complete:
            return update
        sends = {pid: set(ids) for pid, ids in self.sends.items()}
        sends.update(update.sends)
        return Metadata(
            complete=True,
            participants={**self.participants, **update.participants},
            labels={**self.labels, **update.labels},
            sends=sends,
        )


def number_of(aor: str) -> str | None:
    """An AOR's number: a `sip:` user part or what follows `tel:`, cut at the first `;`,
    %-decoded, without visual separators (SIP.md 4.2)."""
    scheme, colon, rest = aor.strip().partition(":")
    if not colon:
        return None
    scheme = scheme.lower()
    if scheme in ("sip", "sips"):
        if "@" not in rest:
            return None
        rest = rest.split("@", 1)[0]
    elif scheme != "tel":
        return None
    number = _NUMBER_NOISE.sub("", unquote(rest.split(";", 1)[0]))
    return number or None


def parse(data: bytes) -> Metadata:
    if len(data) > MAX_BYTES:
        raise BadMetadata(f"metadata over {MAX_BYTES // 1024} KiB")
    try:
        root = fromstring(data, forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise BadMetadata(f"metadata refused: {type(exc).__name__}") from None
    elements = list(root.iter())
    if len(elements) > MAX_ELEMENTS:
        raise BadMetadata(f"metadata of more than {MAX_ELEMENTS} elements")
    if _local(root.tag) != "recording":
        raise BadMetadata("metadata whose root is not <recording>")
    found = Metadata()
    for element in root:
        name = _local(element.tag)
        if name == "datamode":
            found.complete = (element.text or "").strip().lower() != "partial"
        elif name == "participant":
            pid = _id(element, "participant_id")
            aors = tuple(
                a
                for child in element
                if _local(child.tag) == "nameid" and (a := _attr(child, "aor"))
            )
            if pid:
                found.participants[pid] = Participant(pid, aors)
        elif name == "stream":
            sid = _id(element, "stream_id")
            label = next((c.text or "" for c in element if _local(c.tag) == "label"), None)
            if sid and label is not None:
                found.labels[sid] = label.strip()
        elif name == "participantstreamassoc":
            pid = _id(element, "participant_id")
            sent = {(c.text or "").strip() for c in element if _local(c.tag) == "send"}
            if pid:
                found.sends.setdefault(pid, set()).update(s for s in sent if s)
    return found


def _local(tag: object) -> str:
    """An element's name without namespace or prefix, lower case."""
    return str(tag).rsplit("}", 1)[-1].rsplit(":", 1)[-1].lower()


def _attr(element: Element, name: str) -> str | None:
    return next((v for k, v in element.attrib.items() if _local(k) == name), None)


def _id(element: Element, name: str) -> str | None:
    return _attr(element, name) or _attr(element, "id")
