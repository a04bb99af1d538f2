"""Files that hold secrets: the secret key file (the SQLite file: tests/web/test_migrations.py).

The suite runs as root, who can read any file: these tests look at permission bits, which
say who else could, not at whether a read succeeds.
"""

import logging
import os
import secrets
import stat
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from auth_service.app import resolve_secret_key
from auth_service.config import Settings
from auth_service.security.crypto import load_or_create_secret_key

OPEN_MODES = [0o640, 0o604, 0o620]


def _settings(env: str, path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"env": env, "secret_key_file": path}
    if env == "production":
        values["issuer"] = "https://id.example"
    return Settings(_env_file=None, **values, **overrides)


def _key_file(path: Path, value: str, mode: int) -> Path:
    path.write_text(value + "\n")
    path.chmod(mode)
    return path


def test_production_reads_the_key_from_a_private_file(tmp_path: Path) -> None:
    value = secrets.token_urlsafe(32)
    path = _key_file(tmp_path / "auth-secret-key", value, 0o600)

    assert resolve_secret_key(_settings("production", path)) == value


@pytest.mark.parametrize("mode", OPEN_MODES, ids=oct)
def test_production_refuses_a_key_file_open_to_group_or_others(tmp_path: Path, mode: int) -> None:
    path = _key_file(tmp_path / "auth-secret-key", secrets.token_urlsafe(32), mode)

    with pytest.raises(ValueError, match="is open to group or others") as caught:
        resolve_secret_key(_settings("production", path))

    assert str(caught.value) == (
        f"AUTH_SECRET_KEY_FILE {path} is open to group or others (mode {mode:04o}): "
        f"chmod 600 {path}"
    )


def test_production_refuses_a_weak_key_in_its_file(tmp_path: Path) -> None:
    path = _key_file(tmp_path / "auth-secret-key", "s" * 48, 0o600)

    with pytest.raises(ValueError, match="has too little entropy") as caught:
        resolve_secret_key(_settings("production", path))

    assert f"AUTH_SECRET_KEY_FILE {path}" in str(caught.value)
    assert "openssl rand -base64 32" in str(caught.value)


def test_production_never_generates_a_key_file(tmp_path: Path) -> None:
    path = tmp_path / "auth-secret-key"

    with pytest.raises(ValueError, match="does not exist"):
        resolve_secret_key(_settings("production", path))

    assert not path.exists()


def test_production_without_a_key_or_a_named_file_is_refused() -> None:
    with pytest.raises(ValueError, match=r"AUTH_SECRET_KEY \(or AUTH_SECRET_KEY_FILE\)"):
        Settings(_env_file=None, env="production", issuer="https://id.example")


def test_serve_stops_with_one_line_on_an_open_key_file(tmp_path: Path) -> None:
    path = _key_file(tmp_path / "auth-secret-key", secrets.token_urlsafe(32), 0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_")}
    env |= {
        "AUTH_ENV": "production",
        "AUTH_ISSUER": "https://id.example",
        "AUTH_SECRET_KEY_FILE": str(path),
        "AUTH_DATABASE_URL": f"sqlite:///{tmp_path / 'auth.db'}",
    }

    result = subprocess.run(
        [sys.executable, "-m", "auth_service", "serve", "--port", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"auth-service: serve failed: AUTH_SECRET_KEY_FILE {path} is open to group or "
        f"others (mode 0644): chmod 600 {path}"
    ]
    assert not (tmp_path / "auth.db").exists()


@pytest.mark.parametrize("mode", OPEN_MODES, ids=oct)
def test_development_warns_about_a_key_file_open_to_group_or_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int
) -> None:
    value = secrets.token_urlsafe(32)
    path = _key_file(tmp_path / ".auth-secret-key", value, mode)

    with caplog.at_level(logging.WARNING):
        assert resolve_secret_key(_settings("development", path)) == value

    assert f"AUTH_SECRET_KEY_FILE {path} is open to group or others" in caplog.text
    assert f"chmod 600 {path}" in caplog.text
    assert value not in caplog.text


@pytest.mark.parametrize("env", ["development", "production"])
def test_a_symlink_at_the_key_path_is_not_followed(tmp_path: Path, env: str) -> None:
    planted = _key_file(tmp_path / "known-to-the-attacker", secrets.token_urlsafe(32), 0o600)
    path = tmp_path / ".auth-secret-key"
    path.symlink_to(planted)

    with pytest.raises(ValueError, match="is a symbolic link"):
        resolve_secret_key(_settings(env, path))


def test_a_dangling_symlink_at_the_key_path_is_not_written_through(tmp_path: Path) -> None:
    target = tmp_path / "where-the-attacker-reads"
    path = tmp_path / ".auth-secret-key"
    path.symlink_to(target)

    with pytest.raises(ValueError, match="is a symbolic link"):
        load_or_create_secret_key(path)

    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".auth-secret-key"]


def test_concurrent_first_starts_agree_on_one_complete_key(tmp_path: Path) -> None:
    starts = 16
    for attempt in range(20):
        path = tmp_path / str(attempt) / ".auth-secret-key"
        path.parent.mkdir()
        barrier = threading.Barrier(starts)

        def start(path: Path = path, barrier: threading.Barrier = barrier) -> str:
            barrier.wait()
            value, _ = load_or_create_secret_key(path)
            return value

        with ThreadPoolExecutor(starts) as pool:
            values = set(pool.map(lambda _: start(), range(starts)))

        assert values == {path.read_text().strip()}
        assert len(values.pop()) == 64  # all of token_urlsafe(48): nobody read it half-written
        assert [p.name for p in path.parent.iterdir()] == [".auth-secret-key"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
