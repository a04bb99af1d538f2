"""The verifier other services use (`auth_service_verifier`), against an issuer on loopback.

The issuer here is a small real HTTP server publishing OpenID Connect Discovery metadata
and a JWK Set (RFC 8414 §3, RFC 7517) for a key made in the test, so each test can rotate,
break or stop it; `test_verifier_live.py` runs the verifier against the real auth service.
The forged-token catalogue is the one the service's guards run (`tests/forged_tokens.py`).
"""

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from auth_service_verifier import (
    InvalidTokenError,
    IssuerMismatchError,
    KeysUnavailableError,
    TokenVerifier,
    VerificationError,
    VerificationUnavailableError,
    VerifiedToken,
    VerifierStatus,
    _rules,
)
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.helpers.forged_tokens import (
    ALGORITHM,
    NOT_ACCESS_TOKEN,
    NOT_TOKENS,
    UNKNOWN_KEY,
    Forgery,
    Signer,
    forgery_params,
)
from tests.helpers.issuer import (
    AUDIENCE,
    GATE_SECONDS,
    HugeBody,
    Issuer,
    downstream,
    public_jwk,
    rsa_pem,
    verifier_for,
)


def _refusal(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidTokenError) as refused:
        verifier.verify(token)
    return str(refused.value)


# --- what it accepts and refuses -----------------------------------------------------------


def test_a_token_signed_with_the_issuers_key_is_verified(issuer: Issuer) -> None:
    claims = issuer.signer.claims(scope="orders:read orders:write", roles=["clerk"])

    token = verifier_for(issuer).verify(issuer.signer.token(claims))

    assert isinstance(token, VerifiedToken)
    assert token.sub == "user-1"
    assert token.scopes == {"orders:read", "orders:write"}
    assert token.roles == ("clerk",)
    assert token.client_id == "auth-service"
    assert token.claims["jti"] == claims["jti"]


@pytest.mark.parametrize("forgery", forgery_params())
def test_forged_token_is_refused_saying_why(issuer: Issuer, forgery: Forgery) -> None:
    verifier = verifier_for(issuer, min_refetch_interval=0)  # an unknown kid is looked for
    verifier.verify(issuer.signer.token())  # the key set is in: refusals are about the token

    description = _refusal(verifier, forgery.make(issuer.signer))

    assert forgery.says in description
    if forgery.says != "signature":
        assert "signature" not in description


@pytest.mark.parametrize("token", NOT_TOKENS)
def test_what_is_not_a_token_is_refused_without_asking_the_issuer(
    issuer: Issuer, token: str
) -> None:
    assert _refusal(verifier_for(issuer), token)
    assert issuer.jwks_requests == 0


# Header members of the wrong JSON type, signed with the issuer's key: the header is the
# bearer's JSON, so each is a refusal (401), never another exception (a 500 downstream).
HOSTILE_HEADERS = [
    pytest.param({"alg": ["RS256"]}, ALGORITHM, id="alg a list"),
    pytest.param({"alg": {"RS256": 1}}, ALGORITHM, id="alg an object"),
    pytest.param({"alg": 256}, ALGORITHM, id="alg a number"),
    pytest.param({"alg": None}, ALGORITHM, id="alg null"),
    pytest.param({"typ": ["at+jwt"]}, NOT_ACCESS_TOKEN, id="typ a list"),
    pytest.param({"typ": {"at+jwt": 1}}, NOT_ACCESS_TOKEN, id="typ an object"),
    pytest.param({"kid": ["key"]}, UNKNOWN_KEY, id="kid a list"),
    pytest.param({"kid": {"key": 1}}, UNKNOWN_KEY, id="kid an object"),
    pytest.param({"crit": {"exp": 1}}, "not support", id="crit an object"),
    pytest.param({"b64": [False]}, "not support", id="b64 a list"),
]


def _with_header(signer: Signer, **members: Any) -> str:
    header = {"alg": "RS256", "typ": "at+jwt", "kid": signer.kid, **members}
    return signer.raw(json.dumps(header).encode(), json.dumps(signer.claims()).encode())


@pytest.mark.anyio
@pytest.mark.parametrize(("members", "says"), HOSTILE_HEADERS)
async def test_a_header_member_of_the_wrong_type_is_refused_not_an_error(
    issuer: Issuer, members: dict[str, Any], says: str
) -> None:
    verifier = verifier_for(issuer)
    verifier.verify(issuer.signer.token())  # the key set is in: refusals are about the token
    token = _with_header(issuer.signer, **members)

    assert says in _refusal(verifier, token)
    with pytest.raises(InvalidTokenError, match=says) as refused:
        await verifier.averify(token)
    assert not isinstance(refused.value, VerificationUnavailableError)
    assert issuer.jwks_requests == 1


def test_leeway_is_configurable(issuer: Issuer) -> None:
    token = issuer.signer.token(issuer.signer.claims(exp=int(time.time()) - 10))

    assert verifier_for(issuer).verify(token).sub == "user-1"  # within the default 30 s
    assert "expired" in _refusal(verifier_for(issuer, leeway=0), token)


def test_keys_of_a_type_that_does_not_fit_their_algorithm_are_never_used(issuer: Issuer) -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_jwk = json.loads(ECAlgorithm.to_jwk(ec_key.public_key()))
    issuer.keys += [
        {**ec_jwk, "kid": "ec-as-rsa", "alg": "RS256"},
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"},
        {**public_jwk(issuer.signer.private_pem, "for-encryption"), "use": "enc"},
    ]
    verifier = verifier_for(issuer, min_refetch_interval=0)  # each kid is looked for

    for kid in ("ec-as-rsa", "hmac", "for-encryption"):
        assert "unknown key" in _refusal(verifier, issuer.signer.token(kid=kid))
    assert verifier.status().key_ids == (issuer.signer.kid,)


@pytest.mark.parametrize(
    "document",
    [
        b"not json",
        b"[]",
        b'{"keys": {}}',
        b'{"keys": []}',
        b'{"keys": ["junk", {"kid": "bad", "alg": "RS256", "kty": "RSA", "n": "!", "e": 1}]}',
        b'{"keys": [{"kid": "k", "alg": ["RS256"], "kty": "RSA", "n": "AQAB", "e": "AQAB"}]}',
        b'{"keys": [{"kid": "k", "alg": {"RS256": 1}, "kty": "RSA", "n": "AQAB", "e": "AQAB"}]}',
        b'{"keys": [{"kid": ["k"], "alg": "RS256", "kty": "RSA", "n": "AQAB", "e": "AQAB"}]}',
        b'{"keys": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # deeper than json.loads goes
        b"[" * 500_000 + b"]" * 500_000,  # under the size cap, all the same
    ],
    ids=lambda document: document[:48].decode(),
)
def test_a_broken_jwk_set_is_a_failed_fetch_not_an_error(issuer: Issuer, document: bytes) -> None:
    issuer.jwks_body = document
    verifier = verifier_for(issuer)

    with pytest.raises(KeysUnavailableError):
        verifier.verify(issuer.signer.token())
    assert verifier.status().last_error is not None


def _private_jwks() -> list[Any]:
    """JWK Set entries that hold private key material, each as a signing key would be."""
    rsa_private = serialization.load_pem_private_key(rsa_pem(0), password=None)
    rsa_jwk = json.loads(RSAAlgorithm.to_jwk(rsa_private))  # type: ignore[arg-type]
    ec_jwk = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1())))
    signing = {"alg": "RS256", "use": "sig"}
    return [
        pytest.param({**rsa_jwk, **signing}, id="RSA with d, p, q, dp, dq, qi"),
        pytest.param({**public_jwk(rsa_pem(0), "k"), "d": rsa_jwk["d"]}, id="RSA with d"),
        pytest.param({**ec_jwk, "alg": "ES256", "use": "sig"}, id="EC with d"),
        pytest.param({**public_jwk(rsa_pem(0), "k"), "k": "c2VjcmV0"}, id="with a secret k"),
    ]


@pytest.mark.parametrize("entry", _private_jwks())
def test_a_key_published_with_its_private_material_is_never_used(
    issuer: Issuer, entry: dict[str, Any]
) -> None:
    issuer.keys = [{**entry, "kid": issuer.signer.kid}]
    verifier = verifier_for(issuer)

    with pytest.raises(KeysUnavailableError):  # not AttributeError: a private key cannot verify
        verifier.verify(issuer.signer.token())

    assert "private key material" in (verifier.status().last_error or "")
    assert issuer.signer.kid in (verifier.status().last_error or "")


@pytest.mark.anyio
async def test_keys_published_with_private_material_are_left_out_and_reported(
    issuer: Issuer,
) -> None:
    leaked = issuer.signer
    private = serialization.load_pem_private_key(leaked.private_pem, password=None)
    private_jwk = json.loads(RSAAlgorithm.to_jwk(private))  # type: ignore[arg-type]
    current = issuer.rotate()
    issuer.keys[0] = {**private_jwk, "kid": leaked.kid, "alg": "RS256", "use": "sig"}
    verifier = verifier_for(issuer, min_refetch_interval=0)  # the leaked kid is looked for

    assert (await verifier.averify(current.token())).sub == "user-1"
    with pytest.raises(InvalidTokenError, match="unknown key"):
        await verifier.averify(leaked.token())

    assert verifier.status().key_ids == (current.kid,)
    assert f"private key material (1 key(s): {leaked.kid})" in (verifier.status().last_error or "")


BROKEN_JWK_SETS = [
    pytest.param(b'{"keys": [{"kid": "k", "alg": ["RS256"], "kty": "RSA"}]}', id="alg a list"),
    pytest.param(b'{"keys": [{"kid": "k", "alg": {}, "kty": "RSA"}]}', id="alg an object"),
    pytest.param(b'{"keys": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", id="nested deeply"),
]


@pytest.mark.parametrize("document", BROKEN_JWK_SETS)
def test_a_broken_jwk_set_at_a_refresh_keeps_the_last_good_keys(
    issuer: Issuer, document: bytes
) -> None:
    issuer.cache_control = "no-store"
    verifier = verifier_for(issuer, min_cache_seconds=0, min_refetch_interval=0)
    verifier.verify(issuer.signer.token())
    issuer.jwks_body = document

    # Another valid token, not yet kept: its caller makes the refresh, which fails.
    verified = verifier.verify(issuer.signer.token(issuer.signer.claims(jti="after")))

    assert verified.sub == "user-1"
    assert issuer.jwks_requests == 2
    assert "FetchError" in (verifier.status().last_error or "")


@pytest.mark.anyio
@pytest.mark.parametrize("document", BROKEN_JWK_SETS)
async def test_a_broken_jwk_set_at_a_background_refresh_keeps_the_last_good_keys(
    issuer: Issuer, document: bytes
) -> None:
    issuer.cache_control = "no-store"
    verifier = verifier_for(issuer, min_cache_seconds=0, min_refetch_interval=0)
    await verifier.averify(issuer.signer.token())
    issuer.jwks_body = document

    verified = await verifier.averify(issuer.signer.token(issuer.signer.claims(jti="after")))
    refresh = verifier.keys._refresh
    assert refresh is not None
    await asyncio.wait_for(refresh, GATE_SECONDS)  # raised nothing: the fetch failed quietly

    assert verified.sub == "user-1"
    assert issuer.jwks_requests == 2
    assert "FetchError" in (verifier.status().last_error or "")
    assert verifier.status().key_ids == (issuer.signer.kid,)


def _huge_answer(path: str, body: HugeBody, *, asynchronous: bool) -> httpx.MockTransport:
    """An issuer whose answer at `path` is `body`; its other documents are small."""
    issuer = "https://issuer.test"

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == path:
            return httpx.Response(200, content=body.achunks() if asynchronous else body.chunks())
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json={"issuer": issuer, "jwks_uri": issuer + "/jwks"})
        return httpx.Response(404)

    return httpx.MockTransport(handle)


@pytest.mark.anyio
@pytest.mark.parametrize("asynchronous", [False, True], ids=["verify", "averify"])
@pytest.mark.parametrize(
    ("path", "what"),
    [
        pytest.param("/.well-known/openid-configuration", "metadata", id="metadata"),
        pytest.param("/jwks", "JWK Set", id="JWK Set"),
    ],
)
async def test_an_answer_past_the_size_cap_is_not_read_further(
    asynchronous: bool, path: str, what: str
) -> None:
    body = HugeBody()
    transport = _huge_answer(path, body, asynchronous=asynchronous)
    verifier = TokenVerifier(
        issuer="https://issuer.test",
        audience=AUDIENCE,
        transport=None if asynchronous else transport,
        async_transport=transport if asynchronous else None,
    )
    token = _with_header(Signer(rsa_pem(0), "k", "https://issuer.test", AUDIENCE, "user-1"))

    with pytest.raises(KeysUnavailableError):
        await verifier.averify(token) if asynchronous else verifier.verify(token)

    assert verifier.status().last_error == f"FetchError: {what}: too large"
    assert body.read <= (1 << 20) + len(HugeBody.CHUNK)  # the cap, and the chunk past it


def test_a_key_set_just_under_the_size_cap_is_read_whole(issuer: Issuer) -> None:
    document = json.dumps({"keys": issuer.keys}).encode()
    issuer.jwks_body = document + b" " * ((1 << 20) - len(document))

    assert verifier_for(issuer).verify(issuer.signer.token()).sub == "user-1"


@pytest.mark.parametrize("jwks_uri", ["http://a..b/jwks.json", "http://xn--/jwks.json", ["x"]])
def test_metadata_with_an_unusable_jwks_uri_is_a_failed_fetch(
    issuer: Issuer, jwks_uri: object
) -> None:
    issuer.jwks_uri = jwks_uri
    verifier = verifier_for(issuer)

    with pytest.raises(KeysUnavailableError):
        verifier.verify(issuer.signer.token())
    assert "jwks_uri" in (verifier.status().last_error or "")
    assert issuer.jwks_requests == 0


def _localhost(url: str) -> str:
    """The same server under its other name: another issuer (auth-service's default one)."""
    return url.replace("127.0.0.1", "localhost")


@pytest.mark.anyio
async def test_metadata_naming_another_issuer_is_a_misconfiguration_named_and_logged(
    issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    # What `make run` gave a newcomer: uvicorn says 127.0.0.1, AUTH_ISSUER says localhost.
    issuer.metadata_issuer = _localhost(issuer.url)
    verifier = verifier_for(issuer)
    caplog.set_level(logging.ERROR, logger="auth_service_verifier")

    with pytest.raises(IssuerMismatchError) as mismatch:
        verifier.verify(issuer.signer.token())
    with pytest.raises(IssuerMismatchError):
        await verifier.averify(issuer.signer.token())  # until the refetch interval: the same

    for text in (str(mismatch.value), caplog.text):
        assert repr(issuer.url) in text
        assert repr(issuer.metadata_issuer) in text
    assert [r.name for r in caplog.records] == ["auth_service_verifier"]
    # Neither a verdict on the token nor "try again later": a caller's `except` tells them apart.
    assert not isinstance(mismatch.value, InvalidTokenError | VerificationUnavailableError)
    assert isinstance(mismatch.value, VerificationError)
    assert issuer.jwks_requests == 0  # none of its keys is trusted


def test_a_mismatched_issuer_once_set_right_is_trusted(issuer: Issuer) -> None:
    issuer.metadata_issuer = "https://evil.example.com"
    verifier = verifier_for(issuer, min_refetch_interval=0)
    with pytest.raises(IssuerMismatchError, match="evil"):
        verifier.verify(issuer.signer.token())

    issuer.metadata_issuer = issuer.url

    assert verifier.verify(issuer.signer.token()).sub == "user-1"
    assert verifier.status().last_error is None


def test_metadata_without_an_issuer_says_so(issuer: Issuer) -> None:
    issuer.metadata_issuer = None

    with pytest.raises(IssuerMismatchError, match="names no issuer"):
        verifier_for(issuer).verify(issuer.signer.token())


def test_an_outage_is_not_an_invalid_token(issuer: Issuer) -> None:
    # `except InvalidTokenError: return 401` must not answer an auth service outage.
    issuer.jwks_status = 503

    with pytest.raises(KeysUnavailableError) as unavailable:
        verifier_for(issuer).verify(issuer.signer.token())

    assert not isinstance(unavailable.value, InvalidTokenError)
    assert isinstance(unavailable.value, VerificationError)


@pytest.mark.parametrize(
    ("issuer_url", "audience"), [("auth.example.com", AUDIENCE), ("https://auth.example.com", "")]
)
def test_a_misconfigured_verifier_fails_at_once(issuer_url: str, audience: str) -> None:
    with pytest.raises(ValueError, match="issuer"):
        TokenVerifier(issuer=issuer_url, audience=audience)


# --- fetching and caching the keys ---------------------------------------------------------


def test_the_key_set_is_fetched_once_while_its_max_age_lasts(issuer: Issuer) -> None:
    verifier = verifier_for(issuer, min_refetch_interval=0)

    for n in range(20):
        verifier.verify(issuer.signer.token(issuer.signer.claims(jti=f"jti-{n}")))

    assert issuer.jwks_requests == 1


def test_status_says_which_keys_it_holds_and_how_the_last_fetch_went(issuer: Issuer) -> None:
    verifier = verifier_for(issuer, min_refetch_interval=0)
    assert verifier.status() == VerifierStatus(
        key_ids=(),
        keys_fetched_at=None,
        fetches=0,
        last_error=None,
        introspection_requests=None,
        introspection_error=None,
    )

    before = time.time()
    verifier.verify(issuer.signer.token())
    fetched = verifier.status()
    assert (fetched.key_ids, fetched.fetches, fetched.last_error) == ((issuer.signer.kid,), 1, None)
    assert fetched.keys_fetched_at is not None
    assert before <= fetched.keys_fetched_at <= time.time()

    issuer.jwks_body = b"not json"
    with pytest.raises(KeysUnavailableError):  # a kid the set lacks: fetched again, and failed
        verifier.verify(issuer.signer.token(kid="new-kid"))
    failed = verifier.status()
    assert (failed.key_ids, failed.keys_fetched_at) == (fetched.key_ids, fetched.keys_fetched_at)
    assert (failed.fetches, failed.last_error) == (2, "FetchError: JWK Set: not JSON")


def test_a_key_set_that_may_not_be_cached_is_fetched_again(issuer: Issuer) -> None:
    issuer.cache_control = "no-store"
    verifier = verifier_for(issuer, min_cache_seconds=0, min_refetch_interval=0)

    for n in range(3):
        verifier.verify(issuer.signer.token(issuer.signer.claims(jti=f"jti-{n}")))

    assert issuer.jwks_requests == 3


def test_a_new_kid_after_a_rotation_is_fetched_and_accepted(issuer: Issuer) -> None:
    verifier = verifier_for(issuer, min_refetch_interval=0)
    old = issuer.signer.token()
    verifier.verify(old)

    new = issuer.rotate().token()

    assert verifier.verify(new).sub == "user-1"
    assert verifier.verify(old).sub == "user-1"
    assert issuer.jwks_requests == 2


def test_tokens_with_made_up_kids_do_not_make_it_hammer_the_issuer(issuer: Issuer) -> None:
    verifier = verifier_for(issuer, min_refetch_interval=3600)
    verifier.verify(issuer.signer.token())

    for _ in range(50):
        with pytest.raises(KeysUnavailableError):  # "not now": the next fetch may find it
            verifier.verify(issuer.signer.token(kid=uuid.uuid4().hex))

    assert issuer.jwks_requests == 1
    assert verifier.status().fetches == 1


class Clock:
    """A monotonic clock the test moves on, for a key source's refetch interval."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


@pytest.mark.anyio
async def test_a_new_key_during_the_refetch_interval_is_unavailable_not_refused(
    issuer: Issuer,
) -> None:
    # A made-up kid spends the refetch allowance just before the issuer publishes a new key
    # (it publishes before it signs): the new key's tokens are "not now" (503), not 401.
    # A generous fetch timeout: a fetch cut short on a busy machine would be "not now" too.
    clock = Clock()
    verifier = verifier_for(issuer, min_refetch_interval=60, timeout=30, monotonic_clock=clock)
    old = issuer.signer
    verifier.verify(old.token())
    clock.now += 60
    made_up = old.token(old.claims(jti="made-up"), kid="made-up-kid")
    new = issuer.rotate()
    issuer.keys = [key for key in issuer.keys if key["kid"] != new.kid]  # not published yet
    async with downstream(verifier) as client:
        looked_for = await client.get("/anything", headers=_bearer(made_up))  # spends it
        issuer.keys.append(public_jwk(new.private_pem, new.kid))  # the JWK Set gains a key
        clock.now += 1  # within the refetch interval
        too_soon = await client.get("/anything", headers=_bearer(new.token()))
        with pytest.raises(KeysUnavailableError):
            verifier.verify(new.token(new.claims(jti="sync")))
        clock.now += 59  # the refetch interval has passed
        found = await client.get("/anything", headers=_bearer(new.token()))

    assert looked_for.status_code == 401  # the set fetched for it lacks it: never
    assert "unknown key" in looked_for.json()["detail"]
    assert too_soon.status_code == 503
    assert "Retry-After" in too_soon.headers
    assert "not known here yet" in too_soon.json()["detail"]
    assert (found.status_code, found.json()) == (200, "user-1"), verifier.status().last_error
    assert issuer.jwks_requests == 3


def test_a_failed_refetch_for_an_unknown_kid_is_unavailability(issuer: Issuer) -> None:
    verifier = verifier_for(issuer, min_refetch_interval=0)
    verifier.verify(issuer.signer.token())
    new = issuer.rotate()
    issuer.jwks_status = 500

    with pytest.raises(KeysUnavailableError, match="not known here yet"):
        verifier.verify(new.token())  # it could not look: "not now", not "never"

    issuer.jwks_status = 200
    assert verifier.verify(new.token()).sub == "user-1"
    assert issuer.jwks_requests == 3


def test_a_failed_refetch_keeps_the_last_good_keys(issuer: Issuer) -> None:
    issuer.cache_control = "no-store"
    verifier = verifier_for(issuer, min_cache_seconds=0, min_refetch_interval=0)
    verifier.verify(issuer.signer.token())

    issuer.jwks_status = 500
    accepted = verifier.verify(issuer.signer.token(issuer.signer.claims(jti="during-failure")))

    assert accepted.sub == "user-1"
    assert verifier.status().last_error is not None
    assert issuer.jwks_requests == 2


def test_tokens_are_still_verified_while_the_issuer_is_down(issuer: Issuer) -> None:
    issuer.cache_control = "no-store"
    verifier = verifier_for(issuer, min_cache_seconds=0, min_refetch_interval=0, timeout=2)
    verifier.verify(issuer.signer.token())

    issuer.stop()

    for n in range(3):
        assert verifier.verify(issuer.signer.token(issuer.signer.claims(jti=f"j{n}"))).sub
    assert "ConnectError" in (verifier.status().last_error or "")


def test_threads_arriving_during_the_first_fetch_wait_for_it(issuer: Issuer) -> None:
    verifier = verifier_for(issuer)
    tokens = [issuer.signer.token(issuer.signer.claims(jti=f"t{n}")) for n in range(8)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        subjects = list(pool.map(lambda token: verifier.verify(token).sub, tokens))

    assert subjects == ["user-1"] * 8
    assert issuer.jwks_requests == 1


@pytest.mark.anyio
async def test_requests_arriving_during_the_first_fetch_wait_for_it(issuer: Issuer) -> None:
    verifier = verifier_for(issuer)
    tokens = [issuer.signer.token(issuer.signer.claims(jti=f"a{n}")) for n in range(8)]

    verified = await asyncio.gather(*(verifier.averify(token) for token in tokens))

    assert [token.sub for token in verified] == ["user-1"] * 8
    assert issuer.jwks_requests == 1


def _wait_for_jwks_requests(issuer: Issuer, count: int) -> None:
    deadline = time.monotonic() + GATE_SECONDS
    while issuer.jwks_requests < count:
        assert time.monotonic() < deadline, "the refresh never reached the issuer"
        time.sleep(0.01)


def test_a_refresh_in_flight_holds_up_no_other_thread(issuer: Issuer) -> None:
    issuer.cache_control = "no-store"
    verifier = verifier_for(issuer, min_cache_seconds=0, min_refetch_interval=0)
    verifier.verify(issuer.signer.token())  # the keys are in, and due for a refresh at once
    issuer.jwks_gate = threading.Event()

    first = issuer.signer.token(issuer.signer.claims(jti="first"))

    with ThreadPoolExecutor(max_workers=1) as pool:
        refreshing = pool.submit(verifier.verify, first)
        _wait_for_jwks_requests(issuer, 2)  # that thread's refresh hangs at the issuer

        other = verifier.verify(issuer.signer.token(issuer.signer.claims(jti="other")))

        assert other.sub == "user-1"
        assert not refreshing.done()
        issuer.jwks_gate.set()
        assert refreshing.result().sub == "user-1"


@pytest.mark.anyio
async def test_a_refresh_due_to_max_age_runs_in_the_background(issuer: Issuer) -> None:
    issuer.cache_control = "no-store"
    verifier = verifier_for(issuer, min_cache_seconds=0, min_refetch_interval=0, timeout=2)
    await verifier.averify(issuer.signer.token())
    issuer.jwks_gate = threading.Event()
    try:
        verified = await verifier.averify(issuer.signer.token(issuer.signer.claims(jti="bg")))

        # Had it waited for the hung issuer, its fetch would have timed out by now.
        assert verified.sub == "user-1"
        assert verifier.status().last_error is None
        deadline = time.monotonic() + GATE_SECONDS
        while issuer.jwks_requests < 2:  # the refresh reaches the issuer all the same
            assert time.monotonic() < deadline, "no refresh was started"
            await asyncio.sleep(0.01)
    finally:
        issuer.jwks_gate.set()


@pytest.mark.parametrize("drip_head", [False, True], ids=["body", "head"])
def test_a_drip_fed_key_set_fails_after_the_timeout_not_the_last_byte(
    issuer: Issuer, drip_head: bool
) -> None:
    # Each byte comes well within httpx's read timeout; the whole answer would take a minute
    # (its head alone, over ten seconds), while other threads would wait on the fetch's lock.
    issuer.jwks_drip, issuer.drip_head = 0.1, drip_head
    verifier = verifier_for(issuer, timeout=1)
    outcome: list[BaseException] = []

    def verify() -> None:
        try:
            verifier.verify(issuer.signer.token())
        except BaseException as exc:  # the outcome, handed to the test
            outcome.append(exc)

    worker = threading.Thread(target=verify)
    worker.start()
    worker.join(10)

    assert not worker.is_alive(), "the fetch went on past its timeout"
    assert [type(exc) for exc in outcome] == [KeysUnavailableError]
    assert "longer than the timeout" in (verifier.status().last_error or "")


@pytest.mark.anyio
@pytest.mark.parametrize("drip_head", [False, True], ids=["body", "head"])
async def test_a_drip_fed_key_set_fails_after_the_timeout_under_asyncio(
    issuer: Issuer, drip_head: bool
) -> None:
    issuer.jwks_drip, issuer.drip_head = 0.1, drip_head
    verifier = verifier_for(issuer, timeout=1)

    with pytest.raises(KeysUnavailableError):
        await asyncio.wait_for(verifier.averify(issuer.signer.token()), 10)

    assert "longer than the timeout" in (verifier.status().last_error or "")


def test_without_any_key_set_it_says_so_and_does_not_retry_at_once(issuer: Issuer) -> None:
    issuer.jwks_status = 503
    verifier = verifier_for(issuer)

    for _ in range(5):
        with pytest.raises(KeysUnavailableError):
            verifier.verify(issuer.signer.token())

    assert issuer.jwks_requests == 1


def test_verified_tokens_are_forgotten_when_their_key_leaves_the_set(issuer: Issuer) -> None:
    # An emergency revocation: the key is gone from the JWK Set at the next fetch.
    verifier = verifier_for(issuer, min_refetch_interval=0)
    token = issuer.signer.token()
    verifier.verify(token)

    issuer.rotate(keep=False)
    verifier.verify(issuer.signer.token())  # its unknown kid makes the verifier fetch

    assert "unknown key" in _refusal(verifier, token)


def test_a_token_verified_with_keys_a_refresh_replaced_is_not_kept(
    issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Thread B verifies with the keys in hand while thread A's refresh drops the key that
    # signed B's token (revoked at the issuer). B's answer stands, but it must not be kept
    # under the new key set: the next request with that token is refused.
    issuer.cache_control = "no-store"
    verifier = verifier_for(issuer, min_cache_seconds=0, min_refetch_interval=0)
    revoked = issuer.signer
    verifier.verify(revoked.token(revoked.claims(jti="warm-up")))
    token = revoked.token(revoked.claims(jti="signed-with-the-revoked-key"))
    current = issuer.rotate(keep=False)
    issuer.jwks_gate = threading.Event()
    checking, refreshed = threading.Event(), threading.Event()
    verify = _rules.verify

    def slow_verify(*args: Any, **kwargs: Any) -> VerifiedToken:
        if threading.current_thread().name == "B":  # a busy CPU between keys and cache
            checking.set()
            refreshed.wait(GATE_SECONDS)
        return verify(*args, **kwargs)

    monkeypatch.setattr(_rules, "verify", slow_verify)
    outcomes: dict[str, object] = {}

    def run(name: str, token: str) -> None:
        try:
            outcomes[name] = verifier.verify(token).claims["jti"]
        except InvalidTokenError as exc:
            outcomes[name] = exc
        finally:
            if name == "A":
                refreshed.set()

    a = threading.Thread(target=run, args=("A", current.token()), name="A")
    a.start()  # its kid is new: it fetches, and the issuer holds the answer back
    _wait_for_jwks_requests(issuer, 2)
    b = threading.Thread(target=run, args=("B", token), name="B")
    b.start()  # the refresh is A's: B goes on with the keys in hand, the revoked one too
    assert checking.wait(GATE_SECONDS)
    issuer.jwks_gate.set()
    a.join(GATE_SECONDS)
    b.join(GATE_SECONDS)

    assert outcomes == {"A": current.claims()["jti"], "B": "signed-with-the-revoked-key"}
    assert verifier.status().key_ids == (current.kid,)
    assert "unknown key" in _refusal(verifier, token)


@pytest.mark.anyio
async def test_averify_fetches_without_blocking_and_shares_the_rules(issuer: Issuer) -> None:
    verifier = verifier_for(issuer)

    token = await verifier.averify(issuer.signer.token())

    assert token.sub == "user-1"
    with pytest.raises(InvalidTokenError, match="typ|access token"):
        await verifier.averify(issuer.signer.token(typ="JWT"))
    assert issuer.jwks_requests == 1


# --- the FastAPI dependency: answers as the service's guards do (RFC 6750 §3) ---------------


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.anyio
async def test_require_answers_401_to_a_header_of_the_wrong_types(issuer: Issuer) -> None:
    token = _with_header(issuer.signer, alg=["RS256"], kid=[issuer.signer.kid])
    async with downstream(verifier_for(issuer)) as client:
        response = await client.get("/anything", headers=_bearer(token))

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    assert "algorithm" in response.json()["detail"]


@pytest.mark.anyio
async def test_require_answers_503_before_any_key_set_could_be_fetched(issuer: Issuer) -> None:
    issuer.jwks_status = 500
    async with downstream(verifier_for(issuer)) as client:
        response = await client.get("/anything", headers=_bearer(issuer.signer.token()))

    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert "keys" in response.json()["detail"]


@pytest.mark.anyio
async def test_require_answers_500_naming_both_issuers_when_they_differ(issuer: Issuer) -> None:
    issuer.metadata_issuer = _localhost(issuer.url)
    async with downstream(verifier_for(issuer)) as client:
        response = await client.get("/anything", headers=_bearer(issuer.signer.token()))

    assert response.status_code == 500
    assert "Retry-After" not in response.headers
    assert "www-authenticate" not in response.headers  # not the bearer's doing
    detail = response.json()["detail"]
    assert repr(issuer.url) in detail
    assert repr(issuer.metadata_issuer) in detail


@pytest.mark.anyio
async def test_require_shows_the_bearer_scheme_in_openapi(issuer: Issuer) -> None:
    async with downstream(verifier_for(issuer)) as client:
        document = (await client.get("/openapi.json")).json()

    schemes = document["components"]["securitySchemes"]
    assert [scheme["scheme"] for scheme in schemes.values()] == ["bearer"]
    assert document["paths"]["/orders"]["get"]["security"]


# --- how to install it ---------------------------------------------------------------------


def test_without_fastapi_the_package_imports_and_require_says_what_is_missing() -> None:
    # FastAPI is an extra: `verify()` users must not need it, and nothing but `require`
    # may import it. A fresh interpreter, where importing FastAPI fails.
    script = """
import sys
sys.modules["fastapi"] = None
import auth_service_verifier
verifier = auth_service_verifier.TokenVerifier(issuer="http://127.0.0.1:1", audience="a")
try:
    verifier.require("orders:read")
except ImportError as exc:
    print(exc)
print([name for name, module in sys.modules.items() if module and "starlette" in name])
"""
    ran = subprocess.run(  # noqa: S603 (our own interpreter and script)
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )

    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == [
        "TokenVerifier.require needs FastAPI: pip install fastapi",
        "[]",
    ]


def test_install_lines_never_take_the_verifier_by_its_bare_name() -> None:
    # No release is published: installing auth-service-verifier by that name would install whatever
    # someone else published under that name. A path or a git URL, never the bare name.
    root = Path(__file__).resolve().parents[2]
    texts = [*root.glob("*.md"), *root.glob("examples/**/*"), *root.glob("verifier/**/*")]
    lines = [
        line.strip()
        for path in texts
        if path.suffix in (".md", ".py")
        for line in path.read_text().splitlines()
        if "pip install" in line
    ]

    assert any("./verifier[fastapi]" in line for line in lines), lines
    named = [line for line in lines if "auth-service-verifier" in line]
    assert named, lines
    assert [line for line in named if "@ git+" not in line] == []
