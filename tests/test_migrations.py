"""The schema changes only through Alembic: models and migrations must agree."""

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from auth_service import migrate
from auth_service.db import sync_url
from auth_service.models import SQLModel


def _differences(database_url: str) -> list[object]:
    engine = create_engine(sync_url(database_url))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, SQLModel.metadata))
    finally:
        engine.dispose()


def test_migrations_match_the_models(database: str) -> None:
    assert _differences(database) == []


def test_migrations_build_the_schema_from_nothing_and_tear_it_down(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    assert _differences(empty_database) == []

    command.downgrade(migrate.alembic_config(empty_database), "base")
    engine = create_engine(sync_url(empty_database))
    try:
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    finally:
        engine.dispose()

    migrate.upgrade(empty_database)
    assert _differences(empty_database) == []
