"""Settings of clients."""

from pydantic import BaseModel, Field

from auth_service.kit.settings import StrList


class ClientSettings(BaseModel):
    """OAuth clients: the public login clients the password grant serves.

    A part of `config.Settings` (the same `AUTH_*` names); defined here, beside what it
    configures.
    """

    client_ids: StrList = Field(
        default=["auth-service"],
        min_length=1,
        description="Public OAuth clients allowed to use the password grant; the first "
        "is assumed when a request names none.",
    )

    @property
    def default_client_id(self) -> str:
        return self.client_ids[0]
