"""How many conversations each user has waiting and running: for the admin's queue view."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.models import Conversation, ConversationStatus, User
from shared.schemas.common import Page
from shared.schemas.queue import QueuedByUser

_PENDING = ConversationStatus.PENDING.value
_RUNNING = ConversationStatus.RUNNING.value


def page_statement(page: Page) -> Select[Any]:
    """The page's users (id, email, pending, running) and the number of such users."""
    pending = func.count().filter(Conversation.status == _PENDING)
    running = func.count().filter(Conversation.status == _RUNNING)
    grouped = (
        select(
            Conversation.user_id,
            pending.label("pending"),
            running.label("running"),
            func.count().over().label("users"),
        )
        .where(Conversation.status.in_((_PENDING, _RUNNING)), Conversation.is_active)
        .group_by(Conversation.user_id)
        .order_by(func.count().desc(), pending.desc(), Conversation.user_id)
        .limit(page.limit)
        .offset(page.offset)
        .subquery()
    )
    return (
        select(grouped.c.user_id, User.email, grouped.c.pending, grouped.c.running, grouped.c.users)
        .join(User, User.id == grouped.c.user_id)
        .order_by(
            (grouped.c.pending + grouped.c.running).desc(),
            grouped.c.pending.desc(),
            grouped.c.user_id,
        )
    )


async def queued_by_user(session: AsyncSession, *, page: Page) -> tuple[list[QueuedByUser], int]:
    """One page of the users with unfinished (active) conversations, most unfinished first,
    then most pending, then by id; and how many such users there are.

    One statement: a GROUP BY over the partial index of unfinished conversations
    (`ix_conversation_user_id_unfinished`), so its cost follows the unfinished rows, not the
    table; only the page's users are joined for their email.
    """
    stmt = page_statement(page)
    rows = (await session.execute(stmt)).all()
    if rows:
        total = int(rows[0].users)
    elif page.offset:
        # Past the last page the window counted nothing: count the users apart.
        count = select(func.count(func.distinct(Conversation.user_id))).where(
            Conversation.status.in_((_PENDING, _RUNNING)), Conversation.is_active
        )
        total = int(await session.scalar(count) or 0)
    else:
        total = 0
    return [
        QueuedByUser(user_id=r.user_id, email=r.email, pending=r.pending, running=r.running)
        for r in rows
    ], total
