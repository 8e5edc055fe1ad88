"""How long the oldest pending conversation of each priority has waited."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.models import Conversation, ConversationStatus, Priority

# One statement, one index lookup per priority (ix_conversation_pending_priority): the cost
# does not grow with the backlog.
_OLDEST_BY_PRIORITY = text(
    f"""
SELECT p.priority, (
  SELECT extract(epoch FROM now() - c.created_at)
  FROM "{Conversation.__tablename__}" AS c
  WHERE c.status = '{ConversationStatus.PENDING.value}' AND c.priority = p.priority
    AND c.is_active
  ORDER BY c.created_at LIMIT 1
) AS age
FROM unnest(CAST(:priorities AS text[])) AS p(priority)
"""  # noqa: S608  (names from the mapped schema; values are bound)
)


async def oldest_pending_age_by_priority(session: AsyncSession) -> dict[str, float | None]:
    """Seconds the oldest active pending conversation of each priority has waited (None:
    none of that priority waits)."""
    rows = await session.execute(_OLDEST_BY_PRIORITY, {"priorities": [p.value for p in Priority]})
    return {row.priority: None if row.age is None else float(row.age) for row in rows}
