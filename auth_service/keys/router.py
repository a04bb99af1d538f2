"""Signing key administration: list, rotate, revoke (RFC 7517 key sets, RFC 7515 `kid`).

A rotation publishes the next key at once and it signs later, at its `signs_from`
(OpenID Connect Core §10.1.1); every worker switches then by itself.

For holders of the `admin` role with the `admin:keys` scope. The worker that makes a change
loads the new key set as soon as it is committed, before it answers, so the change counts
there at once; every other worker and replica loads it at its next poll of the table
(`AUTH_KEY_REFRESH_SECONDS`).
"""

import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, status
from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.keys import service as keys
from auth_service.keys.schemas import SigningKeyPublic, SigningKeysPublic
from auth_service.keys.service import KeyRing
from auth_service.kit.db import transaction
from auth_service.web.deps import DbDep, SettingsDep, state_of
from auth_service.web.guards import require_key_admin
from auth_service.web.schemas import ErrorResponse

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/admin/keys",
    tags=["admin"],
    dependencies=[Depends(require_key_admin)],
)


async def _key_ring(request: Request) -> KeyRing:
    return state_of(request).key_ring


async def _changing_db(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's transaction; once it is committed, this worker loads the key set."""
    state = state_of(request)
    async with transaction(state.sessionmaker) as db:
        yield db
    try:
        await state.key_ring.load()
    except Exception:  # committed all the same: the next poll loads it, so answer success
        logger.warning("signing keys changed; this worker loads them at its next poll")


KeyRingDep = Annotated[KeyRing, Depends(_key_ring)]
# scope="function": committed and loaded before the response goes out.
ChangingDbDep = Annotated[AsyncSession, Depends(_changing_db, scope="function")]
Kid = Annotated[
    str,
    Path(
        max_length=64,
        pattern=r"^[\x21-\x7E]+$",  # printable ASCII, as every kid is (base64url)
        description="The key's `kid`, as in the JWK Set.",
    ),
]


@router.get("")
async def list_keys(db: DbDep, ring: KeyRingDep) -> SigningKeysPublic:
    """Every signing key ever stored, newest first, with its state, when it signs from and
    when it retires."""
    found = await keys.list_keys(db=db, alg=ring.alg)
    return SigningKeysPublic(data=[SigningKeyPublic.model_validate(key) for key in found])


@router.post(
    "/rotate", status_code=status.HTTP_201_CREATED, responses={409: {"model": ErrorResponse}}
)
async def rotate_keys(
    db: ChangingDbDep, settings: SettingsDep, ring: KeyRingDep
) -> SigningKeyPublic:
    """Publish a new key in the JWK Set now; it signs from its `signs_from`, once verifiers
    have fetched it, and the earlier ones verify until their tokens expire.

    409 while the next key of an earlier rotation has not begun to sign.
    """
    key = await ring.rotate(db=db, access_token_ttl=settings.access_token_ttl)
    return SigningKeyPublic.model_validate(key)


@router.post("/{kid}/revoke", responses={404: {"model": ErrorResponse}})
async def revoke_key(
    kid: Kid, db: ChangingDbDep, settings: SettingsDep, ring: KeyRingDep
) -> SigningKeyPublic:
    """Revoke a compromised key at once: its tokens are refused and it leaves the JWK Set.

    The signing key is first replaced, at once, by the next key or a new one. Revoking the
    next key cancels its rotation. Revoking a revoked key changes nothing.
    """
    key = await ring.revoke(db=db, kid=kid, access_token_ttl=settings.access_token_ttl)
    return SigningKeyPublic.model_validate(key)
