"""What an e-mail address and a password are, for every door they come in by (API, CLI).

Plain patterns and bounds: the web's input layer turns them into its
request types (and the OpenAPI schema), the CLI checks its arguments
against the same ones.
"""

from __future__ import annotations

import re

# An ASCII local part of RFC 5322 "atext" characters and dots, then a dotted host name.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN = rf"^{_ATEXT}+(?:\.{_ATEXT}+)*@{_LABEL}(?:\.{_LABEL})+$"
EMAIL_MIN, EMAIL_MAX = 6, 254  # 254: RFC 5321's limit for an address
# S1: at least 12 characters; the upper bound keeps Argon2 input sane.
PASSWORD_MIN, PASSWORD_MAX = 12, 1024
# Any text but controls (tab and newline are text); NUL never: PostgreSQL cannot hold it.
FREE_TEXT = r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f]*$"


def is_email(text: str) -> bool:
    return EMAIL_MIN <= len(text) <= EMAIL_MAX and re.match(EMAIL_PATTERN, text) is not None


def is_password(text: str) -> bool:
    return PASSWORD_MIN <= len(text) <= PASSWORD_MAX and re.match(FREE_TEXT, text) is not None
