"""Opaque secrets: a prefix a secret scanner can spot, 256 random bits, and the SHA-256
digest that is all the database keeps of them (client secrets now; reset and verification
tokens next).

SHA-256 is enough for a value with 256 random bits: there is nothing to guess, so no slow
hash is needed, and a lookup by digest is an index seek. Digests are compared in constant
time. (Refresh tokens are made otherwise, by `refresh_tokens`: their session must recognize
every earlier one without a row for each.)
"""

import hashlib
import hmac
import secrets

SECRET_BYTES = 32  # 256 bits (RFC 6749 §10.10)


def new(prefix: str) -> str:
    """A new secret: `prefix` and 256 random bits, base64url."""
    return prefix + secrets.token_urlsafe(SECRET_BYTES)


def digest(value: str) -> bytes:
    """What is stored of a secret."""
    return hashlib.sha256(value.encode()).digest()


def matches(stored: bytes | None, presented: bytes) -> bool:
    """Is `presented` (a digest) the `stored` one? In constant time; None matches nothing."""
    return hmac.compare_digest(stored or b"", presented)
