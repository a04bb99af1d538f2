"""Signing keys as another process sees them: the kid a token names, key times set from outside,
what `auth-service rotate-keys` prints."""

import re
from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy import create_engine, update
from sqlmodel import col

from auth_service.kit.db import sync_url
from auth_service.models import SigningKey

CLI_ROTATED = re.compile(
    r"next signing key (\S+) \(RS256\) is in the JWKS now and signs from (\S+); "
    r"the current key signs until then, and earlier keys verify until \S+, then retire\n"
)


def kid_of(token: str) -> str:
    kid: str = jwt.get_unverified_header(token)["kid"]
    return kid


def set_times(database: str, kid: str, **times: datetime) -> None:
    """Set the key's `created_at`, `signs_from` or `retires_at`, as another process would."""
    engine = create_engine(sync_url(database))
    try:
        with engine.begin() as connection:
            connection.execute(update(SigningKey).where(col(SigningKey.kid) == kid).values(**times))
    finally:
        engine.dispose()


def now_signing(database: str, kid: str) -> None:
    """As if the next key's time to sign had come (a second ago)."""
    set_times(database, kid, signs_from=datetime.now(UTC) - timedelta(seconds=1))
