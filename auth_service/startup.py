"""Start-up work every process does once, before serving: keys and the bootstrap admin."""

import logging

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.accounts import service as accounts
from auth_service.clients import service as clients
from auth_service.config import Settings
from auth_service.keys import service as keys
from auth_service.kit.db import create_engine, create_sessionmaker, lock_for_startup, transaction
from auth_service.security.passwords import PasswordHasher

logger = logging.getLogger(__name__)


async def prepare(
    *,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    hasher: PasswordHasher,
    secret_key: str,
) -> None:
    """Create what is missing (signing key, configured clients, bootstrap admin).

    Runs under a cross-process lock, so workers and replicas starting together agree.
    """
    async with transaction(sessionmaker) as db:
        await lock_for_startup(db)
        await keys.ensure_signing_key(db=db, alg=settings.signing_alg, secret_key=secret_key)
        await clients.ensure_configured(db=db, settings=settings)
        if settings.bootstrap_admin_email and settings.bootstrap_admin_password:
            created = await accounts.bootstrap_admin(
                db=db,
                hasher=hasher,
                min_length=settings.password_min_length,
                email=settings.bootstrap_admin_email,
                password=settings.bootstrap_admin_password.get_secret_value(),
                allow_unicode_email=settings.allow_unicode_email,
            )
            if created is not None:
                logger.info("created bootstrap admin", extra={"user_id": str(created.id)})


async def prepare_database(settings: Settings, *, secret_key: str) -> None:
    """Run `prepare` once outside any app: `serve` does it before it starts workers."""
    engine = create_engine(settings.database_url)
    hasher = PasswordHasher(rounds=settings.bcrypt_rounds, concurrency=1)
    try:
        await prepare(
            settings=settings,
            sessionmaker=create_sessionmaker(engine),
            hasher=hasher,
            secret_key=secret_key,
        )
    finally:
        hasher.close()
        await engine.dispose()
