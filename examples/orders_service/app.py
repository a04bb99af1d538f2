"""A downstream service that trusts auth-service's access tokens, verified locally.

    ORDERS_ISSUER=http://127.0.0.1:8000 uvicorn app:app --port 8001

`ORDERS_ISSUER` is the auth service's `AUTH_ISSUER`; `ORDERS_AUDIENCE` the `aud` its tokens
carry for this service (its `AUTH_AUDIENCE`).
"""

import os
from typing import Annotated

from auth_service_verifier import TokenVerifier, VerifiedToken
from fastapi import Depends, FastAPI

app = FastAPI(title="orders")
verifier = TokenVerifier(
    issuer=os.environ.get("ORDERS_ISSUER", "http://localhost:8000"),
    audience=os.environ.get("ORDERS_AUDIENCE", "orders-api"),
)

Token = Annotated[VerifiedToken, Depends(verifier.require())]


@app.get("/orders")
async def list_orders(token=Depends(verifier.require("orders:read"))):  # noqa: B008
    """The caller's orders: a token with the `orders:read` scope."""
    return {"owner": token.sub, "orders": []}


@app.get("/whoami")
async def whoami(token: Token) -> dict[str, object]:
    """Any valid access token: who it was issued to, and for what."""
    return {"sub": token.sub, "client_id": token.client_id, "scopes": sorted(token.scopes)}


@app.get("/profile")
async def profile(token: Annotated[VerifiedToken, Depends(verifier.require("profile"))]) -> str:
    """A scope auth-service grants at sign-in today."""
    return token.sub
