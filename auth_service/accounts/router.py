"""Accounts over HTTP: registration and the caller's own account (`router`), and user
administration for holders of the `admin` role with the `admin:users` scope (`admin_router`;
`admin:roles` to hand out roles or change an admin's account)."""

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status

from auth_service.access.scopes import Scope
from auth_service.access.service import Principal
from auth_service.accounts import service as accounts
from auth_service.accounts.schemas import (
    AdminUserCreate,
    AdminUserUpdate,
    PasswordChange,
    UserCreate,
    UserInfo,
    UserPublic,
    UsersPublic,
    UserUpdateMe,
)
from auth_service.errors import Forbidden
from auth_service.kit.forms import PRINTABLE
from auth_service.kit.time import utcnow
from auth_service.sessions import service as sessions
from auth_service.sessions.schemas import SessionsPublic
from auth_service.web.deps import DbDep, HasherDep, PasswordTurn, SettingsDep
from auth_service.web.guards import CurrentPrincipal, require_admin, require_scopes
from auth_service.web.schemas import ErrorResponse

router = APIRouter(tags=["users"])

_REGISTER_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorResponse, "description": "Registration is closed."},
    409: {"model": ErrorResponse, "description": "The email is taken."},
    422: {"model": ErrorResponse, "description": "Invalid email, or the password policy refused."},
}


async def registration_open(settings: SettingsDep) -> None:
    # A dependency, so a closed registration answers 403 before the body is validated.
    if not settings.registration_open:
        raise Forbidden("Registration is closed.")


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    responses=_REGISTER_ERRORS,
    dependencies=[Depends(registration_open), PasswordTurn],
)
async def register(
    data: UserCreate, db: DbDep, settings: SettingsDep, hasher: HasherDep
) -> UserPublic:
    """Create an account with an email and a password."""
    user = await accounts.create_user(
        db=db,
        hasher=hasher,
        min_length=settings.password_min_length,
        allow_unicode_email=settings.allow_unicode_email,
        email=data.email,
        password=data.password,
        name=data.name,
    )
    return UserPublic.model_validate(user)


@router.get("/users/me", response_model=UserPublic)
async def read_me(principal: CurrentPrincipal) -> Response:
    """The caller's account."""
    # Serialized here: FastAPI would validate the model it was handed a second time.
    body = UserPublic.model_validate(principal.user).model_dump_json()
    return Response(body, media_type="application/json")


@router.patch("/users/me")
async def update_me(data: UserUpdateMe, principal: CurrentPrincipal, db: DbDep) -> UserPublic:
    """Change the caller's name."""
    if "name" not in data.model_fields_set:
        return UserPublic.model_validate(principal.user)
    account = await accounts.own_account(db=db, user_id=principal.user.id)
    return UserPublic.model_validate(
        await accounts.update_profile(db=db, user=account, name=data.name)
    )


@router.post(
    "/users/me/password",
    dependencies=[PasswordTurn],
    status_code=status.HTTP_204_NO_CONTENT,
    responses={400: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)
async def change_password(
    data: PasswordChange,
    principal: CurrentPrincipal,
    db: DbDep,
    settings: SettingsDep,
    hasher: HasherDep,
) -> Response:
    """Change the caller's password; every access token issued before now stops working."""
    await accounts.change_password(
        db=db,
        hasher=hasher,
        min_length=settings.password_min_length,
        user=await accounts.own_account(db=db, user_id=principal.user.id),
        current_password=data.current_password,
        new_password=data.new_password,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/userinfo", response_model_exclude_none=True)
async def userinfo(
    principal: Annotated[Principal, require_scopes(Scope.OPENID)],
) -> UserInfo:
    """OpenID Connect UserInfo: the caller's claims that the token's scopes allow."""
    user, granted = principal.user, principal.scopes
    info = UserInfo(sub=str(user.id))
    if Scope.EMAIL in granted:
        info.email = user.email
        info.email_verified = user.is_verified
    if Scope.PROFILE in granted:
        info.name = user.name
    return info


admin_router = APIRouter(
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


@admin_router.get("")
async def list_users(
    db: DbDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    q: Annotated[
        str | None,
        Query(max_length=320, pattern=PRINTABLE, description="Search in email and name."),
    ] = None,
) -> UsersPublic:
    """List users, oldest first, with the total count."""
    found, total = await accounts.list_users(db=db, limit=limit, offset=offset, q=q)
    return UsersPublic(data=[UserPublic.model_validate(u) for u in found], count=total)


@admin_router.post(
    "", status_code=status.HTTP_201_CREATED, responses=_CONFLICT, dependencies=[PasswordTurn]
)
async def create_user(
    data: AdminUserCreate,
    principal: AdminPrincipal,
    db: DbDep,
    settings: SettingsDep,
    hasher: HasherDep,
) -> UserPublic:
    """Create a user with chosen roles (with `admin:roles`) and flags (the password policy
    applies)."""
    accounts.check_new_user(roles=data.roles, manages_roles=_manages_roles(principal))
    user = await accounts.create_user(
        db=db,
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


@admin_router.get("/{user_id}")
async def read_user(user_id: uuid.UUID, db: DbDep) -> UserPublic:
    """One user."""
    return UserPublic.model_validate(await accounts.get_user(db=db, user_id=user_id))


@admin_router.patch("/{user_id}", responses=_CONFLICT)
async def update_user(
    user_id: uuid.UUID, data: AdminUserUpdate, principal: AdminPrincipal, db: DbDep
) -> UserPublic:
    """Change name, roles, active or verified; deactivation revokes the user's tokens at once.
    Roles, and any change to an account holding the admin role, need `admin:roles`."""
    user = await accounts.get_user(db=db, user_id=user_id)
    # `null` leaves a field as it is, except the name, which it clears.
    updated = await accounts.update_user(
        db=db,
        user=user,
        manages_roles=_manages_roles(principal),
        name=data.name if "name" in data.model_fields_set else accounts.KEEP,
        roles=data.roles,
        is_active=data.is_active,
        is_verified=data.is_verified,
    )
    return UserPublic.model_validate(updated)


@admin_router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_CONFLICT)
async def delete_user(user_id: uuid.UUID, principal: AdminPrincipal, db: DbDep) -> Response:
    """Delete a user for good (an account holding the admin role with `admin:roles`)."""
    user = await accounts.get_user(db=db, user_id=user_id)
    await accounts.delete_user(db=db, user=user, manages_roles=_manages_roles(principal))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@admin_router.get("/{user_id}/sessions")
async def list_user_sessions(
    user_id: uuid.UUID,
    principal: AdminPrincipal,
    db: DbDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> SessionsPublic:
    """A user's live sessions, newest first, with the total count."""
    user = await accounts.get_user(db=db, user_id=user_id)
    found, total = await sessions.live(
        db, user_id=user.id, now=utcnow(), limit=limit, offset=offset
    )
    return SessionsPublic.of(found, total, current=principal.session_id)


@admin_router.post("/{user_id}/revoke-sessions", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_user_sessions(user_id: uuid.UUID, db: DbDep) -> Response:
    """End every session of a user: their refresh tokens stop working, and the access tokens
    issued in them are refused from the next request on."""
    user = await accounts.get_user(db=db, user_id=user_id)
    await sessions.end_every_of_user(db, user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
