"""Sessions as their owners and admins see them."""

import uuid
from collections.abc import Sequence
from datetime import datetime

from pydantic import (
    BaseModel,
    Field,
)

from auth_service.models import LoginSession


class SessionPublic(BaseModel):
    """A session: one sign-in and its refreshes (a refresh token family)."""

    id: uuid.UUID
    created_at: datetime = Field(description="When the sign-in happened.")
    last_used_at: datetime = Field(description="The sign-in or the latest refresh.")
    expires_at: datetime = Field(
        description="When it ends unless refreshed: its refresh token's expiry, never past "
        "the session's maximum age."
    )
    client_id: str = Field(description="The client that signed in.")
    ip: str | None = Field(description="The address the sign-in came from.")
    user_agent: str | None = Field(description="The sign-in's User-Agent, to 512 characters.")
    current: bool = Field(description="Whether the caller's access token belongs to it.")

    @classmethod
    def of(cls, login: LoginSession, *, current: uuid.UUID | None) -> "SessionPublic":
        """`login` as its owner sees it; `current` is the caller's session, if any."""
        return cls(
            id=login.id,
            created_at=login.created_at,
            last_used_at=login.last_used_at,
            expires_at=min(login.expires_at, login.idle_expires_at),
            client_id=login.client_id,
            ip=login.ip,
            user_agent=login.user_agent,
            current=login.id == current,
        )


class SessionsPublic(BaseModel):
    data: list[SessionPublic]
    count: int = Field(description="Total number of live sessions.")

    @classmethod
    def of(
        cls, found: Sequence[LoginSession], count: int, *, current: uuid.UUID | None
    ) -> "SessionsPublic":
        return cls(data=[SessionPublic.of(s, current=current) for s in found], count=count)
