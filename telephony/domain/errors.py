"""One error tree for the whole service.

Leaves name the condition and carry the API.md `code`; only
`telephony.api.problems` knows how a category maps to an HTTP status.
This module imports nothing from the project so every layer can raise these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ServiceError(Exception):
    """Base of every error the service answers with a problem document."""

    code = "internal-error"
    title = "Internal error"

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


# Categories -------------------------------------------------------------


class InvalidInput(ServiceError):
    code = "validation-failed"
    title = "The request is not valid"

    def __init__(self, detail: str = "", errors: Sequence[dict[str, str]] = (), **extra: Any):
        super().__init__(detail, **extra)
        self.errors = list(errors)


class Unauthenticated(ServiceError):
    code = "unauthenticated"
    title = "Authentication required"


class Forbidden(ServiceError):
    code = "forbidden"
    title = "Not allowed"


class NotFound(ServiceError):
    code = "not-found"
    title = "Not found"


class CsrfFailed(Forbidden):
    """A state-changing form without our CSRF token, or sent from another origin."""

    code = "csrf-failed"
    title = "The form did not come from this site"


class Conflict(ServiceError):
    code = "conflict"
    title = "Conflict with the current state"


class TooManyRequests(ServiceError):
    code = "too-many-attempts"
    title = "Too many attempts"

    def __init__(self, detail: str = "", retry_after_s: int = 60, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after_s = retry_after_s


class Unavailable(ServiceError):
    code = "unavailable"
    title = "Temporarily unavailable"

    def __init__(self, detail: str = "", retry_after_s: int | None = None, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after_s = retry_after_s


class StorageLow(Unavailable):
    """Free space under the reserve (S7): no new recording starts until there is room."""

    code = "storage-low"
    title = "Storage is nearly full"


class IntegrityFailure(ServiceError):
    code = "integrity-error"
    title = "Stored data failed its integrity check"


class BadRequest(ServiceError):
    code = "malformed-request"
    title = "The request could not be read"


class PayloadTooLarge(ServiceError):
    code = "payload-too-large"
    title = "The request body is too large"


class RangeNotSatisfiable(ServiceError):
    """RFC 9110 §15.5.17: the answer names the representation's size (`size_bytes`)."""

    code = "range-not-satisfiable"
    title = "The requested range is outside the recording"

    def __init__(self, detail: str = "", *, size_bytes: int) -> None:
        super().__init__(detail, size_bytes=size_bytes)
        self.size_bytes = size_bytes


# Leaves ----------------------------------------------------------------


class UnsupportedMediaType(ServiceError):
    code = "unsupported-media-type"
    title = "The body must be application/json"


class MalformedJson(BadRequest):
    code = "malformed-json"
    title = "The body is not valid JSON"


class InvalidCredentials(Unauthenticated):
    code = "invalid-credentials"
    title = "E-mail or password is wrong"


class ResetLinkInvalid(InvalidCredentials):
    """A password-reset token that is unknown, used or expired: a wrong credential."""

    title = "The password-reset link is unknown, used or expired"


class EmailTaken(Conflict):
    code = "email-taken"
    title = "The e-mail address is already registered"


class LastOwner(Conflict):
    code = "last-owner"
    title = "An account needs at least one owner"


class InvitationInvalid(Unauthenticated):
    code = "invalid-invitation"
    title = "The invitation is unknown, used or expired"


class ConsentRequired(Conflict):
    code = "consent-required"
    title = "Every counterpart must consent first"


class CallNotActive(Conflict):
    code = "call-not-active"
    title = "The call has ended"


class CustomerKeyRequired(Conflict):
    """The account seals recordings to its own key and has none usable: the service's
    key is never used instead (API.md "Customer-held keys")."""

    code = "customer-key-required"
    title = "The account's encryption key cannot be used"


class RecordingInProgress(Conflict):
    code = "recording-in-progress"
    title = "The call already has a live recording"


class ProcessingRestricted(Conflict):
    code = "processing-restricted"
    title = "Processing is restricted for this account"


class InvalidTransition(Conflict):
    code = "invalid-state"
    title = "The recording is not in a state that allows this"


class IdempotencyKeyReused(InvalidInput):
    code = "idempotency-key-reused"
    title = "The Idempotency-Key was used for a different request"


class IdempotencyInProgress(Conflict):
    code = "idempotency-in-progress"
    title = "A request with this Idempotency-Key is still running"


class ErasureRequiresTermination(Conflict):
    code = "erasure-requires-termination"
    title = "Erasing an account owner's data means ending the service"


class PrivacyRequestState(Conflict):
    code = "invalid-state"
    title = "The privacy request is not in a state that allows this"


class AccountTerminated(Conflict):
    code = "account-terminated"
    title = "The account has been terminated"


class UnsafeWebhookUrl(InvalidInput):
    """A webhook URL that is not http(s) or reaches a non-public address (SSRF guard)."""

    code = "validation-failed"
    title = "The webhook URL must be http(s) and reach a public address"


class StreamRefused(Forbidden):
    """A media socket that may not stream (API.md "Media streams": closed with 1008).

    Never an HTTP answer: the socket is upgraded already, its handler closes it.
    """

    code = "forbidden"
    title = "The media stream is refused"

    def __init__(self, detail: str, *, taken: bool = False) -> None:
        super().__init__(detail)
        # The call exists and streams already (SIP answers 403); else the token finds no
        # call that may stream (404, one answer for unknown, expired and ended: SIP.md 1).
        self.taken = taken
