"""Rows for tests, created through the same services the API uses."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import update

from shared.db import SessionFactory, unit_of_work
from shared.models import Conversation
from shared.schemas.conversations import ConversationCreate
from shared.schemas.model_versions import ModelVersionCreate
from shared.schemas.users import UserCreate
from shared.services.conversations import create_conversation, get_conversation
from shared.services.model_versions import create_model_version
from shared.services.users import create_user

PROVIDERS = frozenset({"ollama", "openai"})


async def make_conversation(
    session_factory: SessionFactory,
    *,
    provider: str = "ollama",
    model_name: str = "llama3.2:3b",
    model_options: dict[str, Any] | None = None,
    **fields: Any,
) -> uuid.UUID:
    """A pending conversation (plus its user and model version); returns its id."""
    async with unit_of_work(session_factory) as session:
        user = await create_user(session, data=UserCreate(email=f"{uuid.uuid4().hex}@example.com"))
        model_version = await create_model_version(
            session,
            data=ModelVersionCreate(
                provider=provider,
                model_name=model_name,
                version_tag=uuid.uuid4().hex[:8],
                **(model_options or {}),
            ),
        )
    data = ConversationCreate(
        user_id=user.id,
        model_version_id=model_version.id,
        prompt=fields.pop("prompt", "hello"),
        **fields,
    )
    engine = session_factory.kw["bind"]
    stored = await create_conversation(
        engine, data=data, user_id=user.id, supported_providers=PROVIDERS | {provider}
    )
    conversation_id: uuid.UUID = stored.row["id"]
    return conversation_id


async def load(session_factory: SessionFactory, conversation_id: uuid.UUID) -> Conversation:
    async with session_factory() as session:
        return await get_conversation(session, conversation_id=conversation_id, owner_id=None)


async def set_columns(
    session_factory: SessionFactory, conversation_id: uuid.UUID, **values: Any
) -> None:
    """Put a row in a state the test needs (an expired lease, an old timestamp...)."""
    async with unit_of_work(session_factory) as session:
        await session.execute(
            update(Conversation).where(Conversation.id == conversation_id).values(**values)
        )
