"""User administration, for holders of the `admin` role with the `admin:users` scope (and
`admin:roles` to hand out roles or change an admin's account: `services.admin`)."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status

from auth_service.deps import HasherDep, PasswordTurn, SessionDep, SettingsDep
from auth_service.guards import require_admin
from auth_service.models import utcnow
from auth_service.schemas import (
    PRINTABLE,
    AdminUserCreate,
    AdminUserUpdate,
    ErrorResponse,
    SessionsPublic,
    UserPublic,
    UsersPublic,
)
from auth_service.scopes import Scope
from auth_service.services import admin, sessions, users
from auth_service.services.access import Principal

router = APIRouter(
    prefix="/admin/users",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses={404: {"model": ErrorResponse}},
)

# The admin's own principal, where a route needs it (the router's guard, solved once).
AdminPrincipal = Annotated[Principal, Depends(require_admin)]
_CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": ErrorResponse}}


def _manages_roles(principal: Principal) -> bool:
    return Scope.ADMIN_ROLES in principal.scopes


@router.get("")
async def list_users(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    q: Annotated[
        str | None,
        Query(max_length=320, pattern=PRINTABLE, description="Search in email and name."),
    ] = None,
) -> UsersPublic:
    """List users, oldest first, with the total count."""
    found, total = await admin.list_users(session=session, limit=limit, offset=offset, q=q)
    return UsersPublic(data=[UserPublic.model_validate(u) for u in found], count=total)


@router.post(
    "", status_code=status.HTTP_201_CREATED, responses=_CONFLICT, dependencies=[PasswordTurn]
)
async def create_user(
    data: AdminUserCreate,
    principal: AdminPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    hasher: HasherDep,
) -> UserPublic:
    """Create a user with chosen roles (with `admin:roles`) and flags (the password policy
    applies)."""
    admin.check_new_user(roles=data.roles, manages_roles=_manages_roles(principal))
    user = await users.create_user(
        session=session,
        hasher=hasher,
        min_length=settings.password_min_length,
        allow_unicode_email=settings.allow_unicode_email,
        email=data.email,
        password=data.password,
        name=data.name,
        roles=data.roles,
        is_active=data.is_active,
        is_verified=data.is_verified,
    )
    return UserPublic.model_validate(user)


@router.get("/{user_id}")
async def read_user(user_id: uuid.UUID, session: SessionDep) -> UserPublic:
    """One user."""
    return UserPublic.model_validate(await users.get_user(session=session, user_id=user_id))


@router.patch("/{user_id}", responses=_CONFLICT)
async def update_user(
    user_id: uuid.UUID, data: AdminUserUpdate, principal: AdminPrincipal, session: SessionDep
) -> UserPublic:
    """Change name, roles, active or verified; deactivation revokes the user's tokens at once.
    Roles, and any change to an account holding the admin role, need `admin:roles`."""
    user = await users.get_user(session=session, user_id=user_id)
    # `null` leaves a field as it is, except the name, which it clears.
    updated = await admin.update_user(
        session=session,
        user=user,
        manages_roles=_manages_roles(principal),
        name=data.name if "name" in data.model_fields_set else admin.KEEP,
        roles=data.roles,
        is_active=data.is_active,
        is_verified=data.is_verified,
    )
    return UserPublic.model_validate(updated)


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_CONFLICT)
async def delete_user(
    user_id: uuid.UUID, principal: AdminPrincipal, session: SessionDep
) -> Response:
    """Delete a user for good (an account holding the admin role with `admin:roles`)."""
    user = await users.get_user(session=session, user_id=user_id)
    await admin.delete_user(session=session, user=user, manages_roles=_manages_roles(principal))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{user_id}/sessions")
async def list_user_sessions(
    user_id: uuid.UUID,
    principal: AdminPrincipal,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> SessionsPublic:
    """A user's live sessions, newest first, with the total count."""
    user = await users.get_user(session=session, user_id=user_id)
    found, total = await sessions.live(
        session, user_id=user.id, now=utcnow(), limit=limit, offset=offset
    )
    return SessionsPublic.of(found, total, current=principal.session_id)


@router.post("/{user_id}/revoke-sessions", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_user_sessions(user_id: uuid.UUID, session: SessionDep) -> Response:
    """End every session of a user: their refresh tokens stop working, and the access tokens
    issued in them are refused from the next request on."""
    user = await users.get_user(session=session, user_id=user_id)
    await sessions.end_all(session, user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
