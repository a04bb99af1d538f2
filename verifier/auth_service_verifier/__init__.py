"""Verify auth-service's access tokens in another service, locally, with the issuer's keys.

from auth_service_verifier import TokenVerifier
verifier = TokenVerifier(issuer="https://auth.example.com", audience="orders-api")
token = verifier.verify(raw_token)            # anywhere; InvalidTokenError if refused
token = Depends(verifier.require("orders:read"))   # FastAPI (the `fastapi` extra)
"""

from auth_service_verifier._errors import InvalidTokenError, KeysUnavailableError
from auth_service_verifier._rules import VerifiedToken
from auth_service_verifier._verifier import TokenVerifier

__all__ = ["InvalidTokenError", "KeysUnavailableError", "TokenVerifier", "VerifiedToken"]
