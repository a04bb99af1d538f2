"""One mailbox, one account: look-alike addresses, the address as typed, and names.

Accounts are unique by a key (the local part NFKC + case folded); the address is kept as
typed. New local parts are ASCII unless AUTH_ALLOW_UNICODE_EMAIL is set, and even then in
one script. Names refuse control and bidirectional formatting characters.
"""

import asyncio
import io
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
import httpx
import pytest
import sqlalchemy as sa
from alembic import command
from pydantic import ValidationError

from auth_service import cli
from auth_service.kit import migrate
from auth_service.kit.db import sync_url
from auth_service.security.passwords import PasswordHasher
from tests.helpers.app import (
    ADMIN_PASSWORD,
    BCRYPT_TEST_ROUNDS,
    STRONG_PASSWORD,
    ClientFactory,
    admin_headers,
    auth_headers,
    bearer,
    login,
    make_settings,
    register,
    request_token,
    started_client,
)

pytestmark = pytest.mark.anyio

LOOK_ALIKES = [
    # (existing account, look-alike, status): 409 when it folds onto the account,
    # 422 when a new account may not have it at all.
    pytest.param("alice@example.com", "ａｌｉｃｅ@example.com", 409, id="fullwidth"),
    pytest.param("alice@example.com", "ＡＬＩＣＥ@example.com", 409, id="fullwidth-upper"),
    pytest.param("file@example.com", "ﬁle@example.com", 409, id="ligature"),
    pytest.param("strasse@example.com", "Straße@example.com", 422, id="sharp-s"),
    pytest.param("alice@example.com", "\u0430lice@example.com", 422, id="cyrillic-a"),
    pytest.param("info@example.com", "\u0130nfo@example.com", 422, id="dotted-capital-i"),
]


async def _count(client: httpx.AsyncClient) -> int:
    response = await client.get("/admin/users", headers=await admin_headers(client))
    count: int = response.json()["count"]
    return count


async def _register(client: httpx.AsyncClient, email: str, **extra: Any) -> httpx.Response:
    return await client.post("/users", json={"email": email, "password": STRONG_PASSWORD, **extra})


@pytest.mark.parametrize(("existing", "look_alike", "status"), LOOK_ALIKES)
async def test_a_look_alike_of_an_existing_account_is_refused(
    client: httpx.AsyncClient, existing: str, look_alike: str, status: int
) -> None:
    await register(client, existing)
    before = await _count(client)

    registered = await _register(client, look_alike)
    by_admin = await client.post(
        "/admin/users",
        json={"email": look_alike, "password": STRONG_PASSWORD},
        headers=await admin_headers(client),
    )

    assert registered.status_code == status, registered.text
    assert by_admin.status_code == status, by_admin.text
    assert registered.json()["detail"].startswith("email:") or status == 409
    assert await _count(client) == before


@pytest.mark.parametrize(
    ("typed", "kept"),
    [
        ("Alice.Smith@Example.COM", "Alice.Smith@example.com"),  # case kept, domain lowered
        ("Ｂｏｂ@example.com", "Bob@example.com"),  # compatibility forms become plain letters
    ],
)
async def test_the_account_keeps_the_address_as_typed(
    client: httpx.AsyncClient, typed: str, kept: str
) -> None:
    created = await _register(client, typed)
    me = await client.get("/users/me", headers=await auth_headers(client, kept.lower()))
    token = await login(client, kept, scope="openid email")
    info = await client.get("/userinfo", headers=bearer(token))

    assert created.status_code == 201, created.text
    assert created.json()["email"] == kept
    assert me.json()["email"] == kept
    assert info.json()["email"] == kept


async def test_login_with_any_folded_spelling_reaches_the_one_account(
    client: httpx.AsyncClient,
) -> None:
    account = await register(client, "Alice@example.com")

    subjects = set()
    for spelling in (
        "alice@example.com",
        "ALICE@EXAMPLE.COM",
        "ａｌｉｃｅ@example.com",
        "Ａｌｉｃｅ@ＥＸＡＭＰＬＥ.com",
    ):
        me = await client.get("/users/me", headers=await auth_headers(client, spelling))
        subjects.add(me.json()["id"])

    assert subjects == {account["id"]}


@pytest.mark.parametrize(
    "form",
    [
        "Mallory <alice@example.com>",
        '"Mallory" <alice@example.com>',
        "<alice@example.com>",
        "Ｍａｌｌｏｒｙ ＜alice@example.com＞",
    ],
)
async def test_a_display_name_form_is_refused_everywhere(
    client: httpx.AsyncClient, form: str
) -> None:
    await register(client, "alice@example.com")
    before = await _count(client)

    signed_in = await request_token(client, form)
    wrong_password = await request_token(client, "alice@example.com", "not the password")
    registered = await _register(client, form.replace("alice", "mallory"))

    assert signed_in.status_code == 400
    assert signed_in.json() == wrong_password.json()  # invalid_grant, nothing more said
    assert signed_in.json()["error"] == "invalid_grant"
    assert registered.status_code == 422
    assert registered.json()["detail"].startswith("email:")
    assert await _count(client) == before


async def test_a_local_part_over_64_octets_is_422(make_client: ClientFactory) -> None:
    # RFC 5321 §4.5.3.1.1 counts octets: 32 é are 64 octets, one more letter is 65.
    async with make_client(allow_unicode_email=True) as client:
        ascii_65 = await _register(client, "a" * 65 + "@example.com")
        utf8_65 = await _register(client, "é" * 32 + "a@example.com")
        utf8_64 = await _register(client, "é" * 32 + "@example.com")

    assert ascii_65.status_code == 422
    assert ascii_65.json()["detail"].startswith("email:")
    assert "64 octets" in ascii_65.json()["detail"]
    assert utf8_65.status_code == 422
    assert utf8_64.status_code == 201, utf8_64.text


@pytest.mark.parametrize("email", ["josé@example.com", "山田たろう@example.jp", "ольга@example.ru"])
async def test_non_ascii_local_parts_need_the_setting(
    make_client: ClientFactory, email: str
) -> None:
    async with make_client() as client:
        refused = await _register(client, email)
        count = await _count(client)
    async with make_client(allow_unicode_email=True) as client:
        allowed = await _register(client, email)
        token = await login(client, email)
        me = await client.get("/users/me", headers=bearer(token))

    assert refused.status_code == 422
    assert refused.json() == {"detail": "email: The part before the @-sign must be ASCII."}
    assert count == 1  # the bootstrap admin only
    assert allowed.status_code == 201, allowed.text
    assert me.json()["email"] == email


@pytest.mark.parametrize(
    "email",
    ["p\u0430ypal@example.com", "\u03bflga@example.com", "山田tarо@example.jp"],
    ids=["latin-cyrillic", "greek-latin", "han-latin-cyrillic"],
)
async def test_with_unicode_allowed_a_mixed_script_local_part_is_still_422(
    make_client: ClientFactory, email: str
) -> None:
    async with make_client(allow_unicode_email=True) as client:
        response = await _register(client, email)
        count = await _count(client)

    assert response.status_code == 422
    assert response.json() == {
        "detail": "email: The part before the @-sign mixes letters of different scripts."
    }
    assert count == 1


async def test_racing_look_alike_registrations_create_one_account(
    client: httpx.AsyncClient,
) -> None:
    spellings = [
        "race@example.com",
        "RACE@example.com",
        "ｒａｃｅ@example.com",
        "ＲＡＣＥ@example.com",
        "Ｒace@example.com",
        "rａce@example.com",
        "raｃe@EXAMPLE.com",
        "racｅ@example.com",
    ]
    responses = await asyncio.gather(*(_register(client, email) for email in spellings))

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * (len(spellings) - 1)
    assert await _count(client) == 2


async def test_admin_search_finds_an_address_by_any_spelling(client: httpx.AsyncClient) -> None:
    await register(client, "Alice@example.com")
    await register(client, "bob@example.com", name="Alice's friend")
    headers = await admin_headers(client)

    found = {}
    for q in ("alice@", "ALICE@", "ａｌｉｃｅ@", "Ａｌｉｃｅ@ｅｘａｍｐｌｅ"):
        response = await client.get("/admin/users", params={"q": q}, headers=headers)
        found[q] = [u["email"] for u in response.json()["data"]]

    assert all(emails == ["Alice@example.com"] for emails in found.values()), found


@pytest.fixture
def _command_line(monkeypatch: pytest.MonkeyPatch, database: str) -> Iterator[None]:
    """`auth-service` on `database`; the logging it configures is undone afterwards."""
    monkeypatch.setenv("AUTH_DATABASE_URL", database)
    monkeypatch.setenv("AUTH_SECRET_KEY", "test secret key")
    monkeypatch.setenv("AUTH_BCRYPT_ROUNDS", str(BCRYPT_TEST_ROUNDS))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


async def _command(monkeypatch: pytest.MonkeyPatch, *args: str, stdin: str = "") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    # The command runs its own event loop, as it does in a shell.
    return await anyio.to_thread.run_sync(lambda: cli.main(list(args)))


@pytest.mark.usefixtures("_command_line")
async def test_create_admin_of_a_look_alike_grants_the_existing_account(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    make_client: ClientFactory,
) -> None:
    async with make_client() as client:
        account = await register(client, "alice@example.com")

    granted = await _command(monkeypatch, "create-admin", "--email", "ＡＬＩＣＥ@example.com")
    granted_out = capsys.readouterr().out
    refused = await _command(
        monkeypatch, "create-admin", "--email", "Mallory <mallory@example.com>", stdin="x\n"
    )
    refused_err = capsys.readouterr().err
    cyrillic = await _command(
        monkeypatch, "create-admin", "--email", "\u0430dmin@example.com", stdin="x\n"
    )
    cyrillic_err = capsys.readouterr().err

    assert granted == 0
    assert granted_out == f"granted admin to alice@example.com ({account['id']})\n"
    assert refused == 1
    assert "invalid email" in refused_err
    assert cyrillic == 1
    assert "must be ASCII" in cyrillic_err
    async with make_client() as client:
        assert await _count(client) == 2


async def test_the_bootstrap_admin_address_is_folded_and_checked(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    unconfigured = make_settings(
        empty_database, bootstrap_admin_email=None, bootstrap_admin_password=None
    )
    async with started_client(unconfigured) as client:
        await register(client, "chief@example.com", password="the squatter's own passphrase")

    # A look-alike of a registered address is that address: no admin is created for it.
    async with started_client(
        make_settings(empty_database, bootstrap_admin_email="ＣＨＩＥＦ@example.com")
    ) as client:
        refused = await request_token(client, "ＣＨＩＥＦ@example.com", ADMIN_PASSWORD)

    assert refused.json()["error"] == "invalid_grant"
    for refused_address in ("Chief <chief@example.com>", "\u0441hief@example.com"):
        with pytest.raises(ValidationError, match="(?i)bootstrap_admin_email"):
            make_settings(empty_database, bootstrap_admin_email=refused_address)


_OLD_USERS = sa.table(
    "users",
    sa.column("id", sa.Uuid()),
    sa.column("email", sa.String()),
    sa.column("hashed_password", sa.String()),
    sa.column("is_active", sa.Boolean()),
    sa.column("is_verified", sa.Boolean()),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)


async def test_the_migration_keys_existing_accounts_and_disables_look_alikes(
    empty_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    command.upgrade(migrate.alembic_config(empty_database), "b00a8f8014e8")
    hashed = await PasswordHasher(rounds=BCRYPT_TEST_ROUNDS, concurrency=1).hash(STRONG_PASSWORD)
    # As the previous revision stored them: lower-cased, otherwise as typed. The fullwidth
    # look-alike is the older account; the one already spelled canonically keeps the key.
    accounts = {
        "look-alike": "ａｌｉｃｅ@example.com",
        "alice": "alice@example.com",
        "ligature": "ﬁle@example.com",
        "plain": "bob@example.com",
    }
    ids = {name: uuid.uuid4() for name in accounts}
    engine = sa.create_engine(sync_url(empty_database))
    try:
        with engine.begin() as connection:
            for n, (name, email) in enumerate(accounts.items()):
                when = datetime(2026, 1, 1, n, tzinfo=UTC)
                if connection.dialect.name == "sqlite":
                    when = when.replace(tzinfo=None)
                connection.execute(
                    _OLD_USERS.insert().values(
                        id=ids[name],
                        email=email,
                        hashed_password=hashed,
                        is_active=True,
                        is_verified=False,
                        created_at=when,
                        updated_at=when,
                    )
                )

        migrate.upgrade(empty_database)

        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT email, email_key FROM users")).all()
    finally:
        engine.dispose()

    assert dict(rows) == {
        "ａｌｉｃｅ@example.com": f"look-alike:{ids['look-alike']}",
        "alice@example.com": "alice@example.com",
        "ﬁle@example.com": "file@example.com",
        "bob@example.com": "bob@example.com",
    }
    warnings = [r.getMessage() for r in caplog.records if "look-alike" in r.getMessage()]
    assert warnings == [
        f"account {ids['look-alike']} is a look-alike of account {ids['alice']} "
        "and can no longer sign in"
    ]
    async with started_client(make_settings(empty_database)) as client:
        alice = await client.get(
            "/users/me", headers=await auth_headers(client, "ａｌｉｃｅ@example.com")
        )
        ligature = await client.get(
            "/users/me", headers=await auth_headers(client, "file@example.com")
        )
    assert alice.json()["id"] == str(ids["alice"])
    assert ligature.json()["email"] == "ﬁle@example.com"  # stored as it was typed


_UNPRINTABLE = (
    ["\x00", "\x1b", "\x7f", "\x85", "\x9b", "\u061c", "\u200e", "\u200f"]
    + [chr(c) for c in range(0x202A, 0x202F)]
    + [chr(c) for c in range(0x2066, 0x206A)]
)


@pytest.mark.parametrize(
    "name",
    [f"Eve{char}lyn" for char in _UNPRINTABLE]
    # At either end too: stripping white space there would quietly drop U+0085 (NEL, a C1
    # control that Unicode counts as white space) instead of refusing it.
    + [f"{char}Evelyn" for char in "\x1f\x85"]
    + [f"Evelyn{char}" for char in "\x1f\x85"],
    ids=repr,
)
async def test_names_refuse_control_and_bidi_characters(
    client: httpx.AsyncClient, name: str
) -> None:
    account = await register(client, "eve@example.com", name="Evelyn")
    own = await auth_headers(client, "eve@example.com")
    admin = await admin_headers(client)
    before = await _count(client)

    answers = [
        await _register(client, "eve2@example.com", name=name),
        await client.patch("/users/me", json={"name": name}, headers=own),
        await client.post(
            "/admin/users",
            json={"email": "eve3@example.com", "password": STRONG_PASSWORD, "name": name},
            headers=admin,
        ),
        await client.patch(f"/admin/users/{account['id']}", json={"name": name}, headers=admin),
    ]

    assert [a.status_code for a in answers] == [422] * 4
    assert all(a.json()["detail"].startswith("name:") for a in answers)
    assert (await client.get("/users/me", headers=own)).json()["name"] == "Evelyn"
    assert await _count(client) == before


@pytest.mark.parametrize("name", ["Zoë Ångström", "محمد عبد الله", "山田 太郎", "O'Brien-Smith"])
async def test_names_in_any_script_are_kept(client: httpx.AsyncClient, name: str) -> None:
    created = await _register(client, "named@example.com", name=name)

    assert created.status_code == 201, created.text
    assert created.json()["name"] == name
