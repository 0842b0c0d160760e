"""SIPREC's participants (SIP.md 4.3, 4.4): which side of the recording each stream is on,
and who joins mid-call.

The metadata says which participant sends which labelled stream; the
customer's own number is the customer's side, anyone else a counterpart.
A recording's channels are fixed from its start, so an update can only
reshuffle the streams among them; a participant the update names for the
first time is a new counterpart, with consent to give before anything of
theirs is kept (R2).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from storage.sip_trunks import Trunk
from telephony.domain.tracks import INBOUND, OUTBOUND
from telephony.media.sip import metadata, sdp
from telephony.media.sip.message import Request
from telephony.media.sip.replies import address_uri, uri_user
from telephony.recorder.hub import MediaHub
from telephony.recorder.sip_media import SipCall
from telephony.usecases import calls, media_lifecycle, sip_trunks
from telephony.usecases.media_lifecycle import Attached

log = logging.getLogger(__name__)


def track_names(
    streams: Sequence[sdp.Accepted], described: metadata.Metadata | None, attached: Attached
) -> list[str]:
    """A track per answered stream: on the side of the participant the metadata says sends
    it (the customer's own number: the customer's side), else the caller's side first
    (SIP.md 4.3 fallback), then the other. The customer's side is one track, `outbound`;
    every further stream is a counterpart track of its own."""
    caller_first = (
        [OUTBOUND.name, INBOUND.name] if attached.outbound else [INBOUND.name, OUTBOUND.name]
    )
    names: list[str] = []
    for index, stream in enumerate(streams):
        sender = described.sender_of(stream.label) if described else None
        if sender is not None:
            wanted = OUTBOUND.name if attached.customer_number in sender.numbers else INBOUND.name
        else:
            if described is not None:
                log.info("a SIPREC stream no participant sends", extra={"label": stream.label})
            wanted = caller_first[index] if index < 2 else INBOUND.name
        names.append(wanted if wanted not in names else f"stream{index + 1}")
    return names


def remap(call: SipCall) -> None:
    """Re-map channels from the update's arrival (SIP.md 4.4): after a transfer a label may
    carry the other side. Only a reshuffle of the tracks the recording has: its channels
    are fixed from its start, so a stream whose sender is unknown or shared (a mix) keeps
    its side, and an update that would put two streams on one side changes nothing."""
    if call.described is None:
        return
    customer = call.live.attached.customer_number
    wanted = []
    for leg in call.legs:
        sender = call.described.sender_of(leg.label)
        if sender is None:
            wanted.append(leg.track)
        else:
            wanted.append(OUTBOUND.name if customer in sender.numbers else INBOUND.name)
    tracks = [leg.track for leg in call.legs]
    if wanted == tracks or sorted(wanted) != sorted(tracks):
        return
    now = call.clock() - call.started
    for leg, track in zip(call.legs, wanted, strict=True):
        if track != leg.track:
            leg.track_before, leg.track, leg.track_from = leg.track, track, now
    log.info("a SIPREC update moved streams to other channels", extra={"sip": call.key[0]})


def parties(request: Request, described: metadata.Metadata | None, trunk: Trunk) -> list[str]:
    """The numbers a trunk's session names, the caller first: the metadata's participants
    in its order (an SRC lists the caller first, SIP.md 4.3), else From and To."""
    if described is not None and described.participants:
        return [p.numbers[0] for p in described.participants.values() if p.numbers]
    users = (uri_user(address_uri(request.headers.get(h)) or "") for h in ("from", "to"))
    return [u for u in users if u and u != trunk.username]


def _numbers_of(described: metadata.Metadata | None) -> set[str]:
    if described is None:
        return set()
    numbers = (sip_trunks.as_e164(n) for p in described.participants.values() for n in p.numbers)
    return {n for n in numbers if n}


async def joined(hub: MediaHub, call: SipCall, update: metadata.Metadata) -> None:
    """Merge a metadata update; a participant it names for the first time, with a number
    that is neither the customer's nor a known party's, becomes a pending counterpart
    and pauses a running recording until they consent, as one added over the API does
    (R2; SIP.md 4.3). The channels follow by `remap`, once the request is taken."""
    before = call.described
    call.described = (before or metadata.Metadata()).merged(update)
    attached = call.live.attached
    fresh = [
        number
        for pid, participant in call.described.participants.items()
        if before is None or pid not in before.participants
        for number in participant.numbers[:1]
    ]
    if not fresh:
        return
    view = await calls.get_call(hub.pool, attached.account_id, attached.call_id)
    known = _numbers_of(before) | {attached.customer_number, view.call.from_number}
    known |= {view.call.to_number} | {c.counterpart.number for c in view.counterparts}
    for raw in fresh:
        number = sip_trunks.as_e164(raw)
        if number is None or number in known:
            continue
        known.add(number)
        await calls.add_counterpart(
            hub.pool,
            attached.account_id,
            media_lifecycle.node_actor(hub.node_id),
            attached.call_id,
            label="joined (SIPREC)",
            number=number,
        )
        log.info("a SIPREC participant joined: a new counterpart", extra={"sip": call.key[0]})
