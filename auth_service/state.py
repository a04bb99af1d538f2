"""The application's state: one typed object, built by `create_app`, completed at start-up.

Dependencies, guards, routes and tests reach the app's collaborators through `web.deps.state_of`
instead of untyped `app.state` lookups, so a renamed or missing collaborator is a type error,
not an AttributeError at request time.
"""

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.config import Settings
from auth_service.keys.service import KeyRing, KeySet
from auth_service.kit.db import SideWrites, create_engine, create_sessionmaker
from auth_service.kit.documents import JSONDocument
from auth_service.kit.reads import Reads, reads_for
from auth_service.security.crypto import REFRESH_SUCCESSORS, Sealer
from auth_service.security.jwt import VerifiedTokenCache
from auth_service.security.passwords import PasswordHasher
from auth_service.security.refresh_tokens import RefreshTokens
from auth_service.web.observability import AccessLog, Metrics


@dataclass(slots=True)
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    # Writes that must outlive a refused request, each in a short transaction of its own.
    side_writes: SideWrites
    hasher: PasswordHasher
    reads: Reads
    token_cache: VerifiedTokenCache
    metrics: Metrics
    access_log: AccessLog
    discovery: JSONDocument
    # Makes and recognizes refresh tokens (`sessions.service`).
    refresh_tokens: RefreshTokens
    # Seals the answers kept for the refresh reuse interval (`sessions.service`).
    successors: Sealer
    # The signing keys, following the database (`KeyRing.follow`, started by the lifespan).
    key_ring: KeyRing

    @classmethod
    def build(cls, settings: Settings, *, discovery: JSONDocument, secret_key: str) -> "AppState":
        engine = create_engine(settings.database_url, timeout=settings.database_timeout_seconds)
        sessionmaker = create_sessionmaker(engine)
        return cls(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            side_writes=SideWrites(sessionmaker),
            hasher=PasswordHasher(
                rounds=settings.bcrypt_rounds, concurrency=settings.password_hash_concurrency
            ),
            reads=reads_for(engine, timeout=settings.database_timeout_seconds),
            token_cache=VerifiedTokenCache(),
            metrics=Metrics(),
            access_log=AccessLog(),
            discovery=discovery,
            refresh_tokens=RefreshTokens(secret_key),
            successors=Sealer(secret_key, purpose=REFRESH_SUCCESSORS),
            key_ring=KeyRing(
                sessionmaker=sessionmaker, alg=settings.signing_alg, secret_key=secret_key
            ),
        )

    @property
    def keys(self) -> KeySet:
        """The signing key set, loaded when the app starts and kept current by its ring."""
        return self.key_ring.keys

    async def close(self) -> None:
        """Release what the app holds: the guards' connections, hashing threads, the pool;
        write the access lines still pending."""
        self.access_log.flush()
        try:
            await self.reads.close()
            self.hasher.close()
        finally:
            await self.engine.dispose()
