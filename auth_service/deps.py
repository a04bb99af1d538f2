"""Request-scoped dependencies: the app's settings, collaborators and the DB session.

All are `async def`, even those that only read app state: FastAPI runs plain `def`
dependencies in a thread pool, a round trip each for what is an attribute lookup.
"""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.config import Settings
from auth_service.db import session_scope
from auth_service.security.passwords import PasswordHasher
from auth_service.services.keys import KeySet


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_hasher(request: Request) -> PasswordHasher:
    hasher: PasswordHasher = request.app.state.hasher
    return hasher


async def get_keys(request: Request) -> KeySet:
    keys: KeySet = request.app.state.keys
    return keys


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed before the response is sent, or rolled back."""
    async with session_scope(request.app.state.sessionmaker) as session:
        yield session


async def password_turn(request: Request) -> AsyncIterator[None]:
    """Hold a password slot for the whole request, taken before any guard reads the database.

    For authenticated routes that hash: queued requests then hold no pooled connection.
    """
    hasher: PasswordHasher = request.app.state.hasher
    async with hasher.turn():
        yield


SettingsDep = Annotated[Settings, Depends(get_settings)]
HasherDep = Annotated[PasswordHasher, Depends(get_hasher)]
KeysDep = Annotated[KeySet, Depends(get_keys)]
# scope="function": commit before the response goes out, so a failed commit is a failed request.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
PasswordTurn = Depends(password_turn, scope="function")
