"""User administration: /admin/users for holders of the admin role."""

import asyncio
import uuid

import httpx
import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.accounts import service as accounts
from auth_service.kit import migrate
from auth_service.models import User
from tests.helpers.app import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
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


async def _admin_id(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    me = await client.get("/users/me", headers=headers)
    user_id: str = me.json()["id"]
    return user_id


async def test_list_users_pages_searches_and_counts(client: httpx.AsyncClient) -> None:
    for n in range(5):
        await register(client, f"member{n}@example.com", name=f"Member {n}")
    await register(client, "other@example.org")
    headers = await admin_headers(client)

    page = await client.get("/admin/users", params={"limit": 2, "offset": 1}, headers=headers)
    search = await client.get("/admin/users", params={"q": "MEMBER"}, headers=headers)

    assert page.status_code == 200
    assert page.json()["count"] == 7
    assert [u["email"] for u in page.json()["data"]] == [
        "member0@example.com",
        "member1@example.com",
    ]
    assert search.json()["count"] == 5
    assert {u["email"] for u in search.json()["data"]} == {
        f"member{n}@example.com" for n in range(5)
    }


async def test_admin_creates_reads_updates_and_deletes_a_user(client: httpx.AsyncClient) -> None:
    headers = await admin_headers(client)

    created = await client.post(
        "/admin/users",
        json={
            "email": "Staff@Example.com",
            "password": STRONG_PASSWORD,
            "name": "Staff",
            "roles": ["support"],
            "is_verified": True,
        },
        headers=headers,
    )
    user_id = created.json()["id"]
    read = await client.get(f"/admin/users/{user_id}", headers=headers)
    updated = await client.patch(
        f"/admin/users/{user_id}",
        json={"roles": ["support", "billing"], "is_verified": False, "name": "Staff Member"},
        headers=headers,
    )
    deleted = await client.delete(f"/admin/users/{user_id}", headers=headers)
    gone = await client.get(f"/admin/users/{user_id}", headers=headers)

    assert created.status_code == 201
    assert created.json()["email"] == "Staff@example.com"
    assert created.json()["roles"] == ["support"]
    assert read.json() == created.json()
    assert updated.json()["roles"] == ["billing", "support"]
    assert updated.json()["is_verified"] is False
    assert updated.json()["name"] == "Staff Member"
    assert deleted.status_code == 204
    assert gone.status_code == 404
    assert gone.json() == {"detail": "No such user."}


async def test_roles_are_carried_in_new_tokens(client: httpx.AsyncClient) -> None:
    user = await register(client, "promoted@example.com")
    headers = await admin_headers(client)

    await client.patch(f"/admin/users/{user['id']}", json={"roles": ["admin"]}, headers=headers)
    token = await login(client, "promoted@example.com")
    listing = await client.get("/admin/users", headers=bearer(token))

    assert listing.status_code == 200


async def test_demoted_admin_loses_access_at_once(client: httpx.AsyncClient) -> None:
    user = await register(client, "second@example.com")
    headers = await admin_headers(client)
    await client.patch(f"/admin/users/{user['id']}", json={"roles": ["admin"]}, headers=headers)
    second = await auth_headers(client, "second@example.com")

    await client.patch(f"/admin/users/{user['id']}", json={"roles": []}, headers=headers)

    assert (await client.get("/admin/users", headers=second)).status_code == 403


async def test_deactivated_user_cannot_log_in_and_their_tokens_fail(
    client: httpx.AsyncClient,
) -> None:
    user = await register(client, "leaving@example.com")
    token = await login(client, "leaving@example.com")
    headers = await admin_headers(client)

    response = await client.patch(
        f"/admin/users/{user['id']}", json={"is_active": False}, headers=headers
    )

    assert response.json()["is_active"] is False
    assert (await client.get("/users/me", headers=bearer(token))).status_code == 401
    refused = await request_token(client, "leaving@example.com", STRONG_PASSWORD)
    assert refused.json()["error"] == "invalid_grant"


async def test_non_admins_get_403(client: httpx.AsyncClient) -> None:
    await register(client, "plain@example.com")
    headers = await auth_headers(client, "plain@example.com")

    for method, path in [
        ("GET", "/admin/users"),
        ("POST", "/admin/users"),
        ("GET", f"/admin/users/{uuid.uuid4()}"),
        ("PATCH", f"/admin/users/{uuid.uuid4()}"),
        ("DELETE", f"/admin/users/{uuid.uuid4()}"),
    ]:
        response = await client.request(method, path, headers=headers, json={})
        assert response.status_code == 403, (method, path)
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


async def test_admin_token_without_admin_scope_gets_403(client: httpx.AsyncClient) -> None:
    token = await login(client, ADMIN_EMAIL, ADMIN_PASSWORD, scope="openid account")

    response = await client.get("/admin/users", headers=bearer(token))

    assert response.status_code == 403


async def _role_fixtures(client: httpx.AsyncClient, root: dict[str, str]) -> dict[str, str]:
    """A plain member, an active admin and a deactivated admin: their ids by name."""
    ids = {}
    people: list[tuple[str, dict[str, object]]] = [
        ("member", {}),
        ("deputy", {"roles": ["admin"]}),
        ("retired", {"roles": ["admin"], "is_active": False}),
    ]
    for name, body in people:
        created = await client.post(
            "/admin/users",
            json={"email": f"{name}@example.com", "password": STRONG_PASSWORD, **body},
            headers=root,
        )
        assert created.status_code == 201, created.text
        ids[name] = created.json()["id"]
    return ids


@pytest.mark.parametrize(
    ("method", "target", "body"),
    [
        ("POST", None, {"email": "new@example.com", "roles": ["admin"]}),
        ("POST", None, {"email": "new@example.com", "roles": ["support"]}),
        ("PATCH", "member", {"roles": ["admin"]}),
        ("PATCH", "member", {"roles": ["support"]}),
        ("PATCH", "deputy", {"name": "Someone Else"}),
        ("PATCH", "deputy", {"is_active": False}),
        ("PATCH", "deputy", {"is_verified": False}),
        ("PATCH", "retired", {"is_active": True}),  # would revive an admin
        ("DELETE", "deputy", None),
    ],
)
async def test_roles_and_admin_accounts_need_the_admin_roles_scope(
    client: httpx.AsyncClient, method: str, target: str | None, body: dict[str, object] | None
) -> None:
    root = await admin_headers(client)
    ids = await _role_fixtures(client, root)
    before = (await client.get("/admin/users", headers=root)).json()
    users_only = bearer(await login(client, ADMIN_EMAIL, ADMIN_PASSWORD, scope="admin:users"))
    path = "/admin/users" if target is None else f"/admin/users/{ids[target]}"
    if method == "POST":
        body = {**(body or {}), "password": STRONG_PASSWORD}

    response = await client.request(method, path, json=body, headers=users_only)

    assert response.status_code == 403, response.text
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="admin:users admin:roles"' in challenge
    assert (await client.get("/admin/users", headers=root)).json() == before


async def test_admin_users_alone_manages_accounts_without_roles(
    client: httpx.AsyncClient,
) -> None:
    root = await admin_headers(client)
    ids = await _role_fixtures(client, root)
    users_only = bearer(await login(client, ADMIN_EMAIL, ADMIN_PASSWORD, scope="admin:users"))
    with_roles = bearer(
        await login(client, ADMIN_EMAIL, ADMIN_PASSWORD, scope="admin:users admin:roles")
    )

    created = await client.post(
        "/admin/users",
        json={"email": "plain@example.com", "password": STRONG_PASSWORD, "roles": []},
        headers=users_only,
    )
    changed = await client.patch(
        f"/admin/users/{ids['member']}",
        json={"name": "Member", "roles": [], "is_active": False, "is_verified": True},
        headers=users_only,
    )
    deleted = await client.delete(f"/admin/users/{created.json()['id']}", headers=users_only)
    promoted = await client.patch(
        f"/admin/users/{ids['member']}",
        json={"roles": ["admin"], "is_active": True},
        headers=with_roles,
    )

    assert created.status_code == 201, created.text
    assert changed.status_code == 200, changed.text
    assert changed.json()["is_active"] is False
    assert deleted.status_code == 204, deleted.text
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["roles"] == ["admin"]


@pytest.mark.parametrize(
    ("method", "body"),
    [("PATCH", {"is_active": False}), ("PATCH", {"roles": []}), ("DELETE", None)],
)
async def test_last_active_admin_cannot_remove_themself(
    client: httpx.AsyncClient, method: str, body: dict[str, object] | None
) -> None:
    headers = await admin_headers(client)
    admin_id = await _admin_id(client, headers)

    response = await client.request(method, f"/admin/users/{admin_id}", json=body, headers=headers)

    assert response.status_code == 409
    assert response.json() == {"detail": "This change would leave no active admin."}
    assert (await client.get("/admin/users", headers=headers)).status_code == 200


async def test_an_admin_may_step_down_when_another_remains(client: httpx.AsyncClient) -> None:
    other = await register(client, "heir@example.com")
    headers = await admin_headers(client)
    await client.patch(f"/admin/users/{other['id']}", json={"roles": ["admin"]}, headers=headers)
    admin_id = await _admin_id(client, headers)

    response = await client.patch(f"/admin/users/{admin_id}", json={"roles": []}, headers=headers)

    assert response.status_code == 200
    heir = await auth_headers(client, "heir@example.com")
    assert (await client.get("/admin/users", headers=heir)).status_code == 200


async def test_admin_create_refuses_a_taken_email_and_weak_password(
    client: httpx.AsyncClient,
) -> None:
    headers = await admin_headers(client)

    taken = await client.post(
        "/admin/users",
        json={"email": ADMIN_EMAIL.upper(), "password": STRONG_PASSWORD},
        headers=headers,
    )
    weak = await client.post(
        "/admin/users", json={"email": "weak@example.com", "password": "short"}, headers=headers
    )

    assert taken.status_code == 409
    assert weak.status_code == 422
    assert weak.json()["rule"] == "min_length"


async def test_bootstrap_admin_is_created_once(make_client: ClientFactory) -> None:
    async with make_client() as client:
        await login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    async with make_client() as client:  # a restart: the admin exists already
        headers = await admin_headers(client)
        response = await client.get("/admin/users", params={"q": ADMIN_EMAIL}, headers=headers)

    assert response.json()["count"] == 1
    assert response.json()["data"][0]["roles"] == ["admin"]
    assert response.json()["data"][0]["is_verified"] is True


async def test_null_fields_leave_values_unchanged_but_null_name_clears(
    client: httpx.AsyncClient,
) -> None:
    headers = await admin_headers(client)
    admin_id = await _admin_id(client, headers)
    await client.patch(f"/admin/users/{admin_id}", json={"name": "Root"}, headers=headers)

    response = await client.patch(
        f"/admin/users/{admin_id}",
        json={"roles": None, "is_active": None, "is_verified": None, "name": None},
        headers=headers,
    )

    assert response.status_code == 200
    assert response.json()["roles"] == ["admin"]
    assert response.json()["is_active"] is True
    assert response.json()["is_verified"] is True
    assert response.json()["name"] is None


async def test_a_restart_does_not_revive_a_demoted_bootstrap_admin(
    make_client: ClientFactory,
) -> None:
    async with make_client() as client:
        headers = await admin_headers(client)
        successor = await register(client, "successor@example.com")
        await client.patch(
            f"/admin/users/{successor['id']}", json={"roles": ["admin"]}, headers=headers
        )
        founder_id = await _admin_id(client, headers)
        await client.patch(
            f"/admin/users/{founder_id}", json={"roles": [], "is_active": False}, headers=headers
        )

    async with make_client() as client:  # AUTH_BOOTSTRAP_ADMIN_* still set
        refused = await request_token(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        listing = await client.get(
            "/admin/users",
            params={"q": ADMIN_EMAIL},
            headers=await auth_headers(client, "successor@example.com"),
        )

    assert refused.json()["error"] == "invalid_grant"
    assert listing.json()["data"][0]["roles"] == []
    assert listing.json()["data"][0]["is_active"] is False


async def test_bootstrap_never_promotes_someone_who_registered_that_address(
    empty_database: str,
) -> None:
    migrate.upgrade(empty_database)
    unconfigured = make_settings(
        empty_database, bootstrap_admin_email=None, bootstrap_admin_password=None
    )
    async with started_client(unconfigured) as client:
        await register(client, ADMIN_EMAIL, password="the squatter's own passphrase")

    async with started_client(make_settings(empty_database)) as client:
        token = await login(client, ADMIN_EMAIL, "the squatter's own passphrase")
        response = await client.get("/admin/users", headers=bearer(token))

    assert response.status_code == 403


@pytest.mark.parametrize("change", ["demote", "deactivate", "delete"])
async def test_two_admins_removing_each_other_at_once_leave_one(
    client: httpx.AsyncClient, change: str
) -> None:
    first = await admin_headers(client)
    first_id = await _admin_id(client, first)
    other = await register(client, "second-admin@example.com")
    await client.patch(f"/admin/users/{other['id']}", json={"roles": ["admin"]}, headers=first)
    second = await auth_headers(client, "second-admin@example.com")

    async def remove(target: str, headers: dict[str, str]) -> httpx.Response:
        if change == "delete":
            return await client.delete(f"/admin/users/{target}", headers=headers)
        body: dict[str, object] = {"roles": []} if change == "demote" else {"is_active": False}
        return await client.patch(f"/admin/users/{target}", json=body, headers=headers)

    results = await asyncio.gather(remove(other["id"], first), remove(first_id, second))

    # The loser is refused as the last admin (409), or, when the winner got there first,
    # its own token no longer works (401: deactivated or deleted) or it is no admin any more
    # (403: demoted).
    statuses = [r.status_code for r in results]
    assert len([s for s in statuses if s in (200, 204)]) == 1, statuses
    assert len([s for s in statuses if s in (401, 403, 409)]) == 1, statuses
    survivor = first if statuses[0] in (200, 204) else second
    listing = await client.get("/admin/users", headers=survivor)
    admins = [u for u in listing.json()["data"] if "admin" in u["roles"] and u["is_active"]]
    assert len(admins) == 1


@pytest.mark.parametrize("change", ["demote", "deactivate", "delete"])
async def test_a_removal_that_loaded_its_target_before_it_became_the_last_admin_is_refused(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    root = await admin_headers(client)
    root_id = await _admin_id(client, root)
    heir = await register(client, "late-heir@example.com")
    # The removal's route loads its target, then waits while the others act.
    loaded, go_on = asyncio.Event(), asyncio.Event()
    get_user = accounts.get_user

    async def get_user_then_wait(*, db: AsyncSession, user_id: uuid.UUID) -> User:
        user = await get_user(db=db, user_id=user_id)
        if str(user_id) == heir["id"] and not loaded.is_set():
            loaded.set()
            await go_on.wait()
        return user

    monkeypatch.setattr(accounts, "get_user", get_user_then_wait)

    async def remove() -> httpx.Response:
        if change == "delete":
            return await client.delete(f"/admin/users/{heir['id']}", headers=root)
        body: dict[str, object] = {"roles": []} if change == "demote" else {"is_active": False}
        return await client.patch(f"/admin/users/{heir['id']}", json=body, headers=root)

    removal = asyncio.create_task(remove())
    try:
        async with asyncio.timeout(10):
            await loaded.wait()  # the heir as loaded: no admin
        # Meanwhile the heir is made admin, and root steps down (the heir remains: allowed).
        promoted = await client.patch(
            f"/admin/users/{heir['id']}", json={"roles": ["admin"]}, headers=root
        )
        stepped_down = await client.patch(
            f"/admin/users/{root_id}", json={"roles": []}, headers=root
        )
    finally:
        go_on.set()
        removed = await removal

    assert promoted.status_code == 200, promoted.text
    assert stepped_down.status_code == 200, stepped_down.text
    assert removed.status_code == 409, removed.text
    assert removed.json() == {"detail": "This change would leave no active admin."}
    listing = await client.get("/admin/users", headers=await auth_headers(client, heir["email"]))
    admins = [u["id"] for u in listing.json()["data"] if "admin" in u["roles"] and u["is_active"]]
    assert admins == [heir["id"]]


async def test_a_mixed_case_bootstrap_address_logs_in_as_typed_or_lowered(
    empty_database: str,
) -> None:
    migrate.upgrade(empty_database)
    settings = make_settings(empty_database, bootstrap_admin_email="Chief@Example.COM")

    async with started_client(settings) as client:
        lowered = await request_token(client, "chief@example.com", ADMIN_PASSWORD)
        as_typed = await request_token(client, "Chief@Example.COM", ADMIN_PASSWORD)

    assert lowered.status_code == 200, lowered.text
    assert as_typed.status_code == 200, as_typed.text
