from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import ColumnElement, Table, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import AppError
from shared.models.base import Record

RecordT = TypeVar("RecordT", bound=Record)

# A constraint (unique index, foreign key) by name → the error a write violating it means.
Violations = Mapping[str, AppError]

# SQLSTATEs of the violations a concurrent request can cause between a check and a write.
_RACE_SQLSTATES = frozenset({"23505", "23503"})  # unique_violation, foreign_key_violation


def column_list(table: Table, names: Collection[str], *, alias: str | None = None) -> str:
    """`names` as a written-out statement lists them (quoted, `alias.` first if given), each
    checked against the mapped table, so a renamed column fails at import, not at run time."""
    missing = set(names) - set(table.columns.keys())
    if missing:
        raise RuntimeError(f"not columns of {table.name}: {sorted(missing)}")
    prefix = f"{alias}." if alias else ""
    return ", ".join(f'{prefix}"{name}"' for name in names)


def violated_constraint(exc: IntegrityError) -> str | None:
    """The unique index or foreign key a failed write ran into, as PostgreSQL names it."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) not in _RACE_SQLSTATES:
        return None
    # The driver's own error (asyncpg's) carries the name; SQLAlchemy's adapter chains it.
    name = getattr(getattr(orig, "__cause__", None), "constraint_name", None)
    return name if isinstance(name, str) else None


class RecordRepository(Generic[RecordT]):
    """Queries every soft-deletable resource shares; deleted rows are invisible here."""

    model: ClassVar[type[Any]]

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, record_id: uuid.UUID, *, for_update: bool = False) -> RecordT | None:
        """The active row; `for_update` locks it until the transaction ends."""
        stmt = (
            select(self.model)
            .where(self.model.id == record_id, self.model.is_active)
            .execution_options(populate_existing=True)
        )
        if for_update:
            stmt = stmt.with_for_update()
        result: RecordT | None = (await self.session.execute(stmt)).scalar_one_or_none()
        return result

    async def add(self, record: RecordT, *, violations: Violations | None = None) -> RecordT:
        """Insert `record`; see `flush` for `violations`."""
        self.session.add(record)
        await self.flush(violations)  # eager defaults: the INSERT returns the server's values
        return record

    async def flush(self, violations: Violations | None = None) -> None:
        """Write pending changes; a write refused by a constraint in `violations` raises the
        error mapped to it.

        The services check uniqueness and existence before writing, but a concurrent request
        can commit the same email, or remove a referenced row, between the check and the
        write. The database then refuses the write, and the caller gets the answer the check
        would have given (409, 404) instead of a 500. Other integrity errors are bugs and
        propagate.
        """
        try:
            await self.session.flush()
        except IntegrityError as exc:
            error = (violations or {}).get(violated_constraint(exc) or "")
            if error is None:
                raise
            # Not chained: the driver's message quotes the row's values (an email, a prompt).
            raise error from None

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

    async def refresh(self, record: RecordT, *, violations: Violations | None = None) -> RecordT:
        """Write `record`'s changes (the UPDATE returns `updated_at`); see `flush`."""
        await self.flush(violations)
        return record
