"""The deployment files: docker-compose.yml agrees with the code and the docs, and
`docker build` sends what the Dockerfile copies and nothing that holds a secret, a database
or a cache.

No Docker engine is needed: the files are read with the rules Docker applies to them.
"""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.pool import QueuePool

from auth_service.config import Settings, unknown_variables
from auth_service.kit.db import create_engine
from auth_service.kit.reads import POSTGRES_CONNECTIONS

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return compose


def _service_environment(
    monkeypatch: pytest.MonkeyPatch, service: str, host: dict[str, str]
) -> dict[str, str]:
    """The service's environment as compose hands it over, with `host` as the variables of
    the shell that runs compose; set in this process, where Settings reads it."""

    def substitute(match: re.Match[str]) -> str:
        name, kind, text = match.groups()
        if value := host.get(name):
            return value
        assert kind != "?", f"compose stops: {name} is required"
        return text or ""

    variable = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")
    environment = {
        name: variable.sub(substitute, str(value))
        for name, value in _compose()["services"][service]["environment"].items()
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


def _docs(page: str) -> str:
    """A page of docs/ with its line breaks as spaces, so a phrase can be found across lines."""
    return " ".join((ROOT / "docs" / page).read_text().split())


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    git = shutil.which("git")
    assert git is not None, "these tests read the checkout with git"
    return subprocess.run(  # noqa: S603 (a fixed command line)
        [git, *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def _dockerignore_rules() -> list[tuple[re.Pattern[str], bool]]:
    """(pattern, is an exception) per line of .dockerignore, compiled as Docker's
    patternmatcher does: `**` spans directories, `*` and `?` stay within one name."""
    path = ROOT / ".dockerignore"
    rules: list[tuple[re.Pattern[str], bool]] = []
    for line in path.read_text().splitlines() if path.exists() else []:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")
        assert not set(pattern) & set("[\\"), f"{line}: classes and escapes are not read here"
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                i += 2
                if i == len(pattern):
                    regex += ".*"
                else:
                    regex += "(.*/)?"
                    i += pattern.startswith("/", i)
                continue
            regex += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
        rules.append((re.compile(f"^{regex}$"), exception))
    return rules


def _excluded(path: str) -> bool:
    """Whether `docker build` leaves `path` out of its context: the last rule that matches
    the path or one of its parent directories decides."""
    parts = path.split("/")
    candidates = [path, *("/".join(parts[: i + 1]) for i in range(len(parts) - 1))]
    excluded = False
    for pattern, exception in _dockerignore_rules():
        if excluded == exception and any(pattern.match(c) for c in candidates):
            excluded = not exception
    return excluded


def _copied_sources() -> list[str]:
    """The context paths the Dockerfile's COPY lines name (not those from another stage)."""
    sources: list[str] = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if not words or words[0].upper() != "COPY":
            continue
        if any(w.startswith("--from") for w in words):
            continue
        sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


def test_build_context_holds_every_file_the_dockerfile_copies() -> None:
    sources = _copied_sources()
    assert {"requirements.lock", "pyproject.toml", "auth_service", "migrations"} <= set(sources)
    for source in sources:
        files = _git("ls-files", "--", source).stdout.split()
        assert files, f"COPY {source}: nothing tracked there"
        assert [f for f in files if _excluded(f)] == [], f"COPY {source}"


def test_build_context_leaves_out_environments_caches_databases_and_keys() -> None:
    kept_out = [
        ".venv/bin/python",
        ".git",  # a worktree's .git is a file
        ".git/HEAD",
        ".env",
        "auth_service/.env",
        ".auth-secret-key",
        "..auth-secret-key.3f0c9a.tmp",  # a key file being created
        "auth_service/.auth-secret-key",
        "auth.db",
        "auth.db-wal",
        "auth.db-shm",
        "auth_service/auth.db",
        "migrations/auth.sqlite3",
        "auth_service/__pycache__/app.cpython-311.pyc",
        "migrations/versions/__pycache__/x.cpython-311.pyc",
        ".pytest_cache/v/cache/nodeids",
        ".mypy_cache/3.11/cache.db",
        ".ruff_cache/CACHEDIR.TAG",
        ".import_linter_cache/x.json",
        ".coverage",
        ".coverage.host.1234.567890",
        "htmlcov/index.html",
        ".schemathesis/report.json",
        "tests/conftest.py",
        "bench/figures.json",
        "openapi.json",
        "build/lib/auth_service/app.py",
        "dist/auth_service-0.1.0-py3-none-any.whl",
    ]
    assert [p for p in kept_out if not _excluded(p)] == []


def test_postgres_holds_every_worker_of_the_compose_file() -> None:
    engine = create_engine("postgresql://auth@db/auth")  # connects to nothing yet
    pool = engine.sync_engine.pool
    assert isinstance(pool, QueuePool)
    # The pool keeps max_overflow in a private attribute only.
    per_worker = pool.size() + pool._max_overflow + POSTGRES_CONNECTIONS
    for page in ("operations/database-sizing.md", "guides/postgresql-and-workers.md"):
        assert f"Each worker opens up to {per_worker} connections" in _docs(page)

    services = _compose()["services"]
    command = services["auth"]["command"]
    workers = int(command[command.index("--workers") + 1])
    db_command = services["db"].get("command", [])
    options = dict(
        value.split("=", 1)
        for flag, value in zip(db_command, db_command[1:], strict=False)
        if flag == "-c"
    )
    max_connections = int(options.get("max_connections", 100))  # PostgreSQL's default
    # Every worker at its limit, and room for one more process (create-admin, psql).
    assert workers * per_worker + per_worker <= max_connections


def test_production_service_reads_its_key_from_a_compose_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compose = _compose()
    auth = compose["services"]["auth"]
    assert "AUTH_SECRET_KEY" not in auth["environment"]
    assert auth.get("secrets") == ["auth_secret_key"]  # mounted at /run/secrets/auth_secret_key
    key_file = compose["secrets"]["auth_secret_key"]["file"]  # a file, not a variable
    # The key file beside docker-compose.yml is committed nowhere and built into nothing.
    assert _git("check-ignore", "--quiet", "--no-index", key_file).returncode == 0
    assert _excluded(key_file.removeprefix("./"))

    host = {"AUTH_ISSUER": "https://id.example.com"}
    environment = _service_environment(monkeypatch, "auth", host)
    assert unknown_variables(environment) == []
    settings = Settings()
    assert settings.env == "production"
    assert settings.secret_key is None
    assert settings.secret_key_file == Path("/run/secrets/auth_secret_key")


def test_dev_profile_serves_localhost_without_tls_or_a_prepared_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dev = _compose()["services"]["auth-dev"]
    assert dev["profiles"] == ["dev"]
    assert "secrets" not in dev
    assert "depends_on" not in dev  # SQLite: `up auth-dev` starts it alone
    assert [p.rsplit(":", 2)[-2:] for p in dev["ports"]] == [["8000", "8000"]]
    # Compose resolves every service's variables before choosing by profile: a required
    # one (${VAR:?}) in the production service would stop the development command too.
    assert not re.search(r"\$\{\w+:?\?", yaml.safe_dump(_compose()))
    assert "docker compose --profile dev up auth-dev" in _docs("operations/deployment.md")

    environment = _service_environment(monkeypatch, "auth-dev", host={})
    assert unknown_variables(environment) == []
    settings = Settings()
    assert settings.env == "development"
    assert settings.issuer == "http://localhost:8000"
    assert settings.secret_key is None  # generated in the volume on first start


def test_production_service_without_an_issuer_stops_with_its_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _service_environment(monkeypatch, "auth", host={})
    with pytest.raises(ValueError, match="AUTH_ISSUER must be an https URL in production"):
        Settings()
