"""Registration and the caller's own account."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response, status

from auth_service.deps import HasherDep, PasswordTurn, SessionDep, SettingsDep
from auth_service.errors import Forbidden, InvalidToken
from auth_service.guards import CurrentPrincipal, require_scopes
from auth_service.models import User
from auth_service.schemas import (
    ErrorResponse,
    PasswordChange,
    UserCreate,
    UserInfo,
    UserPublic,
    UserUpdateMe,
)
from auth_service.scopes import Scope
from auth_service.services import authentication, users
from auth_service.services.access import Principal
from auth_service.services.user_state import UserState

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
    data: UserCreate, session: SessionDep, settings: SettingsDep, hasher: HasherDep
) -> UserPublic:
    """Create an account with an email and a password."""
    user = await users.create_user(
        session=session,
        hasher=hasher,
        min_length=settings.password_min_length,
        allow_unicode_email=settings.allow_unicode_email,
        email=data.email,
        password=data.password,
        name=data.name,
    )
    return UserPublic.model_validate(user)


async def _account(session: SessionDep, user: UserState) -> User:
    """The caller's row, to change it in this request's transaction."""
    account = await session.get(User, user.id)
    if account is None:  # deleted since the guard read it
        raise InvalidToken("The access token has been revoked.")
    return account


@router.get("/users/me", response_model=UserPublic)
async def read_me(principal: CurrentPrincipal) -> Response:
    """The caller's account."""
    # Serialized here: FastAPI would validate the model it was handed a second time.
    body = UserPublic.model_validate(principal.user).model_dump_json()
    return Response(body, media_type="application/json")


@router.patch("/users/me")
async def update_me(
    data: UserUpdateMe, principal: CurrentPrincipal, session: SessionDep
) -> UserPublic:
    """Change the caller's name."""
    if "name" not in data.model_fields_set:
        return UserPublic.model_validate(principal.user)
    account = await _account(session, principal.user)
    return UserPublic.model_validate(
        await users.update_profile(session=session, user=account, name=data.name)
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
    session: SessionDep,
    settings: SettingsDep,
    hasher: HasherDep,
) -> Response:
    """Change the caller's password; every access token issued before now stops working."""
    await authentication.change_password(
        session=session,
        hasher=hasher,
        min_length=settings.password_min_length,
        user=await _account(session, principal.user),
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
