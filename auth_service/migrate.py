"""Schema migrations: Alembic revisions are the only way the schema changes."""

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

_PACKAGE_DIR = Path(__file__).resolve().parent


def script_location() -> Path:
    """`migrations/` of a source checkout, or the copy a wheel carries inside the package."""
    for candidate in (_PACKAGE_DIR / "_migrations", _PACKAGE_DIR.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError("the migrations directory is missing from this installation")


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(url.database)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Password hashes live here: readable by the service's user only (SQLite gives its
        # -wal and -shm files the same mode).
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    command.upgrade(alembic_config(database_url), revision)
