"""The verified-token cache: a token's signature is checked once, its user on every request.

The cache is keyed by the token string, bounded, never serves a token past its `exp`, and
empties itself when the key set changes. Whatever it holds, a deactivation, deletion or
password change is refused on the very next request (in the app:
tests/access/test_token_cache.py; across workers: tests/served/test_serve.py).
"""

import time
import uuid
from typing import Any

import pytest

from auth_service.security import crypto, jwt

pytestmark = pytest.mark.anyio

ISSUER = "http://cache.invalid"


def _key_set(alg: str = "ES256") -> dict[str, jwt.SigningKeyPair]:
    private = crypto.generate_private_key(alg)
    kid = crypto.new_kid(private)
    pair = jwt.load_key_pair(kid=kid, alg=alg, private_pem=crypto.private_key_pem(private))
    return {kid: pair}


def _token(keys: dict[str, jwt.SigningKeyPair], *, expires_in: float = 900) -> str:
    now = time.time()
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": str(uuid.uuid4()),
        "aud": ISSUER,
        "exp": int(now + expires_in),
        "iat": int(now),
        "jti": uuid.uuid4().hex,
        "client_id": "auth-service",
        "scope": "openid",
        "roles": [],
        "token_version": 0,
    }
    return jwt.encode(claims, next(iter(keys.values())))


def _decode(cache: jwt.VerifiedTokenCache, token: str, keys: Any) -> dict[str, Any]:
    return cache.decode(token, keys=keys, algorithm="ES256", issuer=ISSUER, audience=ISSUER)


def test_a_verified_token_is_cached_and_answered_from_the_cache() -> None:
    keys, cache = _key_set(), jwt.VerifiedTokenCache()
    token = _token(keys)

    first = _decode(cache, token, keys)
    assert len(cache) == 1
    assert _decode(cache, token, keys) == first
    assert len(cache) == 1


def test_a_callers_change_to_the_claims_does_not_reach_the_cache() -> None:
    keys, cache = _key_set(), jwt.VerifiedTokenCache()
    token = _token(keys)

    _decode(cache, token, keys)["sub"] = "someone else"

    assert _decode(cache, token, keys)["sub"] != "someone else"


@pytest.mark.parametrize("position", [-2, 10, 60])
def test_a_tampered_token_never_hits_the_cached_entry(position: int) -> None:
    keys, cache = _key_set(), jwt.VerifiedTokenCache()
    token = _token(keys)
    _decode(cache, token, keys)
    # Another canonical character at one place: a different string, verified in full.
    replacement = "A" if token[position] != "A" else "B"
    tampered = token[:position] + replacement + token[position + 1 :]

    with pytest.raises(jwt.TokenError):
        _decode(cache, tampered, keys)
    assert len(cache) == 1


def test_a_key_set_change_empties_the_cache() -> None:
    old_keys, new_keys = _key_set(), _key_set()
    cache = jwt.VerifiedTokenCache()
    token = _token(old_keys)
    _decode(cache, token, old_keys)

    with pytest.raises(jwt.TokenError):  # its kid is not in the new set: no cached answer
        _decode(cache, token, new_keys)
    assert len(cache) == 0


def test_the_cache_is_bounded() -> None:
    keys, cache = _key_set(), jwt.VerifiedTokenCache(maxsize=3)
    tokens = [_token(keys) for _ in range(5)]

    for token in tokens:
        _decode(cache, token, keys)

    assert len(cache) == 3
    _decode(cache, tokens[0], keys)  # evicted, so verified again: still valid
    assert len(cache) == 3


def test_a_token_past_its_exp_is_not_kept() -> None:
    keys, cache = _key_set(), jwt.VerifiedTokenCache()
    # Expired 5 s ago: still inside decode's 30 s leeway, so it verifies, but is not cached.
    token = _token(keys, expires_in=-5)

    _decode(cache, token, keys)

    assert len(cache) == 0
