"""OAuth client administration, for holders of the `admin` role with the `admin:clients` scope."""

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Response, status
from fastapi.responses import JSONResponse

from auth_service.access.scopes import Scope
from auth_service.clients import service as clients
from auth_service.clients.schemas import (
    ClientCreate,
    ClientCreated,
    ClientPublic,
    ClientSecret,
    ClientsPublic,
    ClientUpdate,
    SecretRotation,
)
from auth_service.models import ADMIN_ROLE
from auth_service.web.deps import DbDep, SettingsDep
from auth_service.web.guards import require_roles
from auth_service.web.schemas import ErrorResponse

router = APIRouter(
    prefix="/admin/clients",
    tags=["admin"],
    dependencies=[Depends(require_roles(ADMIN_ROLE, scopes=(Scope.ADMIN_CLIENTS,)))],
    responses={404: {"model": ErrorResponse}},
)

ClientId = Annotated[str, Path(max_length=255, pattern=r"^[\x21-\x7E]+$")]
_CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": ErrorResponse}}
# A secret is in the answer: no cache may keep it (RFC 9111 §5.2.2.5).
_NO_STORE = {"Cache-Control": "no-store"}


@router.get("")
async def list_clients(
    db: DbDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> ClientsPublic:
    """List clients, oldest first, with the total count."""
    found, total = await clients.list_clients(db=db, limit=limit, offset=offset)
    return ClientsPublic(data=[ClientPublic.model_validate(c) for c in found], count=total)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ClientCreated,
    responses={422: {"model": ErrorResponse}},
)
async def create_client(data: ClientCreate, db: DbDep) -> JSONResponse:
    """Register a client; a confidential one's secret is in this answer and nowhere else."""
    client, secret = await clients.create_client(
        db=db,
        name=data.name,
        confidential=data.confidential,
        scopes=data.scopes,
        grant_types=data.grant_types,
        audiences=data.audiences,
        redirect_uris=data.redirect_uris,
    )
    body = ClientCreated(**ClientPublic.model_validate(client).model_dump(), client_secret=secret)
    return JSONResponse(
        body.model_dump(mode="json"), status_code=status.HTTP_201_CREATED, headers=_NO_STORE
    )


@router.get("/{client_id}")
async def read_client(client_id: ClientId, db: DbDep) -> ClientPublic:
    """One client."""
    return ClientPublic.model_validate(await clients.get_client(db=db, client_id=client_id))


@router.patch("/{client_id}", responses={**_CONFLICT, 422: {"model": ErrorResponse}})
async def update_client(client_id: ClientId, data: ClientUpdate, db: DbDep) -> ClientPublic:
    """Change a client; deactivation refuses its tokens and ends its sessions at once. A
    change that leaves admins no client to sign in through with `admin:clients` is a 409."""
    client = await clients.get_client(db=db, client_id=client_id)
    updated = await clients.update_client(
        db=db,
        client=client,
        name=data.name,
        scopes=data.scopes,
        grant_types=data.grant_types,
        audiences=data.audiences,
        redirect_uris=data.redirect_uris,
        is_active=data.is_active,
    )
    return ClientPublic.model_validate(updated)


@router.post(
    "/{client_id}/secret",
    response_model=ClientSecret,
    responses={**_CONFLICT, 422: {"model": ErrorResponse}},
)
async def rotate_secret(
    client_id: ClientId,
    db: DbDep,
    data: Annotated[SecretRotation | None, Body()] = None,
) -> JSONResponse:
    """A new secret for a confidential client, shown once. The old one stops working at
    once, or after `grace_seconds` while its services move to the new one."""
    client = await clients.get_client(db=db, client_id=client_id)
    grace = timedelta(seconds=data.grace_seconds if data else 0)
    secret = await clients.rotate_secret(db=db, client=client, grace=grace)
    body = ClientSecret(
        client_id=client.client_id,
        client_secret=secret,
        previous_secret_expires_at=client.previous_secret_expires_at,
    )
    return JSONResponse(body.model_dump(mode="json"), headers=_NO_STORE)


@router.delete("/{client_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_CONFLICT)
async def delete_client(client_id: ClientId, db: DbDep, settings: SettingsDep) -> Response:
    """Delete a client for good, with every session signed in through it."""
    client = await clients.get_client(db=db, client_id=client_id)
    await clients.delete_client(db=db, client=client, settings=settings)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
