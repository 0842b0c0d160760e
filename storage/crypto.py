"""The only module that touches `cryptography.hazmat`: passwords now, keys and chunks later.

Password hashes (S1) are Argon2id PHC strings
(`$argon2id$v=19$m=…,t=…,p=…$salt$hash`): the salt is random per password and
the cost travels with the hash, so raising the cost later needs no migration
(`needs_rehash` says when a stored hash is below the current cost).
"""

from __future__ import annotations

import os
import re

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

SALT_BYTES = 16
HASH_BYTES = 32
_PARAMS = re.compile(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$")


def hash_password(password: str, *, memory_kib: int, iterations: int, lanes: int) -> str:
    """Derive a PHC-encoded Argon2id hash. CPU-bound: call it from a worker thread."""
    kdf = Argon2id(
        salt=os.urandom(SALT_BYTES),
        length=HASH_BYTES,
        iterations=iterations,
        lanes=lanes,
        memory_cost=memory_kib,
    )
    return kdf.derive_phc_encoded(password.encode("utf-8", "surrogatepass"))


def verify_password(password: str, phc: str) -> bool:
    """Constant-time check of a password against its stored hash; False for any mismatch."""
    try:
        Argon2id.verify_phc_encoded(password.encode("utf-8", "surrogatepass"), phc)
    except (InvalidKey, ValueError):
        return False
    return True


def needs_rehash(phc: str, *, memory_kib: int, iterations: int, lanes: int) -> bool:
    match = _PARAMS.match(phc)
    if not match:
        return True
    m, t, p = (int(g) for g in match.groups())
    return m < memory_kib or t < iterations or p != lanes
