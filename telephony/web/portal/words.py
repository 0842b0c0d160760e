"""Words the pages show from data (a state, a reason, a role), marked for the catalogue.

Templates translate them with `_(value)`; an extractor cannot see a value that
arrives at run time, so each is listed here once. A new enum member shown in a
page needs its line here, or tests/unit/test_i18n.py cannot ask for its Polish.
"""

from __future__ import annotations

from telephony.i18n import N_

SHOWN = (
    # calls
    N_("active"),
    N_("ended"),
    N_("inbound"),
    N_("outbound"),
    # consent
    N_("pending"),
    N_("granted"),
    N_("refused"),
    N_("revoked"),
    N_("announcement"),
    N_("dtmf"),
    N_("verbal"),
    N_("written"),
    N_("prior_agreement"),
    # recordings and what ended each stretch
    N_("recording"),
    N_("paused"),
    N_("stopped"),
    N_("completed"),
    N_("interrupted"),
    N_("deleted"),
    N_("pause"),
    N_("new_counterpart"),
    N_("consent_revoked"),
    N_("consent_refused"),
    N_("stop"),
    N_("call_ended"),
    N_("stream_ended"),
    N_("processing_restricted"),
    N_("process_died"),
    N_("node_lost"),
    N_("dual"),
    N_("mono"),
    N_("recorded"),
    N_("lost"),
    N_("overload"),
    N_("stream-format-changed"),
    N_("media-node-lost"),
    # people
    N_("owner"),
    N_("member"),
    # privacy requests
    N_("received"),
    N_("in_progress"),
    N_("rejected"),
    # webhook deliveries and staff access
    N_("delivered"),
    N_("failed"),
    N_("skipped"),
    N_("approved"),
)
