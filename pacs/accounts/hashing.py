"""Secret handling: argon2 for what people choose (passwords, PINs), SHA-256 for random tokens.

Passwords and PINs are low-entropy, so they get a slow, salted argon2id hash (RFC 9106). API keys
and share tokens are ≥ 128 random bits, so a fast SHA-256 digest is enough and allows a unique
index lookup. Comparisons of digests use :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# Moderate cost: ~20 ms per hash keeps login snappy and brute force expensive.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

# A valid hash of a random string: verifying against it costs the same as a real check, so a
# login for an unknown user takes as long as one with a wrong password (no user enumeration).
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


def hash_secret(value: str) -> str:
    """An argon2id hash of a password or PIN."""
    return _HASHER.hash(value)


def verify_secret(hashed: str | None, value: str) -> bool:
    """Whether ``value`` matches ``hashed``; with ``hashed=None`` it burns the same time and fails."""
    try:
        return _HASHER.verify(hashed or _DUMMY_HASH, value) and hashed is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(hashed: str) -> bool:
    return _HASHER.check_needs_rehash(hashed)


def digest(token: str) -> str:
    """SHA-256 hex digest of a high-entropy token (API key, share token)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token(prefix: str = "", nbytes: int = 32) -> str:
    """A URL-safe random token of ``nbytes`` bytes of entropy."""
    return prefix + secrets.token_urlsafe(nbytes)


def derive_token(key: bytes, salt: str, nbytes: int = 20) -> str:
    """``base64url(HMAC-SHA256(key, salt))`` truncated to ``nbytes`` (160 bits by default)."""
    mac = hmac.new(key, b"cloudfilm-share\x00" + salt.encode("ascii"), hashlib.sha256).digest()[:nbytes]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
