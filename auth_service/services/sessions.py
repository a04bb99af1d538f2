"""Sessions: one sign-in and its rotating refresh tokens (RFC 6749 §6, RFC 9700 §4.14).

A sign-in starts a session and gives it its first refresh token. Refreshing spends the
token presented and issues its successor in the same session; presenting a spent token
again is reuse, a sign that the token was stolen (or that the client raced itself), and
ends the whole session, its newest token included. Tokens are opaque, 256 random bits behind
a prefix a secret scanner can spot, and stored only as SHA-256 digests.

Functions take `session` (the request's database transaction) as their first argument and
never commit, except where they say so.
"""

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.config import Settings
from auth_service.errors import NotFound, NotInSession
from auth_service.models import LoginSession, RefreshToken, User
from auth_service.services.repositories import sessions as repository

TOKEN_BYTES = 32  # 256 bits (RFC 9700 §4.14.2; RFC 6749 §10.10)
TOKEN_PREFIX = "ast_rt_"  # noqa: S105 (a prefix, not a secret)
USER_AGENT_MAX = 512


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def digest(token: str) -> bytes:
    """What is stored of a refresh token. SHA-256 is enough: the value has 256 random bits,
    so there is nothing to guess, and the lookup by digest is an index seek."""
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class Device:
    """Where a sign-in came from, to show the user their sessions."""

    ip: str | None
    user_agent: str | None


async def start(
    session: AsyncSession,
    *,
    user: User,
    client_id: str,
    scope: str,
    audience: str | None,
    device: Device,
    settings: Settings,
    now: datetime,
) -> tuple[LoginSession, str]:
    """A new session of `user` for `client_id` with `scope` and `audience` (None: the
    service's default), and its first refresh token."""
    login = LoginSession(
        user_id=user.id,
        client_id=client_id,
        scope=scope,
        audience=audience,
        created_at=now,
        last_used_at=now,
        expires_at=now + timedelta(seconds=settings.session_max_age),
        idle_expires_at=now,  # set by _issue
        ip=device.ip,
        user_agent=device.user_agent[:USER_AGENT_MAX] if device.user_agent else None,
    )
    session.add(login)
    await session.flush()  # the row the token refers to
    return login, await _issue(session, login, scope=scope, settings=settings, now=now)


async def _issue(
    session: AsyncSession, login: LoginSession, *, scope: str, settings: Settings, now: datetime
) -> str:
    """A new refresh token in `login`: usable for the idle lifetime, never past the session."""
    token = new_token()
    expires_at = min(now + timedelta(seconds=settings.refresh_token_ttl), login.expires_at)
    session.add(
        RefreshToken(
            digest=digest(token),
            session_id=login.id,
            scope=scope,
            created_at=now,
            expires_at=expires_at,
        )
    )
    login.last_used_at, login.idle_expires_at = now, expires_at
    session.add(login)
    await session.flush()
    return token


@dataclass(frozen=True, slots=True)
class Presented:
    """A refresh token found in a live session of its client."""

    token: RefreshToken
    login: LoginSession
    spent_now: bool  # this request spent it; False: it was spent before (reuse)


async def spend(
    session: AsyncSession, *, token: str, client_id: str, now: datetime
) -> Presented | None:
    """Spend `token` for `client_id`, at most once however many requests present it at once.

    None when no live session of this client has the token (unknown, expired, of another
    client, of an ended session). Otherwise the token and its session, and whether this
    call spent it (`spent_now`) or found it spent already: reuse, for the caller to answer.

    Every change to a session and its tokens starts by locking the session's row, so
    concurrent refreshes, reuse and sign-outs of one session queue there instead of
    deadlocking over its token rows (PostgreSQL; SQLite's write lock serializes them
    anyway). Then the spend is one conditional UPDATE: of concurrent requests exactly one
    changes the row. On SQLite that UPDATE is the transaction's first write, so it takes
    the database's write lock, and the reads after it see every committed spend.
    """
    key = digest(token)
    session_id = (
        await session.exec(select(RefreshToken.session_id).where(RefreshToken.digest == key))
    ).first()
    if session_id is None:
        return None
    login = await _locked(session, session_id)
    if login is None or login.client_id != client_id or login.expires_at <= now:
        return None
    spent = await session.exec(
        update(RefreshToken)
        .where(
            col(RefreshToken.digest) == key,
            col(RefreshToken.spent_at).is_(None),
            col(RefreshToken.expires_at) > now,
        )
        .values(spent_at=now)
    )
    refresh = (
        await session.exec(
            select(RefreshToken)
            .where(RefreshToken.digest == key)
            .execution_options(populate_existing=True)
        )
    ).first()
    if refresh is None:  # its session ended after it was locked here (SQLite only)
        return None
    if spent.rowcount == 1:
        return Presented(refresh, login, spent_now=True)
    if refresh.spent_at is None:  # expired unspent
        return None
    return Presented(refresh, login, spent_now=False)


async def _locked(session: AsyncSession, session_id: uuid.UUID) -> LoginSession | None:
    """The session's row, locked until the transaction ends (PostgreSQL: FOR UPDATE)."""
    found = await session.exec(
        select(LoginSession)
        .where(LoginSession.id == session_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return found.first()


async def rotate(
    session: AsyncSession, presented: Presented, *, scope: str, settings: Settings, now: datetime
) -> str:
    """The successor of a token `spend` has just spent, with `scope`."""
    return await _issue(session, presented.login, scope=scope, settings=settings, now=now)


async def keep_successor(session: AsyncSession, spent: RefreshToken, sealed: bytes) -> None:
    """Keep the successor's answer, sealed, with the token it replaced (the reuse interval)."""
    spent.successor = sealed
    session.add(spent)
    await session.flush()


async def end(session: AsyncSession, session_id: uuid.UUID) -> None:
    """End a session: its refresh tokens go with it."""
    await session.exec(delete(LoginSession).where(col(LoginSession.id) == session_id))


async def end_all(session: AsyncSession, user_id: uuid.UUID) -> None:
    """End every session of a user (a password change, a deactivation, a sign-out
    everywhere)."""
    await session.exec(delete(LoginSession).where(col(LoginSession.user_id) == user_id))


@dataclass(frozen=True, slots=True)
class Found:
    """A refresh token found by its value, with its session and user."""

    token: RefreshToken
    login: LoginSession
    user: User

    def active(self, now: datetime) -> bool:
        """Could it be refreshed now? Unspent, unexpired, its session live, its user active."""
        return (
            self.token.spent_at is None
            and self.token.expires_at > now
            and self.login.expires_at > now
            and self.user.is_active
        )


async def find(session: AsyncSession, token: str) -> Found | None:
    """The refresh token `token` is, spent or not, while its session exists; else None."""
    found = await session.exec(
        select(RefreshToken, LoginSession, User)
        .join(LoginSession, col(LoginSession.id) == RefreshToken.session_id)
        .join(User, col(User.id) == LoginSession.user_id)
        .where(RefreshToken.digest == digest(token))
    )
    row = found.first()
    return Found(*row) if row is not None else None


# --- a user's own view --------------------------------------------------------------------


async def live(
    session: AsyncSession, *, user_id: uuid.UUID, now: datetime, limit: int, offset: int
) -> tuple[list[LoginSession], int]:
    """A page of the user's live sessions, newest first, and how many there are."""
    return await repository.live(session, user_id=user_id, now=now, limit=limit, offset=offset)


async def end_own(
    session: AsyncSession, *, user_id: uuid.UUID, session_id: uuid.UUID, now: datetime
) -> None:
    """End the user's live session `session_id`; NotFound when the user has none by that id."""
    ended = await repository.delete_live(session, user_id=user_id, session_id=session_id, now=now)
    if not ended:
        # One answer for another user's session, an ended one and an id nobody has: a
        # session id never tells whether it exists.
        raise NotFound("No such session.")


async def end_current(
    session: AsyncSession, *, user_id: uuid.UUID, session_id: uuid.UUID | None
) -> None:
    """End the session an access token names (a sign-out): its refresh tokens die, and its
    access tokens are refused from the next request on. NotInSession for a token that names
    none."""
    if session_id is None:
        raise NotInSession
    # Whether or not it is still live: a session idle past its refresh token's expiry still
    # has access tokens in use until they expire.
    await session.exec(
        delete(LoginSession).where(
            col(LoginSession.id) == session_id, col(LoginSession.user_id) == user_id
        )
    )
