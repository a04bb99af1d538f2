"""The `auth-service` command (also `python -m auth_service`)."""

import argparse
import asyncio
import contextlib
import getpass
import json
import logging.config
import os
import secrets
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from alembic.util.exc import CommandError as AlembicError
from pydantic import SecretStr, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from auth_service.config import ENV_PREFIX, Settings, warn_unknown_variables
from auth_service.errors import EmailRefused, PasswordRejected
from auth_service.keys.service import SigningKeyUnreadable
from auth_service.web.observability import logging_config

PROG = "auth-service"
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

logger = logging.getLogger(__name__)


class CommandError(Exception):
    """A failure reported as one line on stderr, exit status 1."""


def _fail(message: str, code: int = 2) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


def _describe(error: ValidationError) -> str:
    """All configuration errors on one line, named by their environment variable."""
    parts = []
    for item in error.errors():
        loc = item.get("loc") or ()
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{ENV_PREFIX}{str(loc[0]).upper()}: {message}" if loc else message)
    return "; ".join(parts)


def _settings() -> Settings:
    return Settings()


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from auth_service import startup
    from auth_service.app import resolve_secret_key
    from auth_service.kit import migrate
    from auth_service.web.server import uvicorn_options

    secret_key = resolve_secret_key(settings)  # generated once here, read by every worker
    migrate.upgrade(settings.database_url)
    try:
        asyncio.run(startup.prepare_database(settings, secret_key=secret_key))
    except PasswordRejected as exc:
        raise CommandError(f"AUTH_BOOTSTRAP_ADMIN_PASSWORD refused: {exc.description}") from None
    # The issuer is what tokens name and what other services must be given, whatever address
    # the server listens on (with `make run`: http://localhost:8000 on 127.0.0.1).
    host = f"[{args.host}]" if ":" in args.host else args.host
    logger.info(
        "issuer %s (AUTH_ISSUER: the URL other services verify tokens against), "
        "listening on http://%s:%d",
        settings.issuer,
        host,
        args.port,
    )
    with contextlib.ExitStack() as cleanup:
        if args.workers > 1:
            # Workers write metric samples to files that /metrics adds up, whichever worker
            # answers. Samples of an earlier run must not count: start from an empty directory.
            if directory := os.environ.get(METRICS_DIR_VARIABLE):
                for stale in Path(directory).glob("*.db"):
                    stale.unlink()
            else:
                temporary = tempfile.TemporaryDirectory(prefix="auth-service-metrics-")
                os.environ[METRICS_DIR_VARIABLE] = cleanup.enter_context(temporary)
        uvicorn.run(
            "auth_service.app:create_app_from_environment",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_config=logging_config(settings.log_level),
            access_log=False,
            **uvicorn_options(settings),  # limits and trusted proxies: docs/operations/exposure.md
        )
    return 0


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from auth_service.kit import migrate

    migrate.upgrade(settings.database_url)
    print("database is up to date")
    return 0


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Password (again): "):
        raise CommandError("the passwords differ")
    return first


async def _create_admin(settings: Settings, email: str, read_password: Callable[[], str]) -> str:
    from auth_service.accounts import service as accounts
    from auth_service.kit.db import create_engine, create_sessionmaker, transaction
    from auth_service.security.passwords import PasswordHasher

    engine = create_engine(settings.database_url)
    sessionmaker = create_sessionmaker(engine)
    hasher = PasswordHasher(rounds=settings.bcrypt_rounds, concurrency=1)
    try:
        async with transaction(sessionmaker) as db:
            existing = await accounts.get_by_email(db=db, email=email)
        if existing is None:  # refuse the address before asking for a password
            accounts.check_new_email(email, allow_unicode=settings.allow_unicode_email)
        # The prompt waits outside any transaction; an existing user needs no password.
        password = None if existing else read_password()
        async with transaction(sessionmaker) as db:
            user, created = await accounts.ensure_admin(
                db=db,
                hasher=hasher,
                min_length=settings.password_min_length,
                email=email,
                password=password,
                allow_unicode_email=settings.allow_unicode_email,
            )
        return f"{'created' if created else 'granted admin to'} {user.email} ({user.id})"
    finally:
        hasher.close()
        await engine.dispose()


def _create_admin_command(settings: Settings, args: argparse.Namespace) -> int:
    from auth_service.accounts.schemas import UserCreate
    from auth_service.kit import migrate

    try:
        email = UserCreate.model_validate({"email": args.email, "password": "-"}).email
    except ValidationError as exc:
        raise CommandError(f"invalid email: {exc.errors()[0]['msg']}") from None
    migrate.upgrade(settings.database_url)
    try:
        print(asyncio.run(_create_admin(settings, email, _read_password)))
    except EmailRefused as exc:
        raise CommandError(f"invalid email: {exc.reason}") from None
    except PasswordRejected as exc:
        raise CommandError(f"password refused: {exc.description}") from None
    return 0


async def _create_client(settings: Settings, args: argparse.Namespace) -> str:
    from auth_service.clients import service as clients
    from auth_service.kit.db import create_engine, create_sessionmaker, transaction

    engine = create_engine(settings.database_url)
    try:
        async with transaction(create_sessionmaker(engine)) as db:
            client, secret = await clients.create_client(
                db=db,
                name=args.name,
                confidential=not args.public,
                scopes=args.scopes,
                grant_types=args.grant_types,
                audiences=args.audiences,
            )
    finally:
        await engine.dispose()
    lines = [f"client_id: {client.client_id}"]
    if secret is not None:
        lines.append(f"client_secret: {secret}")
        lines.append("The secret is shown this once: only its digest is kept.")
    return "\n".join(lines)


def _create_client_command(settings: Settings, args: argparse.Namespace) -> int:
    from auth_service.clients.schemas import ClientCreate
    from auth_service.errors import DomainError
    from auth_service.kit import migrate

    args.grant_types = args.grant_types or ["client_credentials"]
    # The API's own rules for names, scopes, grant types and audiences.
    try:
        ClientCreate.model_validate(
            {
                "name": args.name,
                "confidential": not args.public,
                "scopes": args.scopes,
                "grant_types": args.grant_types,
                "audiences": args.audiences,
            }
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise CommandError(f"invalid {where}: {error['msg']}") from None
    migrate.upgrade(settings.database_url)
    try:
        print(asyncio.run(_create_client(settings, args)))
    except DomainError as exc:
        raise CommandError(exc.description) from None
    return 0


async def _rotate_keys(settings: Settings, secret_key: str) -> str:
    from auth_service.keys import service as keys
    from auth_service.kit.db import create_engine, create_sessionmaker, transaction

    engine = create_engine(settings.database_url)
    try:
        async with transaction(create_sessionmaker(engine)) as db:
            key = await keys.rotate(
                db=db,
                alg=settings.signing_alg,
                secret_key=secret_key,
                access_token_ttl=settings.access_token_ttl,
            )
    finally:
        await engine.dispose()
    retire = key.signs_from + keys.overlap(settings.access_token_ttl)
    return (
        f"next signing key {key.kid} ({key.alg}) is in the JWKS now and signs from "
        f"{key.signs_from.isoformat(timespec='seconds')}; the current key signs until then, "
        f"and earlier keys verify until {retire.isoformat(timespec='seconds')}, then retire"
    )


def _rotate_keys_command(settings: Settings, _args: argparse.Namespace) -> int:
    from auth_service.app import resolve_secret_key
    from auth_service.errors import DomainError
    from auth_service.kit import migrate

    secret_key = resolve_secret_key(settings)
    migrate.upgrade(settings.database_url)
    try:
        print(asyncio.run(_rotate_keys(settings, secret_key)))
    except DomainError as exc:  # a next key is already waiting to sign
        raise CommandError(exc.description) from None
    return 0


def _openapi(settings: Settings, _args: argparse.Namespace) -> int:
    from auth_service.app import create_app

    # The schema needs no real secret; never create a key file just to print it.
    throwaway = SecretStr(secrets.token_urlsafe(32))
    app = create_app(settings.model_copy(update={"secret_key": throwaway}))
    print(json.dumps(app.openapi(), indent=2))
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be a TCP port (0-65535)")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="migrate the database, then serve HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_port, default=8000)
    serve.add_argument(
        "--workers", type=_positive, default=1, help="processes sharing keys and data"
    )
    serve.set_defaults(handler=_serve)
    commands.add_parser("migrate", help="apply database migrations").set_defaults(handler=_migrate)
    admin = commands.add_parser(
        "create-admin",
        help="create an admin (password from stdin or a prompt), or make a user admin",
    )
    admin.add_argument("--email", required=True)
    admin.set_defaults(handler=_create_admin_command)
    client = commands.add_parser(
        "create-client",
        help="register an OAuth client and print its id and secret (shown once)",
    )
    client.add_argument("--name", required=True)
    client.add_argument(
        "--scope", dest="scopes", action="append", default=[], help="a scope it may have; repeat"
    )
    client.add_argument(
        "--grant-type",
        dest="grant_types",
        action="append",
        choices=["client_credentials", "password", "refresh_token"],
        help="a grant it may use; repeat (default: client_credentials)",
    )
    client.add_argument(
        "--audience", dest="audiences", action="append", default=[], help="an API; repeat"
    )
    client.add_argument(
        "--public", action="store_true", help="a login form or app that keeps no secret"
    )
    client.set_defaults(handler=_create_client_command)
    commands.add_parser(
        "rotate-keys",
        help="publish a new signing key, which signs once verifiers have fetched it; "
        "running workers switch to it by themselves",
    ).set_defaults(handler=_rotate_keys_command)
    commands.add_parser("openapi", help="print the OpenAPI document").set_defaults(handler=_openapi)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings()
    except ValidationError as exc:
        return _fail(f"invalid configuration: {_describe(exc)}")
    logging.config.dictConfig(logging_config(settings.log_level))
    warn_unknown_variables()
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    try:
        return handler(settings, args)
    except CommandError as exc:
        return _fail(str(exc), 1)
    except (SigningKeyUnreadable, SQLAlchemyError, AlembicError, OSError, ValueError) as exc:
        # An unreachable database, an unreadable key file...: the reason, not a traceback.
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return _fail(f"{args.command} failed: {first_line}", 1)
