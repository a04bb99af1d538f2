"""Database tables, one module each. Request and response bodies live in each capability's
`schemas.py`; nothing here knows HTTP.

Importing this package registers every table on `SQLModel.metadata` (Alembic's target)."""

from auth_service.models.client import OAuthClient
from auth_service.models.revoked_token import RevokedAccessToken
from auth_service.models.session import LoginSession
from auth_service.models.signing_key import SigningKey
from auth_service.models.user import ADMIN_ROLE, User, UserRole

__all__ = [
    "ADMIN_ROLE",
    "LoginSession",
    "OAuthClient",
    "RevokedAccessToken",
    "SigningKey",
    "User",
    "UserRole",
]
