"""Refresh token values: a session's id, the token's number in it, and an HMAC over both.

A session's refresh tokens are numbered; a refresh spends number n and issues n + 1. The
value carries the session id and n in the clear and a tag: HMAC-SHA256, under a key
derived from AUTH_SECRET_KEY, over the id, n and the session's random seed (stored with
the session). So any token the session ever had is recognized from the session's one row,
and the reuse of an earlier one detected (RFC 9700 §4.14.2), without a row per refresh;
while nobody can make a token from a session id (which access tokens carry as `sid`):
that takes the key and the seed, kept apart (the configuration and the database). The tag's
256 bits leave nothing to guess (RFC 6749 §10.10).
"""

import base64
import hashlib
import hmac
import uuid
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "ast_rt_"  # a secret scanner can spot one
SEED_BYTES = 32
MAX_GENERATION = 2**32 - 1
_GENERATION_BYTES = 4
_TAG_BYTES = 32
_BODY_BYTES = 16 + _GENERATION_BYTES + _TAG_BYTES
_BODY_CHARS = -(-_BODY_BYTES * 4 // 3)  # base64url without padding
_PURPOSE = b"auth-service refresh-token mac v1"


@dataclass(frozen=True, slots=True)
class Presented:
    """What a refresh token value says of itself, before its tag is checked."""

    session_id: uuid.UUID
    generation: int
    tag: bytes


class RefreshTokens:
    """Makes and reads refresh token values under one AUTH_SECRET_KEY."""

    def __init__(self, secret_key: str) -> None:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PURPOSE)
        self._key = hkdf.derive(secret_key.encode())

    def _tag(self, session_id: uuid.UUID, generation: int, seed: bytes) -> bytes:
        message = session_id.bytes + generation.to_bytes(_GENERATION_BYTES, "big") + seed
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def make(self, session_id: uuid.UUID, generation: int, seed: bytes) -> str:
        """The value of token number `generation` of the session with this id and seed."""
        if not 0 <= generation <= MAX_GENERATION:
            raise ValueError("a refresh token's number is a 32-bit unsigned integer")
        body = (
            session_id.bytes
            + generation.to_bytes(_GENERATION_BYTES, "big")
            + self._tag(session_id, generation, seed)
        )
        return PREFIX + base64.urlsafe_b64encode(body).rstrip(b"=").decode()

    @staticmethod
    def read(value: str) -> Presented | None:
        """What `value` says of itself; None for anything no `make` could have written
        (another length or alphabet, a non-canonical spelling of the same bytes)."""
        if not value.startswith(PREFIX) or len(value) != len(PREFIX) + _BODY_CHARS:
            return None
        text = value.removeprefix(PREFIX)
        try:
            body = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except ValueError:
            return None
        if base64.urlsafe_b64encode(body).rstrip(b"=").decode() != text:
            return None  # other characters, or unused bits set: one spelling per token
        return Presented(
            session_id=uuid.UUID(bytes=body[:16]),
            generation=int.from_bytes(body[16 : 16 + _GENERATION_BYTES], "big"),
            tag=body[16 + _GENERATION_BYTES :],
        )

    def genuine(self, presented: Presented, seed: bytes) -> bool:
        """Did `make` write this token for the session with `seed`? (Constant time.)"""
        expected = self._tag(presented.session_id, presented.generation, seed)
        return hmac.compare_digest(expected, presented.tag)
