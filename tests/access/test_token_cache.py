"""A cached token is refused on the very next request after a change to its user, in-process
(across workers: tests/served/test_serve.py; the cache's own rules: tests/unit/test_token_cache.py).
"""

import httpx
import pytest

from auth_service.security import jwt
from tests.helpers.app import (
    STRONG_PASSWORD,
    admin_headers,
    app_state,
    bearer,
    login,
    register,
)

pytestmark = pytest.mark.anyio

ISSUER = "http://cache.invalid"


@pytest.mark.parametrize("change", ["deactivation", "password change", "deletion"])
async def test_a_cached_token_is_refused_at_once_after_a_change_to_its_user(
    client: httpx.AsyncClient, change: str
) -> None:
    user = await register(client, "cached@example.com")
    token = await login(client, "cached@example.com")
    admin = await admin_headers(client)
    assert (await client.get("/users/me", headers=bearer(token))).status_code == 200
    cache: jwt.VerifiedTokenCache = app_state(client).token_cache
    assert len(cache) >= 1  # the token is cached now

    if change == "deactivation":
        changed = await client.patch(
            f"/admin/users/{user['id']}", json={"is_active": False}, headers=admin
        )
    elif change == "password change":
        changed = await client.post(
            "/users/me/password",
            json={"current_password": STRONG_PASSWORD, "new_password": STRONG_PASSWORD + " 2"},
            headers=bearer(token),
        )
    else:
        changed = await client.delete(f"/admin/users/{user['id']}", headers=admin)
    assert changed.status_code in (200, 204), changed.text

    response = await client.get("/users/me", headers=bearer(token))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
