"""Schema migrations: Alembic revisions are the only way the schema changes."""

import logging
import os
import stat
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # auth_service/

logger = logging.getLogger(__name__)


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
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
        if mode & 0o077:
            # An existing file keeps its mode; checked once per start, not per request.
            logger.warning(
                "database file %s is open to group or others (mode %04o): chmod 600 %s",
                path,
                mode,
                path,
            )
    command.upgrade(alembic_config(database_url), revision)
