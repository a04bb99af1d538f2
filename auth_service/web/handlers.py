"""The app's exception handlers: each turns what was raised into a `ServiceError`, which
renders its own answer (errors.py) in the style of the request's route (`styles.py`).
Nothing else in the app builds an error body."""

import logging
import sqlite3

import psycopg
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException
from starlette.routing import Match

from auth_service.errors import HTTPError, InvalidInput, RetryLater, ServiceError
from auth_service.kit.db import is_unavailable
from auth_service.kit.fair_queue import QueueRefused
from auth_service.web.styles import ErrorStyles

logger = logging.getLogger(__name__)

# A database outage lasts longer than a password queue burst: ask clients to back off more.
DATABASE_RETRY_AFTER_SECONDS = 5
QUEUE_RETRY_AFTER_SECONDS = 1


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at the request's path (RFC 9110 §15.5.6)."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        route_methods = route.methods
        if route_methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route_methods
    return ", ".join(sorted(methods))


def install(app: FastAPI, styles: ErrorStyles) -> None:
    def _respond(request: Request, error: ServiceError) -> Response:
        answer = styles.answer(error, request.scope)
        return Response(
            answer.body,
            status_code=answer.status,
            headers=answer.headers,
            media_type=answer.media_type,
        )

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> Response:
        return _respond(request, exc)

    @app.exception_handler(QueueRefused)
    async def password_queue_refused(request: Request, _: QueueRefused) -> Response:
        # This client holds the most places in a full password queue (RFC 6585 §4).
        message = "Too many password checks from this address are waiting; retry in a moment."
        return _respond(
            request, RetryLater(message, status=429, retry_after=QUEUE_RETRY_AFTER_SECONDS)
        )

    async def database_error(request: Request, exc: Exception) -> Response:
        if not is_unavailable(exc):
            raise exc  # a bug (a constraint, a syntax error): the 500 path logs it in full
        # Expected while the database is down: one line, no traceback; /health/ready says 503.
        # The driver's message (not SQLAlchemy's, which quotes the statement) names no secret.
        cause = getattr(exc, "orig", None) or exc
        logger.warning("database unavailable: %s: %s", type(cause).__name__, cause)
        message = "The database is unavailable; retry in a moment."
        return _respond(
            request, RetryLater(message, status=503, retry_after=DATABASE_RETRY_AFTER_SECONDS)
        )

    # Raised by a query, a connect, or the request's commit (web.deps.get_db
    # commits before the response goes out, so its errors reach these handlers).
    app.add_exception_handler(sa_exc.DBAPIError, database_error)
    app.add_exception_handler(sa_exc.TimeoutError, database_error)
    # The reads of user_state.py, straight through the driver: its errors come unwrapped.
    app.add_exception_handler(sqlite3.Error, database_error)
    app.add_exception_handler(psycopg.Error, database_error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        # Never echo the input back: it may hold a password.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return _respond(request, InvalidInput(errors))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette's Allow names one route's methods, not the path's
            headers["Allow"] = _allowed_methods(request)
        return _respond(request, HTTPError(exc.status_code, str(exc.detail), headers=headers))
