"""Accounts' request and response bodies: registration, profile, password, admin of users."""

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from auth_service.accounts import emails
from auth_service.kit.forms import Input, Name, Password, Role


def _address(text: str) -> str:
    try:
        return emails.parse(text).address
    except emails.InvalidEmail as exc:
        raise PydanticCustomError(
            "value_error", "value is not a valid email address: {reason}", {"reason": str(exc)}
        ) from None


# Kept as typed (NFKC-normalized); accounts are unique by `emails.parse(...).key`, so
# Alice@x, alice@x and ａｌｉｃｅ@x are one account.
Email = Annotated[
    str, AfterValidator(_address), WithJsonSchema({"type": "string", "format": "email"})
]


def normalize_email(text: str) -> str | None:
    """The address as registration stores it, or None when `text` is not one."""
    try:
        return emails.parse(text).address
    except emails.InvalidEmail:
        return None


class UserCreate(Input):
    email: Email
    password: Password
    name: Name | None = None


class UserUpdateMe(Input):
    name: Name | None = None


class PasswordChange(Input):
    current_password: Password
    new_password: Password


class AdminUserCreate(UserCreate):
    roles: list[Role] = Field(default_factory=list, max_length=32)
    is_active: bool = True
    is_verified: bool = False


class AdminUserUpdate(Input):
    name: Name | None = None
    roles: list[Role] | None = Field(default=None, max_length=32)
    is_active: bool | None = None
    is_verified: bool | None = None


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    name: str | None
    is_active: bool
    is_verified: bool
    roles: list[str]
    created_at: datetime
    updated_at: datetime


class UsersPublic(BaseModel):
    data: list[UserPublic]
    count: int = Field(description="Total number of users matching the query.")


class UserInfo(BaseModel):
    """OpenID Connect Core §5.3.2 UserInfo response (the claims the scopes allow)."""

    sub: str
    email: str | None = None
    email_verified: bool | None = None
    name: str | None = None
