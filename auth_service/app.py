"""The application factory: `create_app(settings)` builds a complete, independent service."""

import logging
import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from auth_service import __version__, startup
from auth_service.config import (
    KEY_GENERATION_HINT,
    Settings,
    secret_key_weakness,
    warn_unknown_variables,
)
from auth_service.db import is_unavailable
from auth_service.errors import (
    BearerError,
    DomainError,
    OAuth2Error,
    PasswordRejected,
)
from auth_service.middleware import (
    MAX_BODY_BYTES,
    BodySizeLimitMiddleware,
    RequestContextMiddleware,
    UnhandledErrorMiddleware,
)
from auth_service.openapi import install as install_openapi
from auth_service.routers import admin, docs, health, oauth, users, wellknown
from auth_service.security.crypto import load_or_create_secret_key
from auth_service.security.fair_queue import QueueRefused
from auth_service.services.keys import JSONDocument
from auth_service.state import AppState

logger = logging.getLogger(__name__)

OAUTH_PATHS = frozenset({"/oauth2/token"})
# A database outage lasts longer than a password queue burst: ask clients to back off more.
DATABASE_RETRY_AFTER_SECONDS = 5


def resolve_secret_key(settings: Settings) -> str:
    """AUTH_SECRET_KEY, else the content of AUTH_SECRET_KEY_FILE (generated on first use
    outside production; production only reads it, so every replica has the same key).

    Production refuses a weak key and a key file open to group or others; development
    only warns, because development is also what runs when AUTH_ENV is forgotten.
    """
    production = settings.env == "production"
    if settings.secret_key is not None:
        value, source = settings.secret_key.get_secret_value(), "AUTH_SECRET_KEY"
    else:
        path = settings.secret_key_file
        source = f"AUTH_SECRET_KEY_FILE {path}"
        try:
            value, mode = load_or_create_secret_key(path, create=not production)
        except FileNotFoundError:
            if not production:
                raise
            raise ValueError(f"{source} does not exist: {KEY_GENERATION_HINT}") from None
        if mode & 0o077:
            problem = f"{source} is open to group or others (mode {mode:04o}): chmod 600 {path}"
            if production:
                raise ValueError(problem)
            logger.warning("%s", problem)
    if weakness := secret_key_weakness(value):
        if production:
            raise ValueError(f"{source} {weakness}: {KEY_GENERATION_HINT}")
        logger.warning("%s %s; production would refuse it", source, weakness)
    return value


def _bearer_challenge(exc: BearerError) -> str:
    # RFC 6750 §3: Bearer realm, error, error_description, scope.
    parts = []
    if exc.error:
        # §3: error_description excludes '"' and '\\' (it is a quoted-string).
        description = exc.description.replace('"', "'").replace("\\", "/")
        parts.append(f'error="{exc.error}"')
        parts.append(f'error_description="{description}"')
    if exc.scope:
        parts.append(f'scope="{exc.scope}"')
    return "Bearer " + ", ".join(parts) if parts else "Bearer"


def _error_response(
    request: Request,
    status: int,
    description: str,
    *,
    oauth_error: str = "invalid_request",
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An RFC 6749 §5.2 body on the OAuth endpoints, `{"detail": ...}` everywhere else."""
    if request.url.path in OAUTH_PATHS:
        body = {"error": oauth_error, "error_description": description}
        headers = {"Cache-Control": "no-store", **(headers or {})}
    else:
        body = {"detail": description}
    return JSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OAuth2Error)
    async def oauth2_error(_: Request, exc: OAuth2Error) -> JSONResponse:
        headers = {"Cache-Control": "no-store"}
        if exc.status_code == 401:
            headers["WWW-Authenticate"] = 'Basic realm="auth-service"'  # RFC 6749 §5.2
        return JSONResponse(
            {"error": exc.error, "error_description": exc.description},
            status_code=exc.status_code,
            headers=headers,
        )

    @app.exception_handler(BearerError)
    async def bearer_error(_: Request, exc: BearerError) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.description},
            status_code=exc.status_code,
            headers={"WWW-Authenticate": _bearer_challenge(exc)},
        )

    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        body: dict[str, str] = {"detail": exc.description}
        if isinstance(exc, PasswordRejected):
            body["rule"] = exc.rule
        return JSONResponse(body, status_code=exc.status_code)

    @app.exception_handler(QueueRefused)
    async def password_queue_refused(request: Request, _: QueueRefused) -> JSONResponse:
        # This client holds the most places in a full password queue (RFC 6585 §4).
        return _error_response(
            request,
            429,
            "Too many password checks from this address are waiting; retry in a moment.",
            oauth_error="temporarily_unavailable",
            headers={"Retry-After": "1"},
        )

    async def database_error(request: Request, exc: Exception) -> JSONResponse:
        if not is_unavailable(exc):
            raise exc  # a bug (a constraint, a syntax error): the 500 path logs it in full
        # Expected while the database is down: one line, no traceback; /health/ready says 503.
        # The driver's message (not SQLAlchemy's, which quotes the statement) names no secret.
        cause = getattr(exc, "orig", None) or exc
        logger.warning("database unavailable: %s: %s", type(cause).__name__, cause)
        return _error_response(
            request,
            503,
            "The database is unavailable; retry in a moment.",
            oauth_error="temporarily_unavailable",  # RFC 6749 §5.2 (defined in §4.1.2.1)
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )

    # Raised by a query, a connect, or the request session's commit (deps.get_session
    # commits before the response goes out, so its errors reach these handlers).
    app.add_exception_handler(sa_exc.DBAPIError, database_error)
    app.add_exception_handler(sa_exc.TimeoutError, database_error)
    app.add_exception_handler(sqlite3.Error, database_error)  # the guards' read, unwrapped

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Never echo the input back: it may hold a password.
        errors = [
            {
                "loc": list(err.get("loc", ())),
                "msg": err.get("msg", ""),
                "type": err.get("type", ""),
            }
            for err in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"] if part != "body")
        detail = f"{where}: {first['msg']}" if where else str(first["msg"])
        return JSONResponse({"detail": detail, "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = exc.headers
        if exc.status_code == 405:  # Starlette's Allow names one route's methods, not the path's
            headers = {**(headers or {}), "Allow": _allowed_methods(request)}
        return _error_response(request, exc.status_code, str(exc.detail), headers=headers)


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at the request's path (RFC 9110 §15.5.6)."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        route_methods = route.methods
        if route_methods and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route_methods
    return ", ".join(sorted(methods))


def create_app(settings: Settings) -> FastAPI:
    secret_key = resolve_secret_key(settings)
    state = AppState.build(settings, discovery=JSONDocument.of(wellknown.metadata(settings)))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            state.keys = await startup.prepare(
                settings=settings,
                sessionmaker=state.sessionmaker,
                hasher=state.hasher,
                secret_key=secret_key,
            )
            yield
        finally:
            await state.close()

    app = FastAPI(
        title="auth-service",
        version=__version__,
        description="Authentication and identity: OAuth2 password flow, RFC 9068 access tokens.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        swagger_ui_init_oauth={"clientId": settings.default_client_id},
        # A redirect to the slashed path would be built from the request's Host header,
        # which a client chooses: no redirects, a 404 for the wrong spelling.
        redirect_slashes=False,
    )
    app.state.auth = state  # read through auth_service.state.state_of

    _install_error_handlers(app)
    for module in (health, users, wellknown, oauth, admin, docs):
        app.include_router(module.router)
    docs.mount_assets(app)
    install_openapi(
        app,
        oauth_paths=OAUTH_PATHS,
        max_body_bytes=MAX_BODY_BYTES,
        password_min_length=settings.password_min_length,
    )

    # Added innermost first. CORS wraps every answer a middleware below it builds (413, 400,
    # the JSON 500), so a browser can read those too.
    app.add_middleware(UnhandledErrorMiddleware, oauth_paths=OAUTH_PATHS)
    app.add_middleware(
        BodySizeLimitMiddleware, max_body_bytes=MAX_BODY_BYTES, oauth_paths=OAUTH_PATHS
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "WWW-Authenticate"],
            max_age=600,
        )
    # Outermost: sees every answer.
    app.add_middleware(RequestContextMiddleware, metrics=state.metrics)
    return app


def create_app_from_environment() -> FastAPI:
    """Entry point for `uvicorn --factory` and each worker of `auth-service serve`."""
    warn_unknown_variables()
    return create_app(Settings())
