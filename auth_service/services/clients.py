"""OAuth clients (RFC 6749 §2) and their authentication (§2.3.1).

A public client (a login form, Swagger UI) holds no secret; a confidential one (a backend
service) authenticates with `client_secret_basic` or `client_secret_post`. A secret is 256
random bits behind a prefix a secret scanner can spot, shown once, stored only as its
SHA-256 digest and compared in constant time; a rotation may leave the secret it replaces
working for a grace period, so the services holding it move over without downtime. The
public clients AUTH_CLIENT_IDS names are rows like any other, created at start-up; a request
that names no client is taken to come from the first of them.

Functions take `session` as a keyword and never commit.
"""

import hashlib
import hmac
import logging
import secrets
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import delete, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.config import Settings
from auth_service.errors import Conflict, InvalidClient, NotFound, UnprocessableClient
from auth_service.models import LoginSession, OAuthClient, utcnow
from auth_service.scopes import USER_SCOPES
from auth_service.services.user_state import ClientState, UserStates

logger = logging.getLogger(__name__)

SECRET_PREFIX = "ast_cs_"  # noqa: S105 (a prefix, not a secret)
CLIENT_ID_PREFIX = "svc_"
SECRET_BYTES = 32
# RFC 6749 §4.4: only a client that can authenticate may act for itself.
CONFIDENTIAL_ONLY_GRANTS = frozenset({"client_credentials"})
# What a configured login client may do: sign users in and keep them signed in.
LOGIN_GRANTS = ("password", "refresh_token")


# An authenticated client and what it may ask for, as read with the driver (no pooled
# connection is held while a sign-in waits for its turn at bcrypt).
Client = ClientState


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def secret_digest(secret: str) -> bytes:
    """What is stored of a client secret: 256 random bits need no slow hash."""
    return hashlib.sha256(secret.encode()).digest()


async def authenticate(
    *, states: UserStates, client_id: str | None, secret: str | None, settings: Settings
) -> Client:
    """The client these credentials identify; InvalidClient when they identify none."""
    client_id = client_id or settings.default_client_id
    return verify((await states.read(caller_id=client_id)).caller, secret)


def verify(client: ClientState | None, secret: str | None) -> Client:
    """`client` (as read, None when there is none), if `secret` is what it must present: its
    secret for a confidential client, nothing for a public one; InvalidClient otherwise."""
    # The digest is computed whether or not the client exists: one cost for every failure.
    presented = secret_digest(secret) if secret is not None else None
    if client is None or not client.is_active:
        raise InvalidClient("Client authentication failed.")
    if not client.is_confidential:
        if presented is not None:
            raise InvalidClient("Unknown client credentials: public clients have no secret.")
        return client
    if presented is None:
        raise InvalidClient("This client must authenticate with its secret.")
    if not _matches(client, presented):
        raise InvalidClient("Client authentication failed.")
    return client


def _matches(client: ClientState, presented: bytes) -> bool:
    """Whether `presented` is the digest of the client's secret, or of the one its last
    rotation replaced while that is still accepted. Both comparisons always run, in constant
    time: how long a failure takes tells nothing."""
    current = hmac.compare_digest(client.secret_digest or b"", presented)
    previous = hmac.compare_digest(client.previous_secret_digest or b"", presented)
    expires = client.previous_secret_expires_at
    return current or (previous and expires is not None and utcnow() < expires)


def authenticated_caller(found: ClientState | None, secret: str, *, scope: str) -> ClientState:
    """The confidential client `found` (read with the request's other state), if `secret`
    is its secret and its list holds `scope`; InvalidClient otherwise."""
    client = verify(found, secret)  # with a secret presented, only a confidential one passes
    if scope not in client.scopes:
        raise InvalidClient(f"This client lacks the scope {scope}.")
    return client


def _check(*, confidential: bool, grant_types: Sequence[str]) -> None:
    refused = CONFIDENTIAL_ONLY_GRANTS.intersection(grant_types)
    if refused and not confidential:
        raise UnprocessableClient(
            f"grant_types: a public client cannot use {', '.join(sorted(refused))}."
        )


async def create_client(
    *,
    session: AsyncSession,
    name: str,
    confidential: bool,
    scopes: Sequence[str],
    grant_types: Sequence[str],
    audiences: Sequence[str] = (),
    redirect_uris: Sequence[str] = (),
    client_id: str | None = None,
) -> tuple[OAuthClient, str | None]:
    """A new client, and its secret (None for a public client): the only time it is shown."""
    _check(confidential=confidential, grant_types=grant_types)
    client_id = client_id or CLIENT_ID_PREFIX + secrets.token_hex(12)
    if await session.get(OAuthClient, client_id) is not None:
        raise Conflict(f"A client {client_id} exists already.")
    secret = new_secret() if confidential else None
    now = utcnow()
    client = OAuthClient(
        client_id=client_id,
        name=name,
        is_confidential=confidential,
        secret_digest=secret_digest(secret) if secret else None,
        scopes=sorted(set(scopes)),
        grant_types=sorted(set(grant_types)),
        audiences=sorted(set(audiences)),
        redirect_uris=list(dict.fromkeys(redirect_uris)),
        created_at=now,
        updated_at=now,
        secret_rotated_at=now if secret else None,
    )
    session.add(client)
    await session.flush()
    return client, secret


async def list_clients(
    *, session: AsyncSession, limit: int, offset: int
) -> tuple[list[OAuthClient], int]:
    """A page of clients, oldest first, and how many there are."""
    page = await session.exec(
        select(OAuthClient)
        .order_by(col(OAuthClient.created_at), col(OAuthClient.client_id))
        .limit(limit)
        .offset(offset)
    )
    total = await session.exec(select(func.count()).select_from(OAuthClient))
    return list(page.all()), total.one()


async def get_client(*, session: AsyncSession, client_id: str) -> OAuthClient:
    client = await session.get(OAuthClient, client_id)
    if client is None:
        raise NotFound("No such client.")
    return client


async def hold_active(session: AsyncSession, client_id: str) -> None:
    """Keep the client from being deactivated or deleted until the transaction ends, or
    InvalidClient if that happened already. For a sign-in, after it wrote its session: a
    deactivation or deletion then either waits for the sign-in and ends that session too, or
    has committed first and the sign-in is refused (PostgreSQL: FOR SHARE against the FOR
    UPDATE of `_end_sessions`; SQLite: the write lock the sign-in's insert holds).
    """
    found = await session.exec(
        select(col(OAuthClient.is_active))
        .where(col(OAuthClient.client_id) == client_id)
        .with_for_update(read=True)
    )
    if not found.first():
        raise InvalidClient("Client authentication failed.")


async def _end_sessions(session: AsyncSession, client_id: str) -> None:
    """End every session signed in through the client: its users' tokens die with them.
    The client's row is locked first, so a sign-in holding it (`hold_active`) finishes
    before the sessions are read, and one that has not is refused."""
    await session.exec(
        select(col(OAuthClient.client_id))
        .where(col(OAuthClient.client_id) == client_id)
        .with_for_update()
    )
    await session.exec(delete(LoginSession).where(col(LoginSession.client_id) == client_id))


async def update_client(
    *,
    session: AsyncSession,
    client: OAuthClient,
    name: str | None = None,
    scopes: Sequence[str] | None = None,
    grant_types: Sequence[str] | None = None,
    audiences: Sequence[str] | None = None,
    redirect_uris: Sequence[str] | None = None,
    is_active: bool | None = None,
) -> OAuthClient:
    """Change what is given (None: unchanged). Deactivation ends the client's sessions and
    refuses its tokens at once and for good; scopes taken away are refused at once."""
    if grant_types is not None:
        _check(confidential=client.is_confidential, grant_types=grant_types)
        client.grant_types = sorted(set(grant_types))
    if name is not None:
        client.name = name
    if scopes is not None:
        client.scopes = sorted(set(scopes))
    if audiences is not None:
        client.audiences = sorted(set(audiences))
    if redirect_uris is not None:
        client.redirect_uris = list(dict.fromkeys(redirect_uris))
    if is_active is not None:
        if client.is_active and not is_active:
            await _end_sessions(session, client.client_id)
            client.token_version += 1  # its own tokens stay refused if it comes back
        client.is_active = is_active
    client.updated_at = utcnow()
    session.add(client)
    await session.flush()
    return client


async def rotate_secret(
    *, session: AsyncSession, client: OAuthClient, grace: timedelta = timedelta(0)
) -> str:
    """A new secret for a confidential client. The one it replaces keeps working for
    `grace`; without one it stops at once and the client's own tokens are refused, as after
    a leak. Any earlier secret stops now."""
    if not client.is_confidential:
        raise Conflict("A public client has no secret.")
    secret = new_secret()
    now = utcnow()
    if grace > timedelta(0):
        client.previous_secret_digest = client.secret_digest
        client.previous_secret_expires_at = now + grace
    else:
        client.previous_secret_digest = client.previous_secret_expires_at = None
        client.token_version += 1  # a leak: what the old secret obtained goes with it
    client.secret_digest = secret_digest(secret)
    client.secret_rotated_at = client.updated_at = now
    session.add(client)
    await session.flush()
    return secret


async def delete_client(*, session: AsyncSession, client: OAuthClient, settings: Settings) -> None:
    """Delete a client for good, with every session signed in through it."""
    if client.client_id in settings.client_ids:
        raise Conflict(
            "AUTH_CLIENT_IDS names this client: it would be created again at the next start. "
            "Remove it from AUTH_CLIENT_IDS first, or deactivate it."
        )
    await _end_sessions(session, client.client_id)
    await session.delete(client)
    await session.flush()


async def ensure_configured(*, session: AsyncSession, settings: Settings) -> None:
    """A public login client for each of AUTH_CLIENT_IDS that has none yet; existing rows
    (perhaps changed by an admin since) are left as they are."""
    for client_id in settings.client_ids:
        if await session.get(OAuthClient, client_id) is None:
            await create_client(
                session=session,
                client_id=client_id,
                name=client_id,
                confidential=False,
                scopes=sorted(USER_SCOPES),
                grant_types=LOGIN_GRANTS,
            )
            logger.info("created the public client of AUTH_CLIENT_IDS", extra={"client": client_id})
