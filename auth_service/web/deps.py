"""Request-scoped dependencies: the app's settings, collaborators and the DB session.

All are `async def`, even those that only read app state: FastAPI runs plain `def`
dependencies in a thread pool, a round trip each for what is an attribute lookup.
"""

import ipaddress
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from auth_service.config import Settings
from auth_service.kit.db import transaction
from auth_service.security.passwords import PasswordHasher
from auth_service.state import AppState


def state_of(source: HTTPConnection | Starlette) -> AppState:
    """The state of the app serving a request (or of the app itself)."""
    app = source.app if isinstance(source, HTTPConnection) else source
    state: AppState = app.state.auth
    return state


async def get_settings(request: Request) -> Settings:
    return state_of(request).settings


async def get_hasher(request: Request) -> PasswordHasher:
    return state_of(request).hasher


async def get_db(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: committed before the response is sent, or rolled back."""
    async with transaction(state_of(request).sessionmaker) as db:
        yield db


def client_key(request: Request) -> str:
    """Who is asking, for fairness between clients: the peer address, an IPv6 one by /64.

    The peer is the socket's, or the forwarded one when the socket belongs to a trusted proxy
    (the server rewrites `scope["client"]` only then). One IPv6 subscriber holds a whole /64.
    """
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


async def password_turn(request: Request) -> AsyncIterator[None]:
    """Hold the caller's password slot for the whole request, before any guard reads the
    database: queued requests then hold no pooled connection.

    For JSON routes that hash (FastAPI has read the body before dependencies run, so a slow
    upload holds no place).
    """
    hasher = state_of(request).hasher
    async with hasher.turn(client_key(request)):
        yield


SettingsDep = Annotated[Settings, Depends(get_settings)]
HasherDep = Annotated[PasswordHasher, Depends(get_hasher)]
# scope="function": commit before the response goes out, so a failed commit is a failed request.
DbDep = Annotated[AsyncSession, Depends(get_db, scope="function")]
PasswordTurn = Depends(password_turn, scope="function")
