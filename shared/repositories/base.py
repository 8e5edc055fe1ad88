from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.models.base import Record

RecordT = TypeVar("RecordT", bound=Record)


class RecordRepository(Generic[RecordT]):
    """Queries every soft-deletable resource shares; deleted rows are invisible here."""

    model: ClassVar[type[Any]]

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, record_id: uuid.UUID, *, for_update: bool = False) -> RecordT | None:
        stmt = (
            select(self.model)
            .where(self.model.id == record_id, self.model.is_active)
            .execution_options(populate_existing=True)
        )
        if for_update:
            stmt = stmt.with_for_update()
        result: RecordT | None = (await self.session.execute(stmt)).scalar_one_or_none()
        return result

    async def add(self, record: RecordT) -> RecordT:
        self.session.add(record)
        await self.session.flush()
        await self.session.refresh(record)
        return record

    async def list_page(
        self,
        *,
        filters: Sequence[ColumnElement[bool]] = (),
        order_by: Sequence[ColumnElement[Any]],
        limit: int,
        offset: int,
    ) -> tuple[list[RecordT], int]:
        """One page of active rows and the number of active rows matching the filters."""
        where = [self.model.is_active, *filters]
        total = await self.session.scalar(
            select(func.count()).select_from(self.model).where(*where)
        )
        # The id breaks ties so pages never repeat or skip rows with equal sort keys.
        stmt = (
            select(self.model)
            .where(*where)
            .order_by(*order_by, self.model.id)
            .limit(limit)
            .offset(offset)
        )
        rows: list[RecordT] = list((await self.session.scalars(stmt)).all())
        return rows, int(total or 0)

    async def refresh(self, record: RecordT) -> RecordT:
        await self.session.flush()
        await self.session.refresh(record)
        return record
