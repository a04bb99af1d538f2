"""Signing keys: created on first start, rotated, revoked; stored encrypted, parsed once.

RFC 7517 §5: the JWK Set publishes every key that may still verify a token; RFC 7515 §4.1.4:
tokens name theirs by `kid`. A rotation publishes a new key, the next one, at once, and it
signs only from `signs_from`, once every verifier's cached copy of the set holds it (OpenID
Connect Core §10.1.1: "the JWK Set can contain the next key before it is used"). The keys it
supersedes go on signing until then, and stay in the set until every access token they
signed has expired (the switch, plus the longest poll interval of a worker that has not seen
it yet, plus the token lifetime, plus the verification leeway), then retire. An emergency
revocation takes a key out at once. A key's state follows from its timestamps (`state_of`);
rows are kept for the record.

`KeyRing` holds one process's key set and follows the table beside the requests: a cheap
fingerprint of it every few seconds, and a reload, parsing only keys it has not seen yet,
when the fingerprint changes or a key's time to sign or to retire falls due.
"""

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import anyio
import anyio.to_thread
from cryptography.exceptions import InvalidTag
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.errors import Conflict, NotFound
from auth_service.keys import repository
from auth_service.keys.settings import KEY_REFRESH_MAX_SECONDS
from auth_service.kit.db import is_unavailable, lock_for_change, transaction
from auth_service.kit.documents import JSONDocument
from auth_service.kit.time import utcnow
from auth_service.models import SigningKey
from auth_service.security import crypto
from auth_service.security.jwt import LEEWAY_SECONDS, SigningKeyPair, load_key_pair

logger = logging.getLogger(__name__)

KeyState = Literal["next", "signing", "verifying", "retired", "revoked"]

# The longest a JWK Set may be cached: a revocation reaches verifiers within it.
JWKS_MAX_AGE_CEILING = 300
# auth-service-verifier's `min_cache_seconds` default: it keeps a JWK Set at least this long.
VERIFIER_MIN_CACHE_SECONDS = 60


class SigningKeyUnreadable(RuntimeError):
    """The stored keys were encrypted under another AUTH_SECRET_KEY."""


class RotationPending(Conflict):
    """A rotation while the next key has not begun to sign: one next key at a time, so
    rotations cannot pile up keys that verifiers have not fetched yet."""

    def __init__(self, pending: SigningKey) -> None:
        super().__init__(
            f"Key {pending.kid} is already the next signing key: it signs from "
            f"{pending.signs_from.isoformat(timespec='seconds')}. Rotate again after that, "
            "or revoke it to cancel this rotation."
        )


@dataclass(frozen=True, slots=True)
class KeySet:
    """Every key this process verifies with, and the one it signs with."""

    signing: SigningKeyPair
    by_kid: Mapping[str, SigningKeyPair]
    # The earliest retirement, or next key's start, among these keys: the set changes then,
    # with no write to see.
    refresh_at: datetime | None = None
    # RFC 7517 §5 JWK Set, public parameters only: derived from the keys, so it changes
    # exactly when they do.
    jwks: JSONDocument = field(init=False)

    def __post_init__(self) -> None:
        content = {"keys": [dict(key.public_jwk) for key in self.by_kid.values()]}
        object.__setattr__(self, "jwks", JSONDocument.of(content))


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as an admin sees it: no private material."""

    kid: str
    alg: str
    state: KeyState
    created_at: datetime
    signs_from: datetime
    retires_at: datetime | None
    revoked_at: datetime | None


def jwks_max_age(access_token_ttl: int) -> int:
    """Seconds a JWK Set may be cached (its `Cache-Control: max-age`): shorter than a
    rotation's overlap window (`overlap`: the token lifetime and more), and than a revocation
    should take to reach verifiers that cache it."""
    return min(JWKS_MAX_AGE_CEILING, access_token_ttl // 2)


def publication_lead(access_token_ttl: int) -> timedelta:
    """How long a rotation publishes the next key before it signs.

    A worker puts it in the JWK Set it serves at its next poll of the table, up to the
    longest AUTH_KEY_REFRESH_SECONDS later, and a verifier that fetched the set just before
    keeps that copy for its max-age. After both, every verifier that honours the max-age
    knows the key before it meets a token it signed, so none needs the refetch for an
    unknown `kid` that it allows itself only so often (and that tokens with made-up kids may
    have spent). auth-service-verifier keeps a set at least VERIFIER_MIN_CACHE_SECONDS,
    whatever a shorter max-age (a short token lifetime) says: the lead counts that too.
    """
    cached = max(jwks_max_age(access_token_ttl), VERIFIER_MIN_CACHE_SECONDS)
    return timedelta(seconds=cached + KEY_REFRESH_MAX_SECONDS)


def overlap(access_token_ttl: int) -> timedelta:
    """How long a superseded key keeps verifying after it stops signing: until the last
    token it may sign has expired, with the leeway the guards grant on `exp`.

    A worker learns that the next key signs at its next poll (or reload at that time), and
    signs with the superseded key until then: up to AUTH_KEY_REFRESH_SECONDS later. The
    window counts the largest value that setting may have, not this process's: the process
    that rotates (an admin's request, the command line on another machine) may poll faster
    than the slowest worker of the service.
    """
    return timedelta(seconds=access_token_ttl + LEEWAY_SECONDS + KEY_REFRESH_MAX_SECONDS)


def is_usable(key: SigningKey, now: datetime) -> bool:
    """Neither revoked nor retired: in the JWK Set, and able to verify (and maybe sign)."""
    return key.revoked_at is None and (key.retires_at is None or key.retires_at > now)


def _signing_key(rows: Sequence[SigningKey], *, alg: str, now: datetime) -> SigningKey | None:
    """The key that signs: of the usable keys of `alg` whose time to sign has come, one not
    superseded by a rotation first (whatever the clocks of the replicas that created them
    say), else the one that began to sign last (a next key has not begun yet)."""
    usable = [
        row for row in rows if row.alg == alg and is_usable(row, now) and row.signs_from <= now
    ]
    return max(
        usable,
        key=lambda row: (row.retires_at is None, row.signs_from, row.created_at, row.kid),
        default=None,
    )


def _next_key(rows: Sequence[SigningKey], *, alg: str, now: datetime) -> SigningKey | None:
    """The usable key of `alg` published but not signing yet, if a rotation made one."""
    waiting = [
        row for row in rows if row.alg == alg and is_usable(row, now) and row.signs_from > now
    ]
    return min(waiting, key=lambda row: (row.signs_from, row.kid), default=None)


def state_of(key: SigningKey, *, signing_kid: str | None, now: datetime) -> KeyState:
    if key.revoked_at is not None:
        return "revoked"
    if key.retires_at is not None and key.retires_at <= now:
        return "retired"
    if key.signs_from > now:
        return "next"
    return "signing" if key.kid == signing_kid else "verifying"


async def _new_key(alg: str, secret_key: str) -> SigningKey:
    """A new key, generated away from the event loop (RSA takes tens of milliseconds),
    signing from its creation."""
    private = await anyio.to_thread.run_sync(crypto.generate_private_key, alg)
    kid = crypto.new_kid(private)
    encrypted = crypto.encrypt_private_key(private, secret_key=secret_key, kid=kid)
    now = utcnow()
    return SigningKey(
        kid=kid, alg=alg, private_key_encrypted=encrypted, created_at=now, signs_from=now
    )


async def ensure_signing_key(*, db: AsyncSession, alg: str, secret_key: str) -> None:
    """Create a signing key for `alg` when the database has no usable one; retire at once
    the usable keys of any other algorithm (AUTH_SIGNING_ALG has changed).

    RFC 8725 §3.1: the service accepts one algorithm, so it refuses the tokens of those keys
    from this start on; they leave the JWK Set now, with the time they stopped verifying,
    rather than being published for tokens nobody accepts.
    """
    now = utcnow()
    rows = await repository.usable(db, now)
    others = [row.kid for row in rows if row.alg != alg]
    if others:
        await repository.retire(db, others, at=now)
        logger.warning(
            "retired %d signing key(s) of an algorithm other than AUTH_SIGNING_ALG=%s: "
            "their tokens are refused from now on",
            len(others),
            alg,
        )
    if _signing_key(rows, alg=alg, now=now) is None:
        await repository.save(db, await _new_key(alg, secret_key))


async def rotate(*, db: AsyncSession, alg: str, secret_key: str, access_token_ttl: int) -> KeyInfo:
    """Publish a new key of `alg`, the next one, which signs from `publication_lead` later;
    the key signing now goes on until then. Every other key still without a retirement time
    retires when the tokens it may have signed until then have expired.

    Refused (`RotationPending`) while a next key has not begun to sign.
    """
    key = await _rotate(
        db=db,
        alg=alg,
        secret_key=secret_key,
        access_token_ttl=access_token_ttl,
        lead=publication_lead(access_token_ttl),
    )
    return await _info(db, key, alg=alg)


async def _rotate(
    *, db: AsyncSession, alg: str, secret_key: str, access_token_ttl: int, lead: timedelta
) -> SigningKey:
    key = await _new_key(alg, secret_key)
    # One rotation at a time across processes and replicas: two at once would leave two
    # keys without a retirement time. A request waits no longer than the database timeout.
    await lock_for_change(db)
    now = utcnow()
    pending = _next_key(await repository.usable(db, now), alg=alg, now=now)
    if pending is not None:
        raise RotationPending(pending)
    key.created_at = now
    key.signs_from = now + lead
    await repository.retire_unscheduled(db, at=key.signs_from + overlap(access_token_ttl))
    await repository.save(db, key)
    logger.info("signing key rotated", extra={"kid": key.kid})
    return key


async def revoke(
    *, db: AsyncSession, kid: str, alg: str, secret_key: str, access_token_ttl: int
) -> KeyInfo:
    """Revoke `kid` at once (a compromised key): its tokens fail and it leaves the JWK Set.

    The signing key is replaced first, so the service can always sign: by the next key, at
    once, or by a new key when there is none; either signs before verifiers have fetched it,
    which a revocation cannot wait for. Revoking the next key cancels its rotation: the key
    signing now goes on, with no retirement time. Revoking a revoked key changes nothing.
    """
    await lock_for_change(db)
    key = await repository.get(db, kid)
    if key is None:
        raise NotFound("No signing key has this kid.")
    if key.revoked_at is None:
        now = utcnow()
        rows = await repository.usable(db, now)
        signing, pending = _signing_key(rows, alg=alg, now=now), _next_key(rows, alg=alg, now=now)
        changed: list[SigningKey] = []
        if signing is not None and key.kid == signing.kid:
            if pending is None:
                await _rotate(
                    db=db,
                    alg=alg,
                    secret_key=secret_key,
                    access_token_ttl=access_token_ttl,
                    lead=timedelta(0),
                )
                await repository.reload(db, key)
            else:
                pending.signs_from = now
                changed.append(pending)
        elif pending is not None and key.kid == pending.kid and signing is not None:
            signing.retires_at = None
            changed.append(signing)
        key.revoked_at = utcnow()
        await repository.save(db, *changed, key)
        logger.warning("signing key revoked", extra={"kid": key.kid})
    return await _info(db, key, alg=alg)


def _signing_kid(rows: Sequence[SigningKey], *, alg: str, now: datetime) -> str | None:
    signing = _signing_key(rows, alg=alg, now=now)
    return None if signing is None else signing.kid


async def _info(db: AsyncSession, key: SigningKey, *, alg: str) -> KeyInfo:
    now = utcnow()
    signing_kid = _signing_kid(await repository.usable(db, now), alg=alg, now=now)
    return _key_info(key, signing_kid=signing_kid, now=now)


def _key_info(key: SigningKey, *, signing_kid: str | None, now: datetime) -> KeyInfo:
    return KeyInfo(
        kid=key.kid,
        alg=key.alg,
        state=state_of(key, signing_kid=signing_kid, now=now),
        created_at=key.created_at,
        signs_from=key.signs_from,
        retires_at=key.retires_at,
        revoked_at=key.revoked_at,
    )


async def list_keys(*, db: AsyncSession, alg: str) -> list[KeyInfo]:
    """Every key ever stored, newest first, with its state for a service signing with `alg`."""
    now = utcnow()
    rows = await repository.every_newest_first(db)
    signing_kid = _signing_kid(rows, alg=alg, now=now)
    return [_key_info(row, signing_kid=signing_kid, now=now) for row in rows]


def _parse(row: SigningKey, secret_key: str) -> SigningKeyPair:
    try:
        pem = crypto.decrypt_private_key(
            row.private_key_encrypted, secret_key=secret_key, kid=row.kid
        )
    except InvalidTag:
        raise SigningKeyUnreadable(
            f"cannot decrypt signing key {row.kid}: AUTH_SECRET_KEY is not the key "
            "it was stored with"
        ) from None
    return load_key_pair(kid=row.kid, alg=row.alg, private_pem=pem)


async def load_keyset(
    *,
    db: AsyncSession,
    alg: str,
    secret_key: str,
    known: Mapping[str, SigningKeyPair] | None = None,
) -> KeySet:
    """The usable keys of `alg`, next ones included, signing with the newest whose time has
    come. Keys in `known` are reused as they are; the others are decrypted and parsed once,
    in a worker thread.

    Keys of another algorithm verify nothing here (one algorithm), so they are not in the
    set or its JWK Set, even when a process configured with that algorithm made them.
    """
    now = utcnow()
    rows = [row for row in await repository.usable(db, now) if row.alg == alg]
    signing = _signing_key(rows, alg=alg, now=now)
    if signing is None:
        raise LookupError(f"no usable {alg} signing key in the database")
    known = known or {}
    pairs = {}
    for row in rows:
        pair = known.get(row.kid)
        if pair is None:
            pair = await anyio.to_thread.run_sync(_parse, row, secret_key)
        pairs[row.kid] = pair
    changes = [row.retires_at for row in rows if row.retires_at is not None]
    changes += [row.signs_from for row in rows if row.signs_from > now]
    return KeySet(signing=pairs[signing.kid], by_kid=pairs, refresh_at=min(changes, default=None))


class KeyRing:
    """This process's key set, following the `signing_keys` table.

    Every worker and replica has its own and polls the table: a rotation or revocation made
    through any of them (or the command line) reaches all within a poll interval. The poll
    runs beside the requests, which only read `keys`.
    """

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        alg: str,
        secret_key: str,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._alg = alg
        self._secret_key = secret_key
        self._keys: KeySet | None = None
        self._fingerprint: tuple[Any, ...] | None = None
        # One load at a time: a slow poll must not put back a set older than the one a
        # revocation has just loaded.
        self._lock = anyio.Lock()
        self._failing = False

    async def rotate(self, *, db: AsyncSession, access_token_ttl: int) -> KeyInfo:
        """`rotate` with this ring's algorithm and secret key (which seals the new key)."""
        return await rotate(
            db=db,
            alg=self._alg,
            secret_key=self._secret_key,
            access_token_ttl=access_token_ttl,
        )

    async def revoke(self, *, db: AsyncSession, kid: str, access_token_ttl: int) -> KeyInfo:
        """`revoke` with this ring's algorithm and secret key."""
        return await revoke(
            db=db,
            kid=kid,
            alg=self._alg,
            secret_key=self._secret_key,
            access_token_ttl=access_token_ttl,
        )

    @property
    def alg(self) -> str:
        return self._alg

    @property
    def keys(self) -> KeySet:
        """The key set, loaded when the app starts."""
        if self._keys is None:
            raise RuntimeError("the key set is loaded by the app's lifespan, which has not run")
        return self._keys

    async def load(self) -> KeySet:
        """Read the table now and take its usable keys."""
        async with self._lock:
            return await self._load()

    async def _load(self) -> KeySet:
        known = self._keys.by_kid if self._keys is not None else None
        async with transaction(self._sessionmaker) as db:
            marker = await repository.fingerprint(db)
            keys = await load_keyset(db=db, alg=self._alg, secret_key=self._secret_key, known=known)
        before = self._keys
        if (
            before is not None
            and keys.by_kid.keys() == before.by_kid.keys()
            and keys.signing is before.signing
            and keys.refresh_at == before.refresh_at
        ):
            # Nothing this process uses changed: keep the set, and with it the verified-token
            # cache, which empties itself for another set.
            keys = before
        self._keys, self._fingerprint = keys, marker
        return keys

    async def refresh(self) -> bool:
        """Reload when the table changed or a retirement or a next key's start is due; True
        when the set changed."""
        async with self._lock:
            before = self._keys
            due = before is None or (
                before.refresh_at is not None and before.refresh_at <= utcnow()
            )
            if not due:
                async with transaction(self._sessionmaker) as db:
                    due = await repository.fingerprint(db) != self._fingerprint
            if due:
                await self._load()
            return self._keys is not before

    async def follow(self, interval: float) -> None:
        """Refresh every `interval` seconds until cancelled. A failure (the database away, a
        key that cannot be read) keeps the last good set and is logged once, not per poll."""
        while True:
            await anyio.sleep(interval)
            try:
                # Cancelled (at shutdown) only while it sleeps: a read cut off halfway would
                # leave its connection neither returned nor closed. The database timeouts
                # bound the read.
                with anyio.CancelScope(shield=True):
                    changed = await self.refresh()
            except Exception as exc:  # the loop must outlive any one failure
                if not self._failing:
                    self._failing = True
                    self._log_failure(exc)
                continue
            if self._failing:
                self._failing = False
                logger.info("signing keys refreshed again")
            if changed:
                logger.info("signing keys reloaded", extra={"kid": self.keys.signing.kid})

    @staticmethod
    def _log_failure(exc: Exception) -> None:
        message = "signing keys not refreshed, keeping the last good set: %s"
        if is_unavailable(exc):
            logger.warning(message, "the database is unavailable")
        elif isinstance(exc, SigningKeyUnreadable | LookupError):  # our own words, no secret
            logger.warning(message, exc)
        else:  # a bug: its traceback (statement parameters are never in it, see db.py)
            logger.warning(message, type(exc).__name__, exc_info=exc)
