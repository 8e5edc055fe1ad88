"""All ORM models, imported here so Alembic's autogenerate sees every table."""

from shared.models.api_key import ApiKey
from shared.models.base import Base
from shared.models.conversation import (
    TERMINAL_STATUSES,
    Conversation,
    ConversationStatus,
    Priority,
)
from shared.models.model_version import ModelVersion
from shared.models.user import User
from shared.models.webhook_delivery import DeliveryState, WebhookDelivery

__all__ = [
    "TERMINAL_STATUSES",
    "ApiKey",
    "Base",
    "Conversation",
    "ConversationStatus",
    "DeliveryState",
    "ModelVersion",
    "Priority",
    "User",
    "WebhookDelivery",
]
