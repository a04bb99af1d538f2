"""Verify auth-service's access tokens in another service, locally, with the issuer's keys.

from auth_service_verifier import TokenVerifier
verifier = TokenVerifier(issuer="https://auth.example.com", audience="orders-api")
token = verifier.verify(raw_token)            # anywhere; a VerificationError if not verified
token = Depends(verifier.require("orders:read"))   # FastAPI (the `fastapi` extra)
verifier.status()                             # the keys held, the last error: for /health

# or: ask the auth service about each token (RFC 7662), to see revocations at once
verifier = TokenVerifier(issuer=..., audience=..., introspection=Introspection(
    client_id="svc_...", client_secret=os.environ["ORDERS_CLIENT_SECRET"]))
"""

from auth_service_verifier._errors import (
    IntrospectionUnavailableError,
    InvalidTokenError,
    IssuerMismatchError,
    KeysUnavailableError,
    VerificationError,
    VerificationUnavailableError,
)
from auth_service_verifier._introspection import Introspection
from auth_service_verifier._rules import VerifiedToken
from auth_service_verifier._verifier import TokenVerifier, VerifierStatus

__all__ = [
    "Introspection",
    "IntrospectionUnavailableError",
    "InvalidTokenError",
    "IssuerMismatchError",
    "KeysUnavailableError",
    "TokenVerifier",
    "VerificationError",
    "VerificationUnavailableError",
    "VerifiedToken",
    "VerifierStatus",
]
