"""The caller's own sessions: one per sign-in, each a refresh token family (RFC 9700
§4.14.2). Listing them, ending one, signing out here or everywhere."""

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from auth_service.kit.time import utcnow
from auth_service.sessions import service as sessions
from auth_service.sessions.schemas import SessionsPublic
from auth_service.web.deps import DbDep
from auth_service.web.guards import CurrentPrincipal
from auth_service.web.schemas import ErrorResponse

router = APIRouter(tags=["sessions"])


@router.get("/users/me/sessions")
async def list_sessions(
    principal: CurrentPrincipal,
    db: DbDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> SessionsPublic:
    """The caller's live sessions, newest first, with the total count; the one the caller's
    access token belongs to is `current`."""
    found, total = await sessions.live(
        db, user_id=principal.user.id, now=utcnow(), limit=limit, offset=offset
    )
    return SessionsPublic.of(found, total, current=principal.session_id)


@router.delete(
    "/users/me/sessions/{session_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"model": ErrorResponse, "description": "The caller has no such session."}},
)
async def end_session(session_id: uuid.UUID, principal: CurrentPrincipal, db: DbDep) -> Response:
    """End one of the caller's sessions: its refresh token stops working, and its access
    tokens are refused from the next request on."""
    await sessions.end_own(db, user_id=principal.user.id, session_id=session_id, now=utcnow())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/users/me/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        400: {"model": ErrorResponse, "description": "The access token belongs to no session."}
    },
)
async def logout(principal: CurrentPrincipal, db: DbDep) -> Response:
    """Sign out: end the session the caller's access token belongs to, that token included."""
    await sessions.end_current(db, user_id=principal.user.id, session_id=principal.session_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/users/me/logout-all", status_code=status.HTTP_204_NO_CONTENT)
async def logout_all(principal: CurrentPrincipal, db: DbDep) -> Response:
    """Sign out everywhere: end every session of the caller, this one included."""
    await sessions.end_every_of_user(db, principal.user.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
