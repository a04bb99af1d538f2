"""Sessions: one sign-in and its rotating refresh tokens (RFC 6749 §6, RFC 9700 §4.14).

A sign-in starts a session and gives it its first refresh token. Refreshing spends the
token presented and issues its successor in the same session; presenting a spent token
again is reuse, a sign that the token was stolen (or that the client raced itself), and
ends the whole session, its newest token included. A session is one row however often it
refreshes: its tokens are numbered and made by `security.refresh_tokens`, which recognizes
every earlier one from that row. A user has at most AUTH_MAX_SESSIONS_PER_USER sessions:
a sign-in beyond that ends the oldest.

Functions take `db` (the request's database transaction) as their first argument and
never commit.
"""

import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.config import Settings
from auth_service.errors import InvalidGrant, NotFound, NotInSession
from auth_service.kit.jobs import Job
from auth_service.kit.time import utcnow
from auth_service.models import LoginSession, User
from auth_service.security.refresh_tokens import SEED_BYTES, RefreshTokens
from auth_service.sessions import repository

USER_AGENT_MAX = 512


@dataclass(frozen=True, slots=True)
class Device:
    """Where a sign-in came from, to show the user their sessions."""

    ip: str | None
    user_agent: str | None


async def start(
    db: AsyncSession,
    *,
    user: User,
    client_id: str,
    scope: str,
    audience: str | None,
    device: Device,
    settings: Settings,
    refresh_tokens: RefreshTokens,
    now: datetime,
) -> tuple[LoginSession, str]:
    """A new session of `user` for `client_id` with `scope` and `audience` (None: the
    service's default), and its first refresh token.

    `user` is as the password check found it. InvalidGrant when the account has changed
    since: deleted, deactivated, or its token version raised (a password change). That
    last check holds a lock on the user until the transaction ends, so such a change
    either came first and refuses the sign-in here, or waits for its commit and ends the
    new session with the others: none survives it. The session records the version all
    the same, which refuses its refreshes should one slip by.
    """
    version = await repository.lock_for_sign_in(db, user.id)
    if version is None or version != user.token_version:
        raise InvalidGrant("The email or password is incorrect.")
    expires_at = now + timedelta(seconds=settings.session_max_age)
    login = LoginSession(
        user_id=user.id,
        client_id=client_id,
        scope=scope,
        audience=audience,
        token_version=version,
        refresh_seed=os.urandom(SEED_BYTES),
        created_at=now,
        last_used_at=now,
        expires_at=expires_at,
        idle_expires_at=_idle_end(now, expires_at, settings),
        ip=device.ip,
        user_agent=device.user_agent[:USER_AGENT_MAX] if device.user_agent else None,
    )
    await repository.save(db, login)
    await repository.keep_newest(
        db, user_id=user.id, new=login.id, keep=settings.max_sessions_per_user
    )
    return login, refresh_tokens.make(login.id, login.refresh_generation, login.refresh_seed)


def _idle_end(now: datetime, expires_at: datetime, settings: Settings) -> datetime:
    """When a refresh token issued now expires unused: the idle lifetime, never past the
    session's end."""
    return min(now + timedelta(seconds=settings.refresh_token_ttl), expires_at)


@dataclass(frozen=True, slots=True)
class Presented:
    """A refresh token of a live session of its client."""

    login: LoginSession  # as it is after the spend (locked until the transaction ends)
    generation: int  # the token's number in its session
    spent_now: bool  # this request spent it; False: it was spent before (reuse)

    @property
    def just_replaced(self) -> bool:
        """Is it the token the live one replaced (whose answer the session may keep)?"""
        return self.generation == self.login.refresh_generation - 1


async def spend(
    db: AsyncSession,
    *,
    token: str,
    client_id: str,
    refresh_tokens: RefreshTokens,
    now: datetime,
) -> Presented | None:
    """Spend `token` for `client_id`, at most once however many requests present it at once.

    None when no live session of this client ever had the token (unknown, forged, expired,
    of another client, of an ended session). Otherwise the token's session, and whether
    this call spent it (`spent_now`) or found it spent already: reuse, for the caller to
    answer.

    Every change to a session starts by locking its row, so concurrent refreshes, reuse
    and sign-outs of one session queue there (PostgreSQL; SQLite's write lock serializes
    them anyway). Then the spend is one conditional UPDATE of the token's number: of
    concurrent requests exactly one changes the row. On SQLite that UPDATE is the
    transaction's first write, so it takes the database's write lock, and the read after it
    sees every committed spend.
    """
    presented = refresh_tokens.read(token)
    if presented is None:
        return None
    login = await repository.locked(db, presented.session_id)
    if (
        login is None
        or not refresh_tokens.genuine(presented, login.refresh_seed)
        or login.client_id != client_id
        or login.expires_at <= now
        or presented.generation > login.refresh_generation
    ):
        return None
    if presented.generation < login.refresh_generation:
        return Presented(login, presented.generation, spent_now=False)
    if login.idle_expires_at <= now:
        return None  # the live token, expired unused
    spent_now = await repository.spend_generation(
        db, login.id, generation=presented.generation, now=now
    )
    login = await repository.locked(db, presented.session_id)
    if login is None:  # its session ended after it was read here (SQLite only)
        return None
    return Presented(login, presented.generation, spent_now=spent_now)


async def rotate(
    db: AsyncSession,
    presented: Presented,
    *,
    scope: str,
    settings: Settings,
    refresh_tokens: RefreshTokens,
    now: datetime,
) -> str:
    """The successor of a token `spend` has just spent, with `scope` (the live token's
    scope from now on), usable from now for the idle lifetime."""
    login = presented.login
    login.scope, login.last_used_at = scope, now
    login.idle_expires_at = _idle_end(now, login.expires_at, settings)
    await repository.save(db, login)
    return refresh_tokens.make(login.id, login.refresh_generation, login.refresh_seed)


def successor_association(presented: Presented) -> bytes:
    """What a kept answer is sealed to: the session and the number of the token it replaced."""
    return presented.login.id.bytes + presented.generation.to_bytes(4, "big")


async def keep_successor(db: AsyncSession, presented: Presented, sealed: bytes) -> None:
    """Keep the successor's answer, sealed, for the reuse interval."""
    presented.login.successor = sealed
    await repository.save(db, presented.login)


# --- ending sessions: every way a session ends is here ----------------------------------


async def end(db: AsyncSession, session_id: uuid.UUID) -> None:
    """End a session: its refresh tokens die with it."""
    await repository.delete_one(db, session_id)


async def end_every_of_user(db: AsyncSession, user_id: uuid.UUID) -> None:
    """End every session of a user and raise the user's token version (a password change,
    a deactivation, a sign-out everywhere, an admin's revocation): refresh tokens die, and
    every access token issued to the user so far fails verification from the next request
    on, whichever session it came from.

    The token version is raised first, in SQL (two concurrent calls both count), which also
    takes the user's row lock: a sign-in in flight either committed its session before, and
    it is deleted here, or finds the raised version and is refused (`start`)."""
    await repository.raise_token_version(db, user_id, now=utcnow())
    await repository.delete_every_of_user(db, user_id)


async def end_every_of_client(db: AsyncSession, client_id: str) -> None:
    """End every session signed in through a client: its users' refresh tokens die, and the
    access tokens issued in those sessions are refused from the next request on. The users'
    other sessions, and their token versions, stay as they are.

    The caller holds the client's row lock (`clients.service`), so a sign-in through the
    client either committed its session before, and it is deleted here, or is refused."""
    await repository.delete_every_of_client(db, client_id)


@dataclass(frozen=True, slots=True)
class Found:
    """A refresh token found by its value, with its session and user."""

    login: LoginSession
    user: User
    live: bool  # the session's live token; False: an earlier one, spent

    def active(self, now: datetime) -> bool:
        """Could it be refreshed now? The live token, unexpired, of a live session whose user
        is active and has not changed password (or been deactivated) since it began."""
        return (
            self.live
            and self.login.idle_expires_at > now
            and self.login.expires_at > now
            and self.user.is_active
            and self.user.token_version == self.login.token_version
        )


async def find(db: AsyncSession, token: str, *, refresh_tokens: RefreshTokens) -> Found | None:
    """The refresh token `token` is, spent or not, while its session exists; else None."""
    presented = refresh_tokens.read(token)
    if presented is None:
        return None
    row = await repository.with_user(db, presented.session_id)
    if row is None:
        return None
    login, user = row
    if not refresh_tokens.genuine(presented, login.refresh_seed):
        return None
    if presented.generation > login.refresh_generation:
        return None
    return Found(login, user, live=presented.generation == login.refresh_generation)


# --- a user's own view --------------------------------------------------------------------


async def live(
    db: AsyncSession, *, user_id: uuid.UUID, now: datetime, limit: int, offset: int
) -> tuple[list[LoginSession], int]:
    """A page of the user's live sessions, newest first, and how many there are."""
    return await repository.live(db, user_id=user_id, now=now, limit=limit, offset=offset)


async def end_own(
    db: AsyncSession, *, user_id: uuid.UUID, session_id: uuid.UUID, now: datetime
) -> None:
    """End the user's live session `session_id`; NotFound when the user has none by that id."""
    ended = await repository.delete_live(db, user_id=user_id, session_id=session_id, now=now)
    if not ended:
        # One answer for another user's session, an ended one and an id nobody has: a
        # session id never tells whether it exists.
        raise NotFound("No such session.")


async def end_current(
    db: AsyncSession, *, user_id: uuid.UUID, session_id: uuid.UUID | None
) -> None:
    """End the session an access token names (a sign-out): its refresh tokens die, and its
    access tokens are refused from the next request on. NotInSession for a token that names
    none."""
    if session_id is None:
        raise NotInSession
    # Whether or not it is still live: a session idle past its refresh token's expiry still
    # has access tokens in use until they expire.
    await repository.delete_of_user(db, user_id=user_id, session_id=session_id)


def jobs(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> list[Job]:
    """Ended sessions go, and refresh answers kept past the reuse interval are cleared."""

    async def purge() -> int:
        return await repository.purge(
            sessionmaker, now=utcnow(), reuse_interval=settings.refresh_reuse_interval
        )

    return [Job("purged ended sessions", settings.purge_interval_seconds, purge)]
