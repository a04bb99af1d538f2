"""The caller's own account: /users/me, password change, /userinfo."""

import anyio
import httpx
import pytest

from auth_service.accounts import service as accounts
from auth_service.security.passwords import PasswordHasher
from tests.helpers.app import (
    STRONG_PASSWORD,
    ClientFactory,
    app_state,
    auth_headers,
    bearer,
    login,
    register,
    request_token,
)
from tests.helpers.hashers import DelegatingHasher

pytestmark = pytest.mark.anyio

NEW_PASSWORD = "a completely different passphrase"


async def test_me_returns_the_callers_account(client: httpx.AsyncClient) -> None:
    created = await register(client, "me@example.com", name="Mia")

    response = await client.get("/users/me", headers=await auth_headers(client, "me@example.com"))

    assert response.status_code == 200
    assert response.json() == created


async def test_patch_me_changes_the_name_only(client: httpx.AsyncClient) -> None:
    await register(client, "named@example.com", name="Old")
    headers = await auth_headers(client, "named@example.com")

    renamed = await client.patch("/users/me", json={"name": "  New Name  "}, headers=headers)
    refused = await client.patch("/users/me", json={"email": "x@example.com"}, headers=headers)

    assert renamed.status_code == 200
    assert renamed.json()["name"] == "New Name"
    assert refused.status_code == 422
    me = await client.get("/users/me", headers=headers)
    assert me.json()["email"] == "named@example.com"
    assert me.json()["name"] == "New Name"


async def test_password_change_ends_earlier_tokens(client: httpx.AsyncClient) -> None:
    await register(client, "change@example.com")
    old_token = await login(client, "change@example.com")

    response = await client.post(
        "/users/me/password",
        json={"current_password": STRONG_PASSWORD, "new_password": NEW_PASSWORD},
        headers=bearer(old_token),
    )

    assert response.status_code == 204
    assert (await client.get("/users/me", headers=bearer(old_token))).status_code == 401
    new_token = await login(client, "change@example.com", NEW_PASSWORD)
    assert (await client.get("/users/me", headers=bearer(new_token))).status_code == 200
    old_login = await request_token(client, "change@example.com", STRONG_PASSWORD)
    assert old_login.json()["error"] == "invalid_grant"


async def test_password_change_needs_the_current_password(client: httpx.AsyncClient) -> None:
    await register(client, "guard@example.com")
    headers = await auth_headers(client, "guard@example.com")

    response = await client.post(
        "/users/me/password",
        json={"current_password": "not the password at all", "new_password": NEW_PASSWORD},
        headers=headers,
    )

    assert response.status_code == 400
    assert response.json() == {"detail": "The current password is not correct."}
    assert (await client.get("/users/me", headers=headers)).status_code == 200
    assert await login(client, "guard@example.com")


async def test_password_change_applies_the_policy(client: httpx.AsyncClient) -> None:
    await register(client, "policy@example.com")
    headers = await auth_headers(client, "policy@example.com")

    response = await client.post(
        "/users/me/password",
        json={"current_password": STRONG_PASSWORD, "new_password": "abcdefghijklmnopqrs"},
        headers=headers,
    )

    assert response.status_code == 422
    assert response.json()["rule"] == "pattern"
    assert (await client.get("/users/me", headers=headers)).status_code == 200


async def test_userinfo_returns_the_claims_the_scopes_allow(client: httpx.AsyncClient) -> None:
    created = await register(client, "info@example.com", name="Ines")

    everything = await client.get(
        "/userinfo", headers=bearer(await login(client, "info@example.com"))
    )
    openid_only = await client.get(
        "/userinfo", headers=bearer(await login(client, "info@example.com", scope="openid"))
    )
    without_openid = await client.get(
        "/userinfo", headers=bearer(await login(client, "info@example.com", scope="profile"))
    )

    assert everything.json() == {
        "sub": created["id"],
        "email": "info@example.com",
        "email_verified": False,
        "name": "Ines",
    }
    assert openid_only.json() == {"sub": created["id"]}
    assert without_openid.status_code == 403
    assert 'error="insufficient_scope"' in without_openid.headers["www-authenticate"]


class _PausingHasher(DelegatingHasher):
    """Holds the first password check until released; everything else goes straight through."""

    def __init__(self, real: PasswordHasher) -> None:
        super().__init__(real)
        self.paused = anyio.Event()
        self.release = anyio.Event()
        self._armed = True

    async def verify(self, password: str, hashed: str) -> tuple[bool, str | None]:
        if self._armed:
            self._armed = False
            self.paused.set()
            await self.release.wait()
        return await super().verify(password, hashed)


async def _login_racing_a_password_change(
    client: httpx.AsyncClient, email: str, owner: dict[str, str]
) -> tuple[httpx.Response, httpx.Response]:
    """A login with the old password that has read the old hash when the change lands.

    Returns (login, change) responses.
    """
    state = app_state(client)
    hasher = _PausingHasher(state.hasher)
    state.hasher = hasher
    responses: dict[str, httpx.Response] = {}

    async def log_in_with_the_old_password() -> None:
        responses["login"] = await request_token(client, email)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(log_in_with_the_old_password)
        await hasher.paused.wait()  # the login has read the old hash and is checking it
        responses["change"] = await client.post(
            "/users/me/password",
            json={"current_password": STRONG_PASSWORD, "new_password": NEW_PASSWORD},
            headers=owner,
        )
        hasher.release.set()
    return responses["login"], responses["change"]


async def test_a_login_racing_a_password_change_is_refused(client: httpx.AsyncClient) -> None:
    await register(client, "race@example.com")
    owner = await auth_headers(client, "race@example.com")

    login_response, change = await _login_racing_a_password_change(
        client, "race@example.com", owner
    )

    assert change.status_code == 204
    # The old password matched the hash the login read, but the change landed first.
    assert login_response.status_code == 400
    assert login_response.json()["error"] == "invalid_grant"


async def _stored_hash(client: httpx.AsyncClient, email: str) -> str:
    state = app_state(client)
    async with state.sessionmaker() as db:
        user = await accounts.get_by_email(db=db, email=email)
        assert user is not None
        return user.hashed_password


async def test_a_login_upgrades_a_hash_made_at_an_older_cost(make_client: ClientFactory) -> None:
    async with make_client(bcrypt_rounds=4) as client:
        await register(client, "upgrade@example.com")
        assert ",r=4$" in await _stored_hash(client, "upgrade@example.com")

    async with make_client(bcrypt_rounds=5) as client:
        await login(client, "upgrade@example.com")
        assert ",r=5$" in await _stored_hash(client, "upgrade@example.com")
        assert await login(client, "upgrade@example.com")


async def test_a_hash_upgrade_never_undoes_a_password_change_that_landed_meanwhile(
    make_client: ClientFactory,
) -> None:
    async with make_client(bcrypt_rounds=4) as client:
        await register(client, "undo@example.com")
    async with make_client(bcrypt_rounds=5) as client:
        owner = await auth_headers(client, "undo@example.com")  # upgrades the hash to cost 5
    async with make_client(bcrypt_rounds=6) as client:  # the next login will upgrade again
        login_response, change = await _login_racing_a_password_change(
            client, "undo@example.com", owner
        )

        assert change.status_code == 204
        assert login_response.status_code == 400  # the change landed first
        assert await login(client, "undo@example.com", NEW_PASSWORD)
        old = await request_token(client, "undo@example.com", STRONG_PASSWORD)
        assert old.json()["error"] == "invalid_grant"
