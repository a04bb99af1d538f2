"""A downstream service that trusts auth-service's access tokens.

    ORDERS_ISSUER=http://localhost:8000 uvicorn app:app --port 8001

`ORDERS_ISSUER` is the auth service's `AUTH_ISSUER` exactly (`make run`'s is
http://localhost:8000, though it listens on 127.0.0.1; `serve` logs both), or every request
gets 500 naming the two; `ORDERS_AUDIENCE` the `aud` its tokens carry for this service (its
`AUTH_AUDIENCE`). Tokens are verified locally, with the auth service's published keys; with
`ORDERS_INTROSPECTION_CLIENT_ID` and `ORDERS_INTROSPECTION_CLIENT_SECRET` (a client allowed
`introspect`) they are looked up at its introspection endpoint instead, so a revoked token is
refused at once; `ORDERS_INTROSPECTION_CACHE_SECONDS` (default 5) is how late a revocation may
be seen.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from auth_service_verifier import Introspection, TokenVerifier, VerifiedToken
from fastapi import Depends, FastAPI


def _introspection() -> Introspection | None:
    client_id = os.environ.get("ORDERS_INTROSPECTION_CLIENT_ID")
    if not client_id:
        return None  # local verification
    return Introspection(
        client_id=client_id,
        client_secret=os.environ["ORDERS_INTROSPECTION_CLIENT_SECRET"],
        cache_seconds=float(os.environ.get("ORDERS_INTROSPECTION_CACHE_SECONDS", "5")),
    )


verifier = TokenVerifier(
    issuer=os.environ.get("ORDERS_ISSUER", "http://localhost:8000"),
    audience=os.environ.get("ORDERS_AUDIENCE", "orders-api"),
    introspection=_introspection(),
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    await verifier.aclose()  # introspection mode keeps connections to the auth service


app = FastAPI(title="orders", lifespan=lifespan)

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
    """A scope auth-service grants at sign-in."""
    return token.sub
