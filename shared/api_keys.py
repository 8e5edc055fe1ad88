"""API key secrets: how a key is made and how it is recognised, without storing it."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

KEY_PREFIX = "aek_"
# 32 random bytes: 256 bits of entropy, far beyond guessing, so a plain SHA-256 of the key is
# a safe thing to store (no salt or slow hash needed, unlike for passwords).
_KEY_BYTES = 32
# How much of the key is kept in clear to tell keys apart: the marker and 8 random characters.
DISPLAY_PREFIX_LENGTH = len(KEY_PREFIX) + 8


@dataclass(frozen=True, slots=True)
class NewKey:
    secret: str
    prefix: str
    digest: str


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def generate_key() -> NewKey:
    secret = KEY_PREFIX + secrets.token_urlsafe(_KEY_BYTES)
    return NewKey(secret=secret, prefix=secret[:DISPLAY_PREFIX_LENGTH], digest=hash_key(secret))


def same_secret(presented: str, expected: str) -> bool:
    """Constant-time comparison, so response timing tells nothing about how much matched."""
    return hmac.compare_digest(presented.encode("utf-8", "surrogatepass"), expected.encode())
