"""Settings: AUTH_* variables and .env, validated once with clear one-line failures."""

import base64
import logging
import os
import secrets
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from auth_service import cli
from auth_service.app import resolve_secret_key
from auth_service.config import Settings, unknown_variables, warn_unknown_variables
from auth_service.security.crypto import load_or_create_secret_key


def test_defaults_run_on_a_local_sqlite_file() -> None:
    settings = Settings(_env_file=None)

    assert settings.database_url == "sqlite:///./auth.db"
    assert settings.issuer == "http://localhost:8000"
    assert settings.token_audience == "http://localhost:8000"
    assert settings.access_token_ttl == 900
    assert settings.password_min_length == 15
    assert settings.bcrypt_rounds == 12
    assert settings.signing_alg == "RS256"
    assert settings.registration_open is True


def test_environment_and_env_file_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("AUTH_ACCESS_TOKEN_TTL=300\nAUTH_ISSUER=https://id.example/\n")
    monkeypatch.setenv("AUTH_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("AUTH_CLIENT_IDS", '["web", "mobile"]')
    monkeypatch.setenv("AUTH_REGISTRATION_OPEN", "false")

    settings = Settings()

    assert settings.access_token_ttl == 300
    assert settings.issuer == "https://id.example"
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.client_ids == ["web", "mobile"]
    assert settings.default_client_id == "web"
    assert settings.registration_open is False


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTH_ACCESS_TOKEN_TTL", "abc"),
        ("AUTH_ACCESS_TOKEN_TTL", "5"),
        ("AUTH_BCRYPT_ROUNDS", "3"),
        ("AUTH_PASSWORD_MIN_LENGTH", "6"),
        ("AUTH_ISSUER", "not a url"),
        ("AUTH_DATABASE_URL", "mysql://localhost/db"),
        ("AUTH_DATABASE_URL", "sqlite://"),  # in-memory: every connection its own database
        ("AUTH_DATABASE_URL", "sqlite:///:memory:"),
        ("AUTH_SIGNING_ALG", "HS256"),
    ],
)
def test_invalid_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ValidationError):
        Settings(_env_file=None)


@pytest.mark.parametrize(
    ("origin", "reason"),
    [
        ("http://127.0.0.1:5173/", "did you mean 'http://127.0.0.1:5173'?"),
        ("127.0.0.1:5173", "did you mean 'http://127.0.0.1:5173'?"),
        ("localhost:5173", "did you mean 'http://localhost:5173'?"),
        ("app.example", "did you mean 'https://app.example'?"),
        ("https://app.example/login?next=1", "did you mean 'https://app.example'?"),
        ("HTTPS://App.Example", "did you mean 'https://app.example'?"),
        ("https://app.example:443", "did you mean 'https://app.example'?"),
        ("https://bücher.example", "did you mean 'https://xn--bcher-kva.example'?"),
        ("https://*.app.example", "a wildcard matches nothing here"),
        ("*, https://app.example", "a wildcard matches nothing here"),
        ("ftp://app.example", "an origin is http:// or https://"),
        ("https://app.example:99999", "an origin is http:// or https://"),
        ("null", "'null' is the origin of sandboxed pages"),
    ],
)
def test_a_cors_origin_a_browser_never_sends_is_refused_with_its_spelling(
    origin: str, reason: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, cors_origins=origin)

    [error] = refused.value.errors()
    assert error["loc"] == ("cors_origins",)
    assert reason in error["msg"]
    assert cli._describe(refused.value).startswith("AUTH_CORS_ORIGINS: ")


def test_cors_origins_as_a_browser_sends_them_are_kept() -> None:
    origins = (
        "https://app.example, http://127.0.0.1:5173, http://[::1]:8080, https://a.example:8443"
    )
    settings = Settings(_env_file=None, cors_origins=origins)
    anyone = Settings(_env_file=None, cors_origins="*")

    assert settings.cors_origins == [item.strip() for item in origins.split(",")]
    assert anyone.cors_origins == ["*"]


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"secret_key": "changeme"},
        {"secret_key": "short"},
        {"secret_key": secrets.token_urlsafe(32), "issuer": "http://id.example"},
    ],
)
def test_production_demands_a_real_secret_and_https(overrides: dict[str, str]) -> None:
    values: dict[str, Any] = {"env": "production", "issuer": "https://id.example", **overrides}
    with pytest.raises(ValidationError):
        Settings(_env_file=None, **values)


# What operators type when asked for "a random value of 32+ characters".
LOW_ENTROPY_SECRETS = ["s" * 48, "changeme" * 4, "abcd" * 12, "0123456789abcdef" * 3]


@pytest.mark.parametrize("secret", LOW_ENTROPY_SECRETS)
def test_production_refuses_a_low_entropy_secret(secret: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, env="production", issuer="https://id.example", secret_key=secret)

    message = caught.value.errors()[0]["msg"]
    assert "AUTH_SECRET_KEY has too little entropy" in message
    assert "openssl rand -base64 32" in message
    assert secret not in message


@pytest.mark.parametrize(
    "generate",
    [
        lambda: secrets.token_urlsafe(32),
        lambda: secrets.token_urlsafe(64),
        lambda: base64.b64encode(os.urandom(32)).decode(),  # `openssl rand -base64 32`
        lambda: os.urandom(32).hex(),  # `openssl rand -hex 32`
    ],
    ids=["token_urlsafe(32)", "token_urlsafe(64)", "base64 of 32 bytes", "hex of 32 bytes"],
)
def test_production_accepts_generated_secrets(generate: Callable[[], str]) -> None:
    # Many draws: the estimate must not refuse an unlucky but genuinely random value.
    for _ in range(500):
        Settings(
            _env_file=None, env="production", issuer="https://id.example", secret_key=generate()
        )


def test_a_weak_production_secret_stops_the_cli_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("AUTH_ENV", "production")
    monkeypatch.setenv("AUTH_ISSUER", "https://id.example")
    monkeypatch.setenv("AUTH_SECRET_KEY", "changeme" * 4)

    assert cli.main(["migrate"]) == 2

    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "auth-service: invalid configuration: AUTH_SECRET_KEY has too little entropy"
    )
    assert "openssl rand -base64 32" in lines[0]
    assert not (tmp_path / "auth.db").exists()


def test_development_warns_about_a_secret_production_would_refuse(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(_env_file=None, secret_key="changeme" * 4)

    with caplog.at_level(logging.WARNING):
        assert resolve_secret_key(settings) == "changeme" * 4

    assert "AUTH_SECRET_KEY has too little entropy" in caplog.text
    assert "production would refuse it" in caplog.text
    assert "changeme" not in caplog.text


def test_development_is_quiet_about_its_generated_key(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        resolve_secret_key(Settings(_env_file=None))

    assert caplog.records == []


def test_unknown_auth_variables_are_reported_as_warnings(caplog: pytest.LogCaptureFixture) -> None:
    environ = {"AUTH_ISSUER": "x", "AUTH_ISSUR": "typo", "HOME": "/root"}

    with caplog.at_level(logging.WARNING):
        warn_unknown_variables(environ)

    assert unknown_variables(environ) == ["AUTH_ISSUR"]
    assert "AUTH_ISSUR" in caplog.text


def test_invalid_configuration_stops_the_cli_with_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_")}
    env["AUTH_ACCESS_TOKEN_TTL"] = "abc"

    result = subprocess.run(
        [sys.executable, "-m", "auth_service", "migrate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("auth-service: invalid configuration: AUTH_ACCESS_TOKEN_TTL:")
    assert not (tmp_path / "auth.db").exists()


def test_generated_secret_key_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / ".auth-secret-key"

    first, _ = load_or_create_secret_key(path)
    second, _ = load_or_create_secret_key(path)

    assert first == second
    assert len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_unknown_names_in_the_env_file_are_reported_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / ".env").write_text("AUTH_SECRETKEY=abc\nAUTH_ISSUER=http://x.example\n")

    with caplog.at_level(logging.WARNING):
        warn_unknown_variables()

    assert "AUTH_SECRETKEY" in caplog.text
    assert "AUTH_ISSUER" not in caplog.text
