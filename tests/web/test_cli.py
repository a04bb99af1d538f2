"""The `auth-service` command: create-admin, migrate and openapi."""

import io
import json
import stat
from pathlib import Path

import anyio.to_thread
import pytest

from auth_service import cli
from tests.helpers.app import (
    BCRYPT_TEST_ROUNDS,
    STRONG_PASSWORD,
    ClientFactory,
    bearer,
    login,
    register,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("restore_logging")]


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database: str) -> str:
    monkeypatch.setenv("AUTH_DATABASE_URL", database)
    monkeypatch.setenv("AUTH_SECRET_KEY", "test secret key")
    monkeypatch.setenv("AUTH_BCRYPT_ROUNDS", str(BCRYPT_TEST_ROUNDS))
    return database


def _run(monkeypatch: pytest.MonkeyPatch, *args: str, stdin: str = "") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return cli.main(list(args))


async def _run_in_thread(monkeypatch: pytest.MonkeyPatch, *args: str, stdin: str = "") -> int:
    # The command runs its own event loop, as it does in a shell.
    return await anyio.to_thread.run_sync(lambda: _run(monkeypatch, *args, stdin=stdin))


async def test_create_admin_reads_the_password_from_stdin(
    cli_env: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    make_client: ClientFactory,
) -> None:
    code = await _run_in_thread(
        monkeypatch,
        "create-admin",
        "--email",
        "Boss@Example.com",
        stdin="the chief passphrase is long\n",
    )

    assert code == 0
    assert capsys.readouterr().out.startswith("created Boss@example.com (")
    async with make_client(bootstrap_admin_email=None, bootstrap_admin_password=None) as client:
        token = await login(
            client, "boss@example.com", "the chief passphrase is long", scope="admin:users"
        )
        listing = await client.get("/admin/users", headers=bearer(token))
    assert listing.status_code == 200


async def test_create_admin_promotes_an_existing_user_without_a_password(
    cli_env: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    make_client: ClientFactory,
) -> None:
    async with make_client(bootstrap_admin_email=None, bootstrap_admin_password=None) as client:
        await register(client, "member@example.com")

    code = await _run_in_thread(monkeypatch, "create-admin", "--email", "member@example.com")

    assert code == 0
    assert capsys.readouterr().out.startswith("granted admin to member@example.com")
    async with make_client(bootstrap_admin_email=None, bootstrap_admin_password=None) as client:
        token = await login(client, "member@example.com", STRONG_PASSWORD)
        assert (await client.get("/admin/users", headers=bearer(token))).status_code == 200


def test_create_admin_refuses_a_weak_password(
    cli_env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _run(monkeypatch, "create-admin", "--email", "weak@example.com", stdin="short\n")

    assert code == 1
    assert (
        "password refused: The password must be at least 15 characters long."
        in capsys.readouterr().err
    )


def test_create_admin_has_no_password_argument(
    cli_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _run(monkeypatch, "create-admin", "--email", "a@example.com", "--password", "x" * 20)

    assert exit_info.value.code == 2


def test_migrate_creates_the_schema_in_a_new_sqlite_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nested" / "auth.db"
    monkeypatch.setenv("AUTH_DATABASE_URL", f"sqlite:///{path}")

    assert _run(monkeypatch, "migrate") == 0
    assert _run(monkeypatch, "migrate") == 0

    assert path.exists()
    assert capsys.readouterr().out.count("database is up to date") == 2


def test_openapi_prints_the_document_without_creating_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(monkeypatch, "openapi") == 0

    document = json.loads(capsys.readouterr().out)
    assert "/oauth2/token" in document["paths"]
    assert list(tmp_path.iterdir()) == []


def test_a_new_sqlite_file_is_readable_by_its_owner_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "private.db"
    monkeypatch.setenv("AUTH_DATABASE_URL", f"sqlite:///{path}")

    assert _run(monkeypatch, "migrate") == 0

    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_an_unreachable_database_is_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTH_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")

    assert _run(monkeypatch, "migrate") == 1

    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("auth-service: migrate failed: ")
    assert "Traceback" not in lines[0]


@pytest.mark.parametrize("password", ["", "s3cret-" + "y" * 2000 + "-tail"])
def test_create_admin_refuses_an_empty_or_huge_password_without_echoing_it(
    cli_env: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    password: str,
) -> None:
    code = _run(monkeypatch, "create-admin", "--email", "big@example.com", stdin=password + "\n")

    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("auth-service: password refused: ")
    assert "Traceback" not in err
    assert "yyyy" not in err
