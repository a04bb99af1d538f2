"""OAuth clients in the database, and the locks the rules about clients decide under."""

from sqlalchemy import String, cast, func, text
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from auth_service.models import OAuthClient


async def get(db: AsyncSession, client_id: str) -> OAuthClient | None:
    return await db.get(OAuthClient, client_id)


async def page(db: AsyncSession, *, limit: int, offset: int) -> tuple[list[OAuthClient], int]:
    """A page of clients, oldest first, and how many there are in all."""
    found = await db.exec(
        select(OAuthClient)
        .order_by(col(OAuthClient.created_at), col(OAuthClient.client_id))
        .limit(limit)
        .offset(offset)
    )
    total = await db.exec(select(func.count()).select_from(OAuthClient))
    return list(found.all()), total.one()


async def save(db: AsyncSession, client: OAuthClient) -> None:
    """Write a new client, or the changes made to one."""
    db.add(client)
    await db.flush()


async def delete(db: AsyncSession, client: OAuthClient) -> None:
    """Delete `client` (the caller has ended its sessions)."""
    await db.delete(client)
    await db.flush()


async def share_lock_is_active(db: AsyncSession, client_id: str) -> bool:
    """Is the client there and active? Its row, when there, stays share-locked until the
    transaction ends (PostgreSQL: FOR SHARE), so a deactivation or deletion waits."""
    found = await db.exec(
        select(col(OAuthClient.is_active))
        .where(col(OAuthClient.client_id) == client_id)
        .with_for_update(read=True)
    )
    return bool(found.first())


async def lock(db: AsyncSession, client_id: str) -> None:
    """Lock the client's row until the transaction ends (PostgreSQL: FOR UPDATE), behind
    any transaction holding it shared (`share_lock_is_active`)."""
    await db.exec(
        select(col(OAuthClient.client_id))
        .where(col(OAuthClient.client_id) == client_id)
        .with_for_update()
    )


async def lock_admin_sign_in_clients(db: AsyncSession, *, grant: str, scope: str) -> list[str]:
    """The ids of the active clients whose lists hold `grant` and `scope`, locked until the
    transaction ends.

    So that a check of these clients and the change after it are one serialized step.
    PostgreSQL: their rows are locked in id order (two such transactions queue instead of
    deadlocking; a row changed meanwhile is judged again as it is now). SQLite: a write
    that matches nothing takes the database's write lock first (its SELECTs would otherwise
    run outside the transaction).
    """
    if db.get_bind().dialect.name == "sqlite":
        await (await db.connection()).execute(
            text("UPDATE clients SET is_active = is_active WHERE 1 = 0")
        )
    # The lists are JSON arrays of strings without quotes in them (scope-tokens exclude '"'):
    # a quoted item's text finds the candidates, which are then checked item by item.
    found = await db.exec(
        select(OAuthClient)
        .where(
            col(OAuthClient.is_active),
            cast(col(OAuthClient.grant_types), String).like(f'%"{grant}"%'),
            cast(col(OAuthClient.scopes), String).like(f'%"{scope}"%'),
        )
        .order_by(col(OAuthClient.client_id))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return [c.client_id for c in found.all() if grant in c.grant_types and scope in c.scopes]


async def reread_locked(db: AsyncSession, client: OAuthClient) -> OAuthClient | None:
    """`client` read again from the database over what the session holds; None when it was
    deleted meanwhile. PostgreSQL: its row stays locked until the transaction ends.

    After `lock_admin_sign_in_clients`, what it returns is what the rule must decide on: the
    copy loaded before the lock may be stale.
    """
    found = await db.exec(
        select(OAuthClient)
        .where(col(OAuthClient.client_id) == client.client_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return found.first()
