"""The application factory: `create_app(settings)` builds a complete, independent service."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Mount

from auth_service import __version__, startup
from auth_service.access import service as access
from auth_service.accounts import router as accounts
from auth_service.clients import router as clients
from auth_service.config import (
    KEY_GENERATION_HINT,
    Settings,
    secret_key_weakness,
    warn_unknown_variables,
)
from auth_service.keys import router as keys
from auth_service.kit.documents import JSONDocument
from auth_service.kit.jobs import Job, run_every
from auth_service.oauth import discovery
from auth_service.oauth import router as oauth
from auth_service.security.crypto import load_or_create_secret_key
from auth_service.sessions import router as sessions
from auth_service.sessions import service as sessions_service
from auth_service.state import AppState
from auth_service.web import docs, handlers, health
from auth_service.web.middleware import (
    CORS,
    MAX_BODY_BYTES,
    BodySizeLimitMiddleware,
    ForwardedHeadersMiddleware,
    RequestContextMiddleware,
    UnhandledErrorMiddleware,
)
from auth_service.web.openapi import install as install_openapi
from auth_service.web.pages import Pages
from auth_service.web.styles import LIFESPAN_KEY, ErrorStyles

logger = logging.getLogger(__name__)


def jobs(settings: Settings, state: AppState) -> list[Job]:
    """Every periodic job, each capability's own (`kit.jobs`)."""
    return [
        *sessions_service.jobs(settings, state.sessionmaker),
        *access.jobs(settings, state.sessionmaker),
    ]


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


def add_routes(app: FastAPI, router: APIRouter) -> None:
    """Make the router's routes the app's own.

    FastAPI's `include_router` (0.165) keeps an included router as one nested route, matched
    twice per request (to choose the router, then its route) and again for every router
    before it: a quarter of a `GET /health/live` in `bench/hotpath.py`. Our routers carry
    their prefix and tags themselves and are included with no options, so each of their
    routes is already complete; appended, they are matched once, as the app's own routes are.
    A router's mounts (its static files, `web.pages.static_files`) carry their full path too.
    """
    for route in router.routes:
        if not isinstance(route, APIRoute | Mount):
            raise TypeError(f"{route!r} is not a path operation; include it with its options")
        app.router.routes.append(route)


def create_app(settings: Settings) -> FastAPI:
    secret_key = resolve_secret_key(settings)
    state = AppState.build(
        settings, discovery=JSONDocument.of(discovery.metadata(settings)), secret_key=secret_key
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, ErrorStyles]]:
        try:
            await startup.prepare(
                settings=settings,
                sessionmaker=state.sessionmaker,
                hasher=state.hasher,
                secret_key=secret_key,
            )
            await state.key_ring.load()
            logger.info(
                "browsers may call the API from: %s (AUTH_CORS_ORIGINS)",
                ", ".join(settings.cors_origins) or "no other origin",
            )
            # Beside the requests, never in them: a rotation or revocation made anywhere
            # reaches this worker within the interval; expired tokens go in the background.
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(state.key_ring.follow, settings.key_refresh_seconds)
                for job in jobs(settings, state):
                    tasks.start_soon(run_every, job)
                # For the server's own answers (its 503 when busy, a body's 408): lifespan
                # state reaches the server's protocol, which answers those without the app.
                yield {LIFESPAN_KEY: styles}
                tasks.cancel_scope.cancel()
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
    app.state.auth = state  # read through auth_service.web.deps.state_of
    # Each route's error style; the table for answers without a route is built from
    # the app's routes on first use, when every route below is in.
    styles = ErrorStyles(app.router.routes, Pages())

    handlers.install(app, styles)
    # Starlette tries routes in order: the cheapest and most called first.
    for router in (
        health.router,
        discovery.router,
        accounts.router,
        oauth.router,
        sessions.router,
        accounts.admin_router,
        clients.router,
        keys.router,
        docs.router,
    ):
        add_routes(app, router)
    docs.mount_assets(app)
    install_openapi(
        app,
        max_body_bytes=MAX_BODY_BYTES,
        password_min_length=settings.password_min_length,
    )

    # Added innermost first. CORS wraps every answer a middleware below it builds (413, 400,
    # the JSON 500), so a browser can read those too.
    app.add_middleware(discovery.WellKnownFastPath, state=state)
    app.add_middleware(UnhandledErrorMiddleware, styles=styles)
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=MAX_BODY_BYTES, styles=styles)
    if settings.cors_origins:
        app.add_middleware(
            CORS,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "WWW-Authenticate"],
            max_age=600,
        )
    # Outermost (but for the forwarded headers): sees every answer.
    app.add_middleware(RequestContextMiddleware, metrics=state.metrics, access_log=state.access_log)
    if settings.trusted_proxies:
        # Before anything reads the client's address (per-client limits, sessions).
        app.add_middleware(ForwardedHeadersMiddleware, trusted=settings.trusted_proxies)
    return app


def create_app_from_environment() -> FastAPI:
    """Entry point for `uvicorn --factory` and each worker of `auth-service serve`."""
    warn_unknown_variables()
    return create_app(Settings())
