"""Requests racing for one unique value, or for a row being removed, never get a 500.

The services check before they write, but a concurrent request can commit between the check
and the write; the database's unique index or foreign key then refuses the write, and the
loser gets the answer the check would have given. These run real concurrent requests through
the app against the real database (its pool has room for all of them at once).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import SessionFactory, unit_of_work
from shared.errors import ConflictError
from shared.models import Base, ModelVersion
from shared.models.conversation import MODEL_VERSION_FOREIGN_KEY, USER_FOREIGN_KEY
from shared.models.model_version import ACTIVE_TRIPLE_UNIQUE_INDEX
from shared.models.user import EMAIL_UNIQUE_INDEX
from shared.repositories.model_versions import ModelVersionRepository
from shared.repositories.users import UserRepository
from shared.schemas.conversations import ConversationCreate
from shared.schemas.model_versions import ModelVersionCreate
from shared.schemas.users import UserCreate
from shared.services import conversations as conversation_service
from shared.services.model_versions import create_model_version as new_model
from shared.services.users import create_user as new_user
from shared.settings import Settings
from tests.api.conftest import assert_error, create_model_version, create_user
from tests.factories import PROVIDERS

RACERS = 20


@pytest.fixture(autouse=True)
def _pool_fits_the_racers(settings: Settings) -> None:
    # Every racer holds a connection at once; more would wait for the pool instead of racing.
    assert settings.DB_POOL_SIZE + settings.DB_MAX_OVERFLOW >= RACERS


async def _race(requests: list[Awaitable[httpx.Response]]) -> list[httpx.Response]:
    return list(await asyncio.gather(*requests))


def _assert_one_winner(
    responses: list[httpx.Response], won: int, conflict: dict[str, Any] | None = None
) -> None:
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {won: 1, 409: len(responses) - 1}, [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            body = assert_error(response, 409, "conflict")
            if conflict is not None:
                assert body == conflict


async def test_concurrent_signups_with_one_email_give_one_user(client: httpx.AsyncClient) -> None:
    responses = await _race(
        [client.post("/users", json={"email": "race@example.com"}) for _ in range(RACERS)]
    )
    _assert_one_winner(
        responses,
        201,
        {
            "code": "conflict",
            "message": "Email already registered",
            "details": {"email": "race@example.com"},
        },
    )
    listed = await client.get("/users")
    assert [u["email"] for u in listed.json()] == ["race@example.com"]


async def test_concurrent_signups_differing_only_in_case_give_one_user(
    client: httpx.AsyncClient,
) -> None:
    emails = [
        f"{'RACE' if i % 2 else 'race'}{'@EXAMPLE' if i % 3 else '@example'}.com"
        for i in range(RACERS)
    ]
    responses = await _race([client.post("/users", json={"email": e}) for e in emails])
    _assert_one_winner(responses, 201)
    assert (await client.get("/users")).headers["X-Total-Count"] == "1"


async def test_concurrent_email_changes_to_one_address_let_one_through(
    client: httpx.AsyncClient,
) -> None:
    users = [await create_user(client, f"user{i}@example.com") for i in range(RACERS)]
    responses = await _race(
        [client.patch(f"/users/{u['id']}", json={"email": "wanted@example.com"}) for u in users]
    )
    _assert_one_winner(
        responses,
        200,
        {
            "code": "conflict",
            "message": "Email already registered",
            "details": {"email": "wanted@example.com"},
        },
    )
    emails = sorted(u["email"] for u in (await client.get("/users", params={"limit": 100})).json())
    assert emails.count("wanted@example.com") == 1


TRIPLE = {"provider": "ollama", "model_name": "llama3.2:3b", "version_tag": "race"}
TRIPLE_CONFLICT = {
    "code": "conflict",
    "message": "Model version already registered",
    "details": TRIPLE,
}


async def test_concurrent_registrations_of_one_model_version_give_one(
    client: httpx.AsyncClient,
) -> None:
    responses = await _race([client.post("/model-versions", json=TRIPLE) for _ in range(RACERS)])
    _assert_one_winner(responses, 201, TRIPLE_CONFLICT)
    assert (await client.get("/model-versions")).headers["X-Total-Count"] == "1"


async def test_concurrent_renames_to_one_model_version_let_one_through(
    client: httpx.AsyncClient,
) -> None:
    versions = []
    for i in range(RACERS):
        payload = {**TRIPLE, "version_tag": f"v{i}"}
        created = await client.post("/model-versions", json=payload)
        assert created.status_code == 201, created.text
        versions.append(created.json())
    responses = await _race(
        [client.patch(f"/model-versions/{v['id']}", json={"version_tag": "race"}) for v in versions]
    )
    _assert_one_winner(responses, 200, TRIPLE_CONFLICT)


# The same, made certain: the check is made to miss, so the index must catch it every time.


async def test_a_missed_email_check_is_the_same_conflict(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_user(client, "taken@example.com")
    checked = await client.post("/users", json={"email": "TAKEN@example.com"})
    before = assert_error(checked, 409, "conflict")

    async def never_taken(*_: object, **__: object) -> bool:
        return False

    monkeypatch.setattr(UserRepository, "email_taken", never_taken)
    missed = await client.post("/users", json={"email": "TAKEN@example.com"})
    assert assert_error(missed, 409, "conflict") == before
    other = await create_user(client, "other@example.com")
    renamed = await client.patch(f"/users/{other['id']}", json={"email": "TAKEN@example.com"})
    assert assert_error(renamed, 409, "conflict") == before


async def test_a_missed_model_version_check_is_the_same_conflict(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create_model_version(client, **{k: v for k, v in TRIPLE.items() if k != "version_tag"})
    first = {**TRIPLE, "version_tag": "v1"}
    before = assert_error(await client.post("/model-versions", json=first), 409, "conflict")

    async def never_taken(*_: object, **__: object) -> bool:
        return False

    monkeypatch.setattr(ModelVersionRepository, "triple_taken", never_taken)
    missed = await client.post("/model-versions", json=first)
    assert assert_error(missed, 409, "conflict") == before
    other = await client.post("/model-versions", json={**TRIPLE, "version_tag": "v2"})
    assert other.status_code == 201, other.text
    renamed = await client.patch(
        f"/model-versions/{other.json()['id']}", json={"version_tag": "v1"}
    )
    assert assert_error(renamed, 409, "conflict") == before


# A referenced row removed between the check and the insert


def _removing_after_check(
    app: FastAPI, check: Callable[..., Awaitable[Any]], table: str
) -> Callable[..., Awaitable[Any]]:
    """`check` without its row lock, then the row it found is deleted for good by another
    connection: the foreign key is the last line when a lock is missing."""
    session_factory: SessionFactory = app.state.session_factory

    async def check_then_remove(session: AsyncSession, **kwargs: Any) -> Any:
        unlocked = {key: False for key in ("for_update", "for_share") if key in kwargs}
        found = await check(session, **{**kwargs, **unlocked})
        async with session_factory() as other:
            await other.execute(text(f'DELETE FROM "{table}" WHERE id = :id'), {"id": found.id})
            await other.commit()
        return found

    return check_then_remove


@pytest.mark.parametrize(
    ("name", "table", "message"),
    [
        ("get_user", "user", "User not found"),
        ("get_model_version", "model_version", "Model version not found"),
    ],
)
async def test_a_reference_removed_after_the_check_is_not_found(
    app: FastAPI,
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    table: str,
    message: str,
) -> None:
    user = await create_user(client)
    model_version = await create_model_version(client)
    original = getattr(conversation_service, name)
    monkeypatch.setattr(conversation_service, name, _removing_after_check(app, original, table))
    payload = {
        "user_id": user["id"],
        "model_version_id": model_version["id"],
        "prompt": "hi",
        "response": "hello",
    }
    body = assert_error(await client.post("/conversations", json=payload), 404, "not_found")
    assert body["message"] == message


# Only the races: any other integrity error is a bug and stays one.


async def test_other_integrity_errors_are_not_translated(session: AsyncSession) -> None:
    repo = ModelVersionRepository(session)
    # Violates a check constraint, not the mapped index.
    bad = ModelVersion(provider="p", model_name="m", version_tag="v", max_tokens_cap=0)
    with pytest.raises(IntegrityError):
        await repo.add(bad, violations={ACTIVE_TRIPLE_UNIQUE_INDEX: ConflictError("not this")})


def test_the_constraint_names_are_the_schema_s() -> None:
    names = set()
    for table in Base.metadata.tables.values():
        names.update(index.name for index in table.indexes)
        names.update(constraint.name for constraint in table.constraints)
    assert {
        EMAIL_UNIQUE_INDEX,
        ACTIVE_TRIPLE_UNIQUE_INDEX,
        USER_FOREIGN_KEY,
        MODEL_VERSION_FOREIGN_KEY,
    } <= names


@pytest.mark.parametrize("table", ["user", "model_version"])
async def test_a_submission_keeps_its_user_and_model_from_being_deleted_until_it_commits(
    session_factory: SessionFactory, table: str
) -> None:
    """Soft delete is an UPDATE, which no foreign key sees: the submission's row locks are
    what keep a conversation from being stored for a user or model deleted meanwhile."""

    async with unit_of_work(session_factory) as setup:
        user = await new_user(setup, data=UserCreate(email="held@example.com"))
        model = await new_model(
            setup, data=ModelVersionCreate(provider="ollama", model_name="m", version_tag="v1")
        )
    target = user.id if table == "user" else model.id
    async with unit_of_work(session_factory) as session:
        await conversation_service.create_conversation(
            session,
            data=ConversationCreate(model_version_id=model.id, prompt="hi"),
            user_id=user.id,
            supported_providers=PROVIDERS,
        )
        # Still uncommitted: a delete from another connection must wait for this transaction.
        engine_url = session.bind.url  # type: ignore[union-attr]
        dsn = engine_url.set(drivername="postgresql").render_as_string(hide_password=False)
        other = await asyncpg.connect(dsn)
        try:
            await other.execute("SET lock_timeout = '200ms'")
            with pytest.raises(asyncpg.LockNotAvailableError):
                await other.execute(f'UPDATE "{table}" SET is_active = false WHERE id = $1', target)
        finally:
            await other.close()
