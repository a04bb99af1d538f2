"""The schema changes only through Alembic: models and migrations must agree; a migrated SQLite
file is its owner's alone."""

import logging
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    String,
    column,
    create_engine,
    inspect,
    select,
    table,
)
from sqlmodel import SQLModel

import auth_service.models  # noqa: F401 (puts every table on SQLModel.metadata)
from auth_service.kit import migrate
from auth_service.kit.db import sync_url


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


def test_an_upgrade_keeps_the_role_powers_of_clients_that_manage_users(
    empty_database: str,
) -> None:
    """Handing out roles came with `admin:users` before it became `admin:roles`."""
    migrate.upgrade(empty_database, "7d3e2f1a9c58")
    engine = create_engine(sync_url(empty_database))
    clients = table(
        "clients",
        column("client_id", String()),
        column("name", String()),
        column("is_confidential", Boolean()),
        column("scopes", JSON()),
        column("grant_types", JSON()),
        column("audiences", JSON()),
        column("redirect_uris", JSON()),
        column("is_active", Boolean()),
        column("created_at", DateTime(timezone=True)),
        column("updated_at", DateTime(timezone=True)),
    )
    lists: dict[str, list[str]] = {"grant_types": [], "audiences": [], "redirect_uris": []}
    now = datetime.now(UTC)
    try:
        with engine.begin() as connection:
            for client_id, scopes in (("login", ["account", "admin:users"]), ("svc", ["x:read"])):
                connection.execute(
                    clients.insert().values(
                        client_id=client_id,
                        name=client_id,
                        is_confidential=False,
                        scopes=scopes,
                        is_active=True,
                        created_at=now,
                        updated_at=now,
                        **lists,
                    )
                )
        scopes_now = select(clients.c.client_id, clients.c.scopes).order_by(clients.c.client_id)

        migrate.upgrade(empty_database)
        with engine.connect() as connection:
            upgraded = connection.execute(scopes_now).all()
        command.downgrade(migrate.alembic_config(empty_database), "7d3e2f1a9c58")
        with engine.connect() as connection:
            downgraded = connection.execute(scopes_now).all()
    finally:
        engine.dispose()

    assert upgraded == [("login", ["account", "admin:roles", "admin:users"]), ("svc", ["x:read"])]
    assert downgraded == [("login", ["account", "admin:users"]), ("svc", ["x:read"])]


@pytest.mark.parametrize("mode", [0o644, 0o660], ids=oct)
def test_migrating_an_sqlite_file_open_to_group_or_others_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int
) -> None:
    path = tmp_path / "auth.db"
    path.touch()
    path.chmod(mode)

    with caplog.at_level(logging.WARNING, logger="auth_service.kit.migrate"):
        migrate.upgrade(f"sqlite:///{path}")

    warnings = [r.getMessage() for r in caplog.records if r.name == "auth_service.kit.migrate"]
    assert warnings == [
        f"database file {path} is open to group or others (mode {mode:04o}): chmod 600 {path}"
    ]


def test_migrating_a_new_or_private_sqlite_file_is_quiet(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "auth.db"

    with caplog.at_level(logging.WARNING, logger="auth_service.kit.migrate"):
        migrate.upgrade(f"sqlite:///{path}")
        migrate.upgrade(f"sqlite:///{path}")

    assert [r for r in caplog.records if r.name == "auth_service.kit.migrate"] == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
