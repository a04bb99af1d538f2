"""Signing keys: created on first start, stored encrypted, loaded once per process."""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from cryptography.exceptions import InvalidTag
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.models import SigningKey
from auth_service.security import crypto
from auth_service.security.jwt import SigningKeyPair, load_key_pair


class SigningKeyUnreadable(RuntimeError):
    """The stored keys were encrypted under another AUTH_SECRET_KEY."""


@dataclass(frozen=True, slots=True)
class JSONDocument:
    """A JSON document served as is: its bytes and their entity tag, computed once."""

    body: bytes
    etag: str

    @classmethod
    def of(cls, content: Any) -> "JSONDocument":
        body = json.dumps(content, separators=(",", ":")).encode()
        return cls(body=body, etag=f'"{hashlib.sha256(body).hexdigest()[:32]}"')


@dataclass(frozen=True, slots=True)
class KeySet:
    """Every key this process verifies with, and the one it signs with."""

    signing: SigningKeyPair
    by_kid: Mapping[str, SigningKeyPair]
    # RFC 7517 §5 JWK Set, public parameters only: derived from the keys, so it changes
    # exactly when they do.
    jwks: JSONDocument = field(init=False)

    def __post_init__(self) -> None:
        content = {"keys": [dict(key.public_jwk) for key in self.by_kid.values()]}
        object.__setattr__(self, "jwks", JSONDocument.of(content))


async def ensure_signing_key(*, session: AsyncSession, alg: str, secret_key: str) -> None:
    """Create a signing key for `alg` when the database has none."""
    existing = await session.exec(select(SigningKey.kid).where(SigningKey.alg == alg).limit(1))
    if existing.first() is not None:
        return
    private = await anyio.to_thread.run_sync(crypto.generate_private_key, alg)
    kid = crypto.new_kid(private)
    session.add(
        SigningKey(
            kid=kid,
            alg=alg,
            private_key_encrypted=crypto.encrypt_private_key(
                private, secret_key=secret_key, kid=kid
            ),
        )
    )
    await session.flush()


async def load_keyset(*, session: AsyncSession, alg: str, secret_key: str) -> KeySet:
    """Decrypt and parse every stored key once; sign with the oldest key of `alg`.

    Start-up runs this under a cross-process lock right after `ensure_signing_key`, so every
    worker and replica loads the same keys.
    """
    rows = (
        await session.exec(
            select(SigningKey).order_by(col(SigningKey.created_at), col(SigningKey.kid))
        )
    ).all()
    pairs = {}
    for row in rows:
        try:
            pem = crypto.decrypt_private_key(
                row.private_key_encrypted, secret_key=secret_key, kid=row.kid
            )
        except InvalidTag:
            raise SigningKeyUnreadable(
                f"cannot decrypt signing key {row.kid}: AUTH_SECRET_KEY is not the key "
                "it was stored with"
            ) from None
        pairs[row.kid] = load_key_pair(kid=row.kid, alg=row.alg, private_pem=pem)
    signing = next((pairs[row.kid] for row in rows if row.alg == alg), None)
    if signing is None:
        raise LookupError(f"no {alg} signing key in the database")
    return KeySet(signing=signing, by_kid=pairs)
