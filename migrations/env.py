"""Alembic environment: migrates the database named by the caller or by AUTH_DATABASE_URL."""

from alembic import context
from sqlalchemy import create_engine, pool, text
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString

import auth_service.models  # noqa: F401 (registers every table on SQLModel.metadata)
from auth_service.config import Settings
from auth_service.kit.db import STARTUP_LOCK_ID, configure_sqlite, sync_url
from auth_service.models.base import UTCDateTime

config = context.config
target_metadata = SQLModel.metadata


def _render_item(type_: str, obj: object, autogen_context: object) -> str | bool:
    # Our UTC wrapper is a plain timezone-aware DateTime in the schema.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and isinstance(obj, AutoString):
        return f"sa.String(length={obj.length})"
    return False


def _url() -> str:
    return config.attributes.get("database_url") or Settings().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=sync_url(_url()).render_as_string(hide_password=False),
        target_metadata=target_metadata,
        literal_binds=True,
        render_item=_render_item,
        compare_type=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(sync_url(_url()), poolclass=pool.NullPool, hide_parameters=True)
    configure_sqlite(engine)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_item=_render_item,
            compare_type=True,
            # SQLite alters tables by copying them; batch mode does that for us.
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Replicas that start together migrate one after another.
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:id)"), {"id": STARTUP_LOCK_ID}
                )
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
