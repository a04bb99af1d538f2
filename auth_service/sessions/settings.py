"""Settings of sessions."""

from pydantic import BaseModel, Field


class SessionSettings(BaseModel):
    """Sessions: how long a sign-in and its refresh tokens last, and how many a user may hold.

    A part of `config.Settings` (the same `AUTH_*` names); defined here, beside what it
    configures.
    """

    refresh_token_ttl: int = Field(
        default=14 * 86_400,
        ge=300,
        le=365 * 86_400,
        description="seconds a refresh token stays usable unused (the session's idle limit); "
        "every refresh starts it afresh.",
    )
    session_max_age: int = Field(
        default=30 * 86_400,
        ge=300,
        le=365 * 86_400,
        description="seconds a session (one sign-in and its refreshes) lasts at most, however "
        "often it refreshes; then the user signs in again.",
    )
    refresh_reuse_interval: int = Field(
        default=0,
        ge=0,
        le=300,
        description="seconds within which a spent refresh token may be presented again and "
        "get the same answer as the first time (concurrent tabs, retried requests); "
        "0: any second presentation ends the session.",
    )
    max_sessions_per_user: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="live sessions one user may have; a sign-in beyond it ends that user's "
        "oldest session.",
    )
    purge_interval_seconds: int = Field(
        default=600,
        ge=1,
        le=86_400,
        description="how often each worker deletes expired sessions and revoked access "
        "tokens, and the answers kept for the refresh reuse interval once it has passed "
        "(in small batches).",
    )
