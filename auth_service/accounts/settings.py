"""Settings of accounts."""

import os
from typing import Self

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from auth_service.accounts import emails


class AccountSettings(BaseModel):
    """Accounts: registration, addresses, the first admin and passwords.

    A part of `config.Settings` (the same `AUTH_*` names); defined here, beside what it
    configures.
    """

    registration_open: bool = Field(
        default=True,
        description="`false` makes `POST /users` answer 403 (admins can still create users).",
    )
    allow_unicode_email: bool = Field(
        default=False,
        description="Let new accounts have non-ASCII local parts (each in one script); "
        "off, a look-alike such as a Cyrillic `а` in `аlice` cannot be registered.",
    )
    bootstrap_admin_email: str | None = Field(
        default=None,
        description="An admin to create at start-up while no account holds the admin role "
        "and the address is free; never promotes or reactivates an existing account.",
    )
    bootstrap_admin_password: SecretStr | None = Field(
        default=None, description="The password of `AUTH_BOOTSTRAP_ADMIN_EMAIL`'s account."
    )

    # Each step doubles the cost: 16 is ~5 s a hash here, more would stall start-up and logins.
    bcrypt_rounds: int = Field(
        default=12,
        ge=4,
        le=16,
        description="bcrypt cost; stored hashes of another cost are upgraded at the next login.",
    )
    password_min_length: int = Field(
        default=15,
        ge=8,
        le=64,
        description="Minimum password length in characters after NFKC (NIST SP 800-63B rev. 4: "
        "15 for a single factor, 8 where every user also has a second factor).",
    )
    password_hash_concurrency: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=256,
        description="bcrypt computations running at once (worker threads).",
    )

    @field_validator("bootstrap_admin_email")
    @classmethod
    def _bootstrap_address(cls, value: str | None) -> str | None:
        return None if value is None else emails.parse(value).address

    @model_validator(mode="after")
    def _bootstrap_address_allowed(self) -> Self:
        if self.bootstrap_admin_email is not None:
            address = emails.parse(self.bootstrap_admin_email)
            try:
                emails.check_new_address(address, allow_unicode=self.allow_unicode_email)
            except emails.InvalidEmail as exc:
                raise ValueError(f"AUTH_BOOTSTRAP_ADMIN_EMAIL: {exc}") from None
        return self
