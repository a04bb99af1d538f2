"""Liveness, readiness and metrics for operators."""

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from auth_service.kit.db import ping
from auth_service.web.deps import state_of

router = APIRouter(tags=["operations"])

READY_TIMEOUT_SECONDS = 2.0


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get("/health/ready", responses={503: {"description": "The database is unreachable."}})
async def ready(request: Request) -> JSONResponse:
    """Ready to serve: the database answers."""
    try:
        with anyio.fail_after(READY_TIMEOUT_SECONDS):
            await ping(state_of(request).engine)
    except Exception:  # any failure to reach the database means "not ready"
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition format."""
    body, content_type = state_of(request).metrics.render()
    return Response(body, media_type=content_type)
