"""OAuth clients and their authentication (RFC 6749 §2.3).

The clients are the public ones of `AUTH_CLIENT_IDS`: login forms and Swagger UI, which hold
no secret. A request that names no client is taken to come from the first of them.
"""

from dataclasses import dataclass

from auth_service.config import Settings
from auth_service.errors import InvalidClient


@dataclass(frozen=True, slots=True)
class Client:
    """An authenticated client."""

    client_id: str


def authenticate(*, client_id: str | None, secret: str | None, settings: Settings) -> Client:
    """The client these credentials identify; InvalidClient when they identify none."""
    client_id = client_id or settings.default_client_id
    if client_id not in settings.client_ids:
        raise InvalidClient("Unknown client.")
    if secret is not None:
        raise InvalidClient("Unknown client credentials: public clients have no secret.")
    return Client(client_id=client_id)
