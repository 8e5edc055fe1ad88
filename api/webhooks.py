"""Webhooks on the API side: a submission's callback_url checked, and the delivery of a
conversation the API itself ends (cancel, delete) queued after its commit."""

from __future__ import annotations

import uuid

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.errors import UnprocessableError
from shared.schemas.conversations import ConversationCreate
from shared.settings import Settings
from shared.webhook_deliveries import schedule_delivery
from shared.webhooks import DestinationRefusedError, check_url


def _refused(message: str) -> UnprocessableError:
    return UnprocessableError(
        message,
        details=[{"loc": ["body", "callback_url"], "msg": message, "type": "value_error"}],
    )


def check_callback(data: ConversationCreate, settings: Settings) -> None:
    """A callback_url the deployment can deliver to, or 422: webhooks configured
    (`WEBHOOK_SECRET`), a generated conversation, and a destination the rules allow on its
    literal host (its resolved addresses are checked again at each delivery)."""
    if data.callback_url is None:
        return
    if settings.WEBHOOK_SECRET is None:
        raise _refused("Webhooks are not configured here (WEBHOOK_SECRET is not set)")
    if data.response is not None:
        raise _refused("callback_url is for a generated conversation, not one given its response")
    try:
        check_url(data.callback_url, settings.webhook_allowed_hosts)
    except DestinationRefusedError as exc:
        raise _refused(str(exc)) from None


async def after_cancel(engine: AsyncEngine, queue: ArqRedis, conversation_id: uuid.UUID) -> None:
    """The conversation was cancelled (or deleted while unfinished) and committed: queue its
    webhook if it has a callback. Never raises; the sweeper covers what fails here."""
    await schedule_delivery(engine, queue, queue.default_queue_name, conversation_id)
