"""Schemathesis hooks for `make test`'s fuzz run: the formats our schema names beyond JSON Schema's.

`e164`: a number valid in its numbering plan. A pattern cannot say that, so
the schema names the format and this strategy draws such numbers: every
example number libphonenumber knows, fixed line and mobile, for every region.
`cidr`: likewise for networks, whose IPv6 grammar no pattern holds.
`x25519-public-pem`, `rsa-public-pem`, `mlkem768-x25519-public-base64`: public keys,
each a real one of its scheme (a pattern cannot say "a point on the curve").
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import phonenumbers
import schemathesis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mlkem, rsa, x25519
from hypothesis import strategies as st


def _valid_numbers() -> list[str]:
    found = set()
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE):
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None and phonenumbers.is_valid_number(number):
                found.add(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    return sorted(found)


schemathesis.openapi.format("e164", st.sampled_from(_valid_numbers()))

# `cidr`: an IPv4 or IPv6 network, a bare address being its /32 or /128 (a SIP trunk's
# allowed sources).
schemathesis.openapi.format(
    "cidr",
    st.one_of(
        st.builds(lambda a, p: f"{a}/{p}", st.ip_addresses(v=4), st.integers(0, 32)),
        st.builds(lambda a, p: f"{a}/{p}", st.ip_addresses(v=6), st.integers(0, 128)),
        st.ip_addresses().map(str),
    ),
)


def _public_keys() -> dict[str, list[str]]:
    """A few real public keys of each scheme (API.md "Customer-held keys"): the fuzzer may
    register one twice, which is a 409, as any client would be told."""
    spki = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    hybrid = []
    for _ in range(4):
        m, x = mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate()
        raw = m.public_key().public_bytes_raw() + x.public_key().public_bytes_raw()
        hybrid.append(base64.b64encode(raw).decode())
    return {
        "x25519-public-pem": [
            x25519.X25519PrivateKey.generate().public_key().public_bytes(*spki).decode()
            for _ in range(8)
        ],
        "rsa-public-pem": [
            rsa.generate_private_key(65537, bits).public_key().public_bytes(*spki).decode()
            for bits in (3072, 4096)
        ],
        "mlkem768-x25519-public-base64": hybrid,
    }


for _format, _keys in _public_keys().items():
    schemathesis.openapi.format(_format, st.sampled_from(_keys))


def _rfc3339(at: datetime, offset_minutes: int) -> str:
    zone = timezone(timedelta(minutes=offset_minutes))
    return at.astimezone(zone).isoformat()


# `past-date-time`: RFC 3339 with an offset, from 1970, and already past (an hour of
# margin, so a run at a clock's edge stays honest).
schemathesis.openapi.format(
    "past-date-time",
    st.builds(
        _rfc3339,
        st.datetimes(
            min_value=datetime(1970, 1, 2),
            max_value=datetime.now() - timedelta(hours=1),
            timezones=st.just(UTC),
        ),
        st.integers(min_value=-14 * 60, max_value=14 * 60),
    ),
)


@schemathesis.hook
def map_headers(context: object, headers: dict[str, Any] | None) -> dict[str, Any] | None:
    """A client sends a fresh Idempotency-Key with each distinct request (API.md conventions);
    the fuzzer would otherwise reuse its short generated keys across requests, which the
    service rightly refuses (422 idempotency-key-reused; test_idempotency.py tests that)."""
    if headers and "Idempotency-Key" in headers:
        headers = {**headers, "Idempotency-Key": uuid.uuid4().hex}
    return headers


@schemathesis.hook
def map_case(context: object, case: schemathesis.Case) -> schemathesis.Case:
    """The same for the cases no header map sees (the coverage phase's)."""
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
    return case
