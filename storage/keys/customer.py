"""Customer-held keys (API.md "Customer-held keys"): public keys the service wraps a
recording's data key to, and never holds the private half of (R3).

Three schemes, each from `cryptography` itself:
- `hpke-x25519`: HPKE (RFC 9180), DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM;
- `hpke-mlkem768-x25519`: the same with the ML-KEM-768 + X25519 hybrid KEM, so a
  recording kept for years resists "harvest now, decrypt later";
- `rsa-oaep-sha256`: RSA-OAEP with SHA-256 and MGF1-SHA-256, 3072 bits or more, for
  customers who already use that scheme.

A key is taken as the customer sends it (PEM, or base64 for the hybrid, which has no PEM
form: the ML-KEM-768 encapsulation key, 1,184 bytes, then the X25519 key, 32, the order
of the hybrid's own encoding) and proven usable at once by a trial wrap: a key that
cannot be used is refused when it is registered, not when a call wants it.

Nothing here ever puts key material into an exception's text: a refusal says what is
wrong in words (the API's 422 repeats it), and a private key pasted by mistake is
neither kept nor echoed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, padding, rsa, x25519

ALGORITHMS = ("hpke-x25519", "hpke-mlkem768-x25519", "rsa-oaep-sha256")
MIN_RSA_BITS = 3072
MAX_RSA_BITS = 16384  # past this a wrap costs seconds of a node's CPU
MLKEM768_PUBLIC_BYTES = 1184
X25519_PUBLIC_BYTES = 32
# HPKE's `info` and OAEP's label: a wrapped key opens only as the data key of the one
# recording it was made for.
WRAP_CONTEXT = b"telephony recording data key v1\x00"

HPKE_SUITES = {
    "hpke-x25519": hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
    "hpke-mlkem768-x25519": hpke.Suite(
        hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM
    ),
}


class KeyRefused(ValueError):
    """A public key the service will not wrap to; the text says why, in words only."""


@dataclass(frozen=True)
class CustomerKey:
    """A registered key in the form it is kept: `public_bytes` is the DER
    SubjectPublicKeyInfo of a PEM key, or the hybrid's raw 1,216 bytes."""

    algorithm: str
    public_bytes: bytes

    @property
    def fingerprint(self) -> str:
        """SHA-256 of `public_bytes`, hex: for a PEM key what
        `openssl pkey -pubin -outform DER | sha256sum` prints."""
        return hashlib.sha256(self.public_bytes).hexdigest()


def parse(algorithm: str, text: str) -> CustomerKey:
    """The key `text` holds for `algorithm`, proven usable; KeyRefused otherwise."""
    if algorithm not in ALGORITHMS:
        raise KeyRefused(f"algorithm is one of {', '.join(ALGORITHMS)}")
    if "PRIVATE KEY" in text:
        # Refused before anything parses it, and never repeated: a private key sent here
        # has left its owner's hands, so the pair must be replaced.
        raise KeyRefused(
            "public_key holds a private key; it was not kept. Make a new key pair: "
            "this one has been sent over the network"
        )
    if algorithm == "hpke-mlkem768-x25519":
        key = CustomerKey(algorithm, _hybrid_bytes(text))
    else:
        key = CustomerKey(algorithm, _pem_public_der(algorithm, text))
    try:
        wrap(key, bytes(32), "rec_trial")
    except (ValueError, UnsupportedAlgorithm):
        raise KeyRefused("public_key cannot be used: a trial wrap to it failed") from None
    return key


def wrap(key: CustomerKey, data_key: bytes, recording_id: str) -> bytes:
    """The data key, readable only with the customer's private key, for this recording."""
    context = WRAP_CONTEXT + recording_id.encode()
    if key.algorithm == "rsa-oaep-sha256":
        public = serialization.load_der_public_key(key.public_bytes)
        assert isinstance(public, rsa.RSAPublicKey)  # parse() took nothing else
        label = padding.OAEP(
            mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=context
        )
        return public.encrypt(data_key, label)
    return HPKE_SUITES[key.algorithm].encrypt(data_key, _hpke_public(key), info=context)


def _hpke_public(key: CustomerKey) -> x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey:
    if key.algorithm == "hpke-x25519":
        public = serialization.load_der_public_key(key.public_bytes)
        assert isinstance(public, x25519.X25519PublicKey)
        return public
    return hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(key.public_bytes[:MLKEM768_PUBLIC_BYTES]),
        x25519.X25519PublicKey.from_public_bytes(key.public_bytes[MLKEM768_PUBLIC_BYTES:]),
    )


def _pem_public_der(algorithm: str, text: str) -> bytes:
    try:
        public = serialization.load_pem_public_key(text.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm):
        raise KeyRefused("public_key is not a PEM public key (BEGIN PUBLIC KEY)") from None
    wanted = x25519.X25519PublicKey if algorithm == "hpke-x25519" else rsa.RSAPublicKey
    if not isinstance(public, wanted):
        raise KeyRefused(f"public_key is {_kind(public)}, not the {_KINDS[algorithm]} it names")
    if isinstance(public, rsa.RSAPublicKey):
        bits = public.key_size
        if bits < MIN_RSA_BITS:
            raise KeyRefused(f"an RSA key of {bits} bits: {MIN_RSA_BITS} or more are needed")
        if bits > MAX_RSA_BITS:
            raise KeyRefused(f"an RSA key of {bits} bits: at most {MAX_RSA_BITS}")
        if public.public_numbers().e < 65537:
            raise KeyRefused("an RSA key's public exponent is 65537 or more")
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _hybrid_bytes(text: str) -> bytes:
    try:
        raw = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise KeyRefused("public_key is base64 of the hybrid key (no PEM form exists)") from None
    size = MLKEM768_PUBLIC_BYTES + X25519_PUBLIC_BYTES
    if len(raw) != size:
        raise KeyRefused(
            f"an ML-KEM-768 + X25519 public key is {size} bytes "
            f"(ML-KEM's {MLKEM768_PUBLIC_BYTES}, then X25519's {X25519_PUBLIC_BYTES}), "
            f"not {len(raw)}"
        )
    try:
        mlkem.MLKEM768PublicKey.from_public_bytes(raw[:MLKEM768_PUBLIC_BYTES])
    except ValueError:
        raise KeyRefused("public_key's ML-KEM-768 part is not a valid key") from None
    return raw


_KINDS = {"hpke-x25519": "X25519 key", "rsa-oaep-sha256": "RSA key"}


def _kind(public: object) -> str:
    """A key's type in words, for a refusal."""
    if isinstance(public, ec.EllipticCurvePublicKey):
        return f"an EC key on {public.curve.name}"
    if isinstance(public, rsa.RSAPublicKey):
        return "an RSA key"
    return f"a key of type {type(public).__name__.removesuffix('PublicKey')}"


def hybrid_private(
    kem: mlkem.MLKEM768PrivateKey, dh: x25519.X25519PrivateKey
) -> hpke.MLKEM768X25519PrivateKey:
    """The hybrid's private key from its two halves (the customer's side: decrypt)."""
    return hpke.MLKEM768X25519PrivateKey(kem, dh)
