from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_, select, update
from sqlalchemy.sql.expression import literal

from shared.lifecycle import Outcome, storable_text
from shared.models import Conversation, ConversationStatus
from shared.repositories.base import RecordRepository
from shared.schemas.conversations import ConversationOrder

CONVERSATION_ORDER: dict[ConversationOrder, ColumnElement[Any]] = {
    ConversationOrder.CREATED_AT_DESC: Conversation.created_at.desc(),
    ConversationOrder.CREATED_AT_ASC: Conversation.created_at.asc(),
    ConversationOrder.LATENCY_MS_ASC: Conversation.latency_ms.asc().nulls_last(),
    ConversationOrder.LATENCY_MS_DESC: Conversation.latency_ms.desc().nulls_last(),
}

_RUNNING = ConversationStatus.RUNNING.value
_PENDING = ConversationStatus.PENDING.value
_UNFINISHED = (_PENDING, _RUNNING)


def _seconds(value: float) -> ColumnElement[Any]:
    return literal(timedelta(seconds=value))


class ConversationRepository(RecordRepository[Conversation]):
    model = Conversation

    async def claim(
        self, conversation_id: uuid.UUID, *, lease_seconds: float
    ) -> Conversation | None:
        """Take the row for one attempt: pending (or running with an expired lease) → running.

        The returned `attempts` is the fencing token: every later write of this attempt is
        conditional on it, so a worker that lost its lease can never overwrite a newer one.
        """
        now = func.now()
        stmt = (
            update(Conversation)
            .where(
                Conversation.id == conversation_id,
                Conversation.is_active,
                or_(
                    Conversation.status == _PENDING,
                    and_(Conversation.status == _RUNNING, Conversation.lease_expires_at < now),
                ),
            )
            .values(
                status=_RUNNING,
                attempts=Conversation.attempts + 1,
                started_at=func.coalesce(Conversation.started_at, now),
                lease_expires_at=now + _seconds(lease_seconds),
                next_attempt_at=None,
                queue_wait_ms=func.coalesce(
                    Conversation.queue_wait_ms,
                    func.extract("epoch", now - Conversation.created_at) * 1000,
                ),
                updated_at=now,
            )
            .returning(Conversation)
            .execution_options(synchronize_session=False)
        )
        result: Conversation | None = (await self.session.execute(stmt)).scalar_one_or_none()
        return result

    async def settle(
        self,
        conversation_id: uuid.UUID,
        outcome: Outcome,
        *,
        attempt: int | None = None,
        owner_id: uuid.UUID | None = None,
    ) -> bool:
        """Write `outcome` if the row is still the caller's to end; False when it is not.

        A worker passes its `attempt`: the write lands only while that attempt holds the row
        (running, same attempt number), so an attempt that lost its lease changes nothing. A
        client's cancel passes no attempt: it ends any unfinished, active row (of `owner_id`,
        when given), and the running attempt's own write then finds the row taken.
        """
        fence: list[ColumnElement[bool]]
        if attempt is not None:
            fence = [Conversation.status == _RUNNING, Conversation.attempts == attempt]
        else:
            fence = [Conversation.is_active.is_(True), Conversation.status.in_(_UNFINISHED)]
            if owner_id is not None:
                fence.append(Conversation.user_id == owner_id)
        stmt = (
            update(Conversation)
            .where(Conversation.id == conversation_id, *fence)
            .values(**outcome.columns())
            .returning(Conversation.id)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none() is not None

    async def keep_cancelled_text(
        self, conversation_id: uuid.UUID, *, attempt: int, text: str
    ) -> bool:
        """A client cancelled `attempt` mid-generation: the row is `cancelled` already; the text
        the model had produced becomes its response (once, and only for that attempt)."""
        stmt = (
            update(Conversation)
            .where(
                Conversation.id == conversation_id,
                Conversation.status == ConversationStatus.CANCELLED.value,
                Conversation.attempts == attempt,
                Conversation.response.is_(None),
            )
            .values(response=storable_text(text), updated_at=func.now())
            .returning(Conversation.id)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none() is not None

    async def soft_delete(self, conversation_id: uuid.UUID, *, owner_id: uuid.UUID | None) -> bool:
        owned = [] if owner_id is None else [Conversation.user_id == owner_id]
        stmt = (
            update(Conversation)
            .where(Conversation.id == conversation_id, Conversation.is_active, *owned)
            .values(is_active=False, updated_at=func.now())
            .returning(Conversation.id)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none() is not None

    async def has_outcome(
        self, conversation_id: uuid.UUID, *, attempt: int, status: ConversationStatus
    ) -> bool:
        stmt = select(Conversation.id).where(
            Conversation.id == conversation_id,
            Conversation.attempts == attempt,
            Conversation.status == status.value,
        )
        return (await self.session.scalar(stmt)) is not None

    async def get_owned(
        self, conversation_id: uuid.UUID, owner_id: uuid.UUID | None, *, for_update: bool = False
    ) -> Conversation | None:
        """The active row, if `owner_id` owns it (None: whoever owns it)."""
        conversation = await self.get(conversation_id, for_update=for_update)
        if conversation is None or (owner_id is not None and conversation.user_id != owner_id):
            return None
        return conversation

    async def reclaim_expired_leases(self, *, max_attempts: int, limit: int) -> list[uuid.UUID]:
        """Running rows whose worker vanished go back to pending, or fail when out of tries.

        Returns the ids put back to pending; `SKIP LOCKED` lets many sweepers run at once.
        """
        expired = (
            select(Conversation.id)
            .where(Conversation.status == _RUNNING, Conversation.lease_expires_at < func.now())
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        exhausted = Conversation.attempts >= max_attempts
        stmt = (
            update(Conversation)
            .where(Conversation.id.in_(expired))
            .values(
                status=case((exhausted, ConversationStatus.FAILED.value), else_=_PENDING),
                error_code=case(
                    (exhausted, "max_attempts_exceeded"), else_=Conversation.error_code
                ),
                error_message=case(
                    (
                        exhausted,
                        func.concat(
                            "gave up after ",
                            Conversation.attempts,
                            " attempts; the last one stopped without reporting (lease expired)",
                            # `||`, not concat(): NULL when there was no earlier error.
                            func.coalesce(
                                literal("; last error: ") + Conversation.error_message, ""
                            ),
                        ),
                    ),
                    else_=Conversation.error_message,
                ),
                completed_at=case((exhausted, func.now()), else_=None),
                lease_expires_at=None,
                updated_at=func.now(),
            )
            .returning(Conversation.id, Conversation.status)
            .execution_options(synchronize_session=False)
        )
        rows = (await self.session.execute(stmt)).all()
        return [row.id for row in rows if row.status == _PENDING]

    async def due_pending_ids(self, *, older_than_seconds: float, limit: int) -> list[uuid.UUID]:
        """Pending rows that should be in the queue by now (their job may have been lost)."""
        due = func.coalesce(Conversation.next_attempt_at, Conversation.updated_at)
        stmt = (
            select(Conversation.id)
            .where(
                Conversation.status == _PENDING,
                Conversation.is_active,
                due < func.now() - _seconds(older_than_seconds),
            )
            .order_by(due)
            .limit(limit)
        )
        return list((await self.session.scalars(stmt)).all())

    async def oldest_pending_age(self) -> float | None:
        """Seconds the oldest active pending row has waited (None: none waits). One index
        lookup however many rows wait: probes and scrapes call this."""
        oldest = (
            select(func.extract("epoch", func.now() - Conversation.created_at))
            .where(Conversation.status == _PENDING, Conversation.is_active)
            .order_by(Conversation.created_at)
            .limit(1)
        )
        age = await self.session.scalar(oldest)
        return float(age) if age is not None else None
