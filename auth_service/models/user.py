"""Accounts: `users` and their roles (`user_roles`)."""

import uuid
from datetime import datetime

from sqlmodel import Field, Relationship, SQLModel

from auth_service.kit.time import utcnow
from auth_service.models.base import UTCDateTime

ADMIN_ROLE = "admin"


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    # As typed (NFKC-normalized): what the user sees and mail goes to.
    email: str = Field(max_length=320)
    # `security.emails` key (local part NFKC + case folded): one account per mailbox
    # however it is spelled; the unique constraint makes registration race-free.
    email_key: str = Field(max_length=320, unique=True)
    hashed_password: str = Field(max_length=255)
    name: str | None = Field(default=None, max_length=200)
    is_active: bool = True
    is_verified: bool = False
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # Carried in every access token; raising it (password change, deactivation) revokes
    # all earlier tokens exactly, even one whose login read the old password hash.
    token_version: int = Field(default=0, sa_column_kwargs={"server_default": "0"})

    role_links: list["UserRole"] = Relationship(
        sa_relationship_kwargs={"lazy": "selectin", "cascade": "all, delete-orphan"},
    )

    @property
    def roles(self) -> list[str]:
        return sorted(link.role for link in self.role_links)

    def set_roles(self, roles: list[str]) -> None:
        wanted = set(roles)
        self.role_links = [link for link in self.role_links if link.role in wanted] + [
            UserRole(user_id=self.id, role=role) for role in sorted(wanted - set(self.roles))
        ]


class UserRole(SQLModel, table=True):
    __tablename__ = "user_roles"

    user_id: uuid.UUID = Field(foreign_key="users.id", primary_key=True, ondelete="CASCADE")
    role: str = Field(max_length=64, primary_key=True, index=True)
