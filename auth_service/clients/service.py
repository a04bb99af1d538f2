"""OAuth clients (RFC 6749 §2) and their authentication (§2.3.1).

A public client (a login form, Swagger UI) holds no secret; a confidential one (a backend
service) authenticates with `client_secret_basic` or `client_secret_post`. A secret is 256
random bits behind a prefix a secret scanner can spot, shown once, stored only as its
SHA-256 digest and compared in constant time; a rotation may leave the secret it replaces
working for a grace period, so the services holding it move over without downtime. The
public clients AUTH_CLIENT_IDS names are rows like any other, created at start-up; a request
that names no client is taken to come from the first of them.

One active client always remains through which an admin can sign in with `admin:clients`
(the password grant and that scope in its list): with it an admin can repair every other
client, so no change of clients may take the last one away. And a client may list only
scopes it can be granted: a user's scopes need a grant a user signs in through, the scopes
a client holds for itself need a secret to authenticate with.

Functions take `db` as a keyword and never commit.
"""

import logging
import secrets
from collections.abc import Sequence
from datetime import timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.access.scopes import CLIENT_ONLY_SCOPES, USER_SCOPES, Scope, format_scope
from auth_service.clients import repository
from auth_service.config import Settings
from auth_service.errors import (
    Conflict,
    InvalidClient,
    LastAdminClient,
    NotFound,
    UnprocessableClient,
)
from auth_service.kit.reads import ClientRow, Reads
from auth_service.kit.time import utcnow
from auth_service.models import OAuthClient
from auth_service.security import opaque
from auth_service.sessions import service as sessions

logger = logging.getLogger(__name__)

SECRET_PREFIX = "ast_cs_"  # noqa: S105 (a prefix, not a secret)
CLIENT_ID_PREFIX = "svc_"
# RFC 6749 §4.4: only a client that can authenticate may act for itself.
CONFIDENTIAL_ONLY_GRANTS = frozenset({"client_credentials"})
# What a configured login client may do: sign users in and keep them signed in.
LOGIN_GRANTS = ("password", "refresh_token")
# The grants through which a client acts for a user (a refresh keeps a sign-in's scopes).
USER_GRANTS = frozenset(LOGIN_GRANTS)
# What an admin must always be able to sign in with somewhere: the scope that repairs clients.
ADMIN_SIGN_IN = ("password", Scope.ADMIN_CLIENTS)


# An authenticated client and what it may ask for, as read with the driver (no pooled
# connection is held while a sign-in waits for its turn at bcrypt).
Client = ClientRow


async def authenticate(
    *, reads: Reads, client_id: str | None, secret: str | None, settings: Settings
) -> Client:
    """The client these credentials identify; InvalidClient when they identify none."""
    client_id = client_id or settings.default_client_id
    return verify((await reads.read(caller_id=client_id)).caller, secret)


def verify(client: ClientRow | None, secret: str | None) -> Client:
    """`client` (as read, None when there is none), if `secret` is what it must present: its
    secret for a confidential client, nothing for a public one; InvalidClient otherwise."""
    # The digest is computed whether or not the client exists: one cost for every failure.
    presented = opaque.digest(secret) if secret is not None else None
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


def _matches(client: ClientRow, presented: bytes) -> bool:
    """Whether `presented` is the digest of the client's secret, or of the one its last
    rotation replaced while that is still accepted. Both comparisons always run, in constant
    time: how long a failure takes tells nothing."""
    current = opaque.matches(client.secret_digest, presented)
    previous = opaque.matches(client.previous_secret_digest, presented)
    expires = client.previous_secret_expires_at
    return current or (previous and expires is not None and utcnow() < expires)


def authenticated_caller(found: ClientRow | None, secret: str, *, scope: str) -> ClientRow:
    """The confidential client `found` (read with the request's other state), if `secret`
    is its secret and its list holds `scope`; InvalidClient otherwise."""
    client = verify(found, secret)  # with a secret presented, only a confidential one passes
    if scope not in client.scopes:
        raise InvalidClient(f"This client lacks the scope {scope}.")
    return client


def _check(*, confidential: bool, grant_types: Sequence[str], scopes: Sequence[str]) -> None:
    """Refuse a client that could never use what it lists."""
    refused = CONFIDENTIAL_ONLY_GRANTS.intersection(grant_types)
    if refused and not confidential:
        raise UnprocessableClient(
            f"grant_types: a public client cannot use {', '.join(sorted(refused))}."
        )
    for_users = USER_SCOPES.intersection(scopes)
    if for_users and not USER_GRANTS.intersection(grant_types):
        raise UnprocessableClient(
            "scopes: no user signs in through a client without the grant type password or "
            f"refresh_token, so it can never be granted {format_scope(for_users)}."
        )
    for_itself = CLIENT_ONLY_SCOPES.intersection(scopes)
    if for_itself and not confidential:
        raise UnprocessableClient(
            "scopes: a public client has no secret to act for itself with, so it can never "
            f"be granted {format_scope(for_itself)}."
        )


def _admin_can_sign_in(
    *, is_active: bool, grant_types: Sequence[str], scopes: Sequence[str]
) -> bool:
    grant, scope = ADMIN_SIGN_IN
    return is_active and grant in grant_types and scope in scopes


async def _lock_for_admin_sign_in(db: AsyncSession, client: OAuthClient) -> list[str]:
    """Lock the clients an admin can sign in through, then read `client` again: the ids of
    those clients but `client`. NotFound when it was deleted meanwhile.

    Whether a change takes away the last of them is decided on this copy, never on one
    loaded before the lock: two changes of two such clients queue, and the second sees the
    first (two admins cannot each take one away and leave none).
    """
    grant, scope = ADMIN_SIGN_IN
    found = await repository.lock_admin_sign_in_clients(db, grant=grant, scope=scope)
    if await repository.reread_locked(db, client) is None:
        raise NotFound("No such client.")
    return [client_id for client_id in found if client_id != client.client_id]


async def create_client(
    *,
    db: AsyncSession,
    name: str,
    confidential: bool,
    scopes: Sequence[str],
    grant_types: Sequence[str],
    audiences: Sequence[str] = (),
    redirect_uris: Sequence[str] = (),
    client_id: str | None = None,
) -> tuple[OAuthClient, str | None]:
    """A new client, and its secret (None for a public client): the only time it is shown."""
    _check(confidential=confidential, grant_types=grant_types, scopes=scopes)
    client_id = client_id or CLIENT_ID_PREFIX + secrets.token_hex(12)
    if await repository.get(db, client_id) is not None:
        raise Conflict(f"A client {client_id} exists already.")
    secret = opaque.new(SECRET_PREFIX) if confidential else None
    now = utcnow()
    client = OAuthClient(
        client_id=client_id,
        name=name,
        is_confidential=confidential,
        secret_digest=opaque.digest(secret) if secret else None,
        scopes=sorted(set(scopes)),
        grant_types=sorted(set(grant_types)),
        audiences=sorted(set(audiences)),
        redirect_uris=list(dict.fromkeys(redirect_uris)),
        created_at=now,
        updated_at=now,
        secret_rotated_at=now if secret else None,
    )
    await repository.save(db, client)
    return client, secret


async def list_clients(
    *, db: AsyncSession, limit: int, offset: int
) -> tuple[list[OAuthClient], int]:
    """A page of clients, oldest first, and how many there are."""
    return await repository.page(db, limit=limit, offset=offset)


async def get_client(*, db: AsyncSession, client_id: str) -> OAuthClient:
    client = await repository.get(db, client_id)
    if client is None:
        raise NotFound("No such client.")
    return client


async def hold_active(db: AsyncSession, client_id: str) -> None:
    """Keep the client from being deactivated or deleted until the transaction ends, or
    InvalidClient if that happened already. For a sign-in, after it wrote its session: a
    deactivation or deletion then either waits for the sign-in and ends that session too, or
    has committed first and the sign-in is refused (PostgreSQL: FOR SHARE against the FOR
    UPDATE of `_end_sessions`; SQLite: the write lock the sign-in's insert holds).
    """
    if not await repository.share_lock_is_active(db, client_id):
        raise InvalidClient("Client authentication failed.")


async def _end_sessions(db: AsyncSession, client_id: str) -> None:
    """End every session signed in through the client: its users' tokens die with them.
    The client's row is locked first, so a sign-in holding it (`hold_active`) finishes
    before the sessions are read, and one that has not is refused."""
    await repository.lock(db, client_id)
    await sessions.end_every_of_client(db, client_id)


async def update_client(
    *,
    db: AsyncSession,
    client: OAuthClient,
    name: str | None = None,
    scopes: Sequence[str] | None = None,
    grant_types: Sequence[str] | None = None,
    audiences: Sequence[str] | None = None,
    redirect_uris: Sequence[str] | None = None,
    is_active: bool | None = None,
) -> OAuthClient:
    """Change what is given (None: unchanged). Deactivation ends the client's sessions and
    refuses its tokens at once and for good; scopes taken away are refused at once.

    A change of scopes, grant types or activity is judged on the client as read again under
    the lock of the clients an admin signs in through, and what is returned is that copy.
    """
    if scopes is not None or grant_types is not None or is_active is not None:
        others = await _lock_for_admin_sign_in(db, client)
        new_grants = sorted(set(grant_types)) if grant_types is not None else client.grant_types
        new_scopes = sorted(set(scopes)) if scopes is not None else client.scopes
        if scopes is not None or grant_types is not None:
            _check(confidential=client.is_confidential, grant_types=new_grants, scopes=new_scopes)
        admits_before = _admin_can_sign_in(
            is_active=client.is_active, grant_types=client.grant_types, scopes=client.scopes
        )
        admits_after = _admin_can_sign_in(
            is_active=client.is_active if is_active is None else is_active,
            grant_types=new_grants,
            scopes=new_scopes,
        )
        if admits_before and not admits_after and not others:
            raise LastAdminClient
        client.grant_types, client.scopes = new_grants, new_scopes
    if name is not None:
        client.name = name
    if audiences is not None:
        client.audiences = sorted(set(audiences))
    if redirect_uris is not None:
        client.redirect_uris = list(dict.fromkeys(redirect_uris))
    if is_active is not None:
        if client.is_active and not is_active:
            await _end_sessions(db, client.client_id)
            client.token_version += 1  # its own tokens stay refused if it comes back
        client.is_active = is_active
    client.updated_at = utcnow()
    await repository.save(db, client)
    return client


async def rotate_secret(
    *, db: AsyncSession, client: OAuthClient, grace: timedelta = timedelta(0)
) -> str:
    """A new secret for a confidential client. The one it replaces keeps working for
    `grace`; without one it stops at once and the client's own tokens are refused, as after
    a leak. Any earlier secret stops now."""
    if not client.is_confidential:
        raise Conflict("A public client has no secret.")
    secret = opaque.new(SECRET_PREFIX)
    now = utcnow()
    if grace > timedelta(0):
        client.previous_secret_digest = client.secret_digest
        client.previous_secret_expires_at = now + grace
    else:
        client.previous_secret_digest = client.previous_secret_expires_at = None
        client.token_version += 1  # a leak: what the old secret obtained goes with it
    client.secret_digest = opaque.digest(secret)
    client.secret_rotated_at = client.updated_at = now
    await repository.save(db, client)
    return secret


async def delete_client(*, db: AsyncSession, client: OAuthClient, settings: Settings) -> None:
    """Delete a client for good, with every session signed in through it."""
    if client.client_id in settings.client_ids:
        raise Conflict(
            "AUTH_CLIENT_IDS names this client: it would be created again at the next start. "
            "Remove it from AUTH_CLIENT_IDS first, or deactivate it."
        )
    others = await _lock_for_admin_sign_in(db, client)
    admits = _admin_can_sign_in(
        is_active=client.is_active, grant_types=client.grant_types, scopes=client.scopes
    )
    if admits and not others:
        raise LastAdminClient
    await _end_sessions(db, client.client_id)
    await repository.delete(db, client)


async def ensure_configured(*, db: AsyncSession, settings: Settings) -> None:
    """A public login client for each of AUTH_CLIENT_IDS that has none yet; existing rows
    (perhaps changed by an admin since) are left as they are."""
    for client_id in settings.client_ids:
        if await repository.get(db, client_id) is None:
            await create_client(
                db=db,
                client_id=client_id,
                name=client_id,
                confidential=False,
                scopes=sorted(USER_SCOPES),
                grant_types=LOGIN_GRANTS,
            )
            logger.info("created the public client of AUTH_CLIENT_IDS", extra={"client": client_id})
