"""Requests racing for one unique value, or for a row being removed, never get a 500.

The services check before they write, but a concurrent request can commit between the check
and the write; the database's unique index or foreign key then refuses the write, and the
loser gets the answer the check would have given. These run real concurrent requests through
the app against the real database (its pool has room for all of them at once).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import URL
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import ConflictError
from shared.models import Base, ModelVersion
from shared.models.conversation import MODEL_VERSION_FOREIGN_KEY, USER_FOREIGN_KEY
from shared.models.model_version import ACTIVE_TRIPLE_UNIQUE_INDEX
from shared.models.user import EMAIL_UNIQUE_INDEX
from shared.repositories.model_versions import ModelVersionRepository
from shared.repositories.users import UserRepository
from shared.settings import Settings
from tests.api.conftest import assert_error, create_model_version, create_user

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


# A referenced row removed while a submission is being stored


async def _waiting_for_a_lock(dsn: str, statement_prefix: str) -> None:
    """Until a backend running a statement starting with `statement_prefix` waits on a lock."""
    watcher = await asyncpg.connect(dsn)
    try:
        for _ in range(2000):
            waiting = await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND ltrim(query, E' \\n') LIKE $1",
                statement_prefix + "%",
            )
            if waiting:
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"no statement {statement_prefix!r} ever waited on a lock")
    finally:
        await watcher.close()


@pytest.mark.parametrize(
    ("table", "removal", "message"),
    [
        ("user", 'UPDATE "user" SET is_active = false WHERE id = $1', "User not found"),
        ("user", 'DELETE FROM "user" WHERE id = $1', "User not found"),
        (
            "model_version",
            "UPDATE model_version SET is_active = false WHERE id = $1",
            "Model version not found",
        ),
        ("model_version", "DELETE FROM model_version WHERE id = $1", "Model version not found"),
    ],
)
async def test_a_reference_removed_while_the_submission_waits_is_not_found(
    client: httpx.AsyncClient, database_url: URL, table: str, removal: str, message: str
) -> None:
    """The submission's INSERT locks the user and model version rows it reads: one being
    removed (soft delete: an UPDATE no foreign key sees; or a DELETE) makes it wait, then
    read the outcome; so nothing is stored for a removed reference, and no 500."""
    user = await create_user(client)
    model_version = await create_model_version(client)
    target = user["id"] if table == "user" else model_version["id"]
    dsn = database_url.set(drivername="postgresql").render_as_string(hide_password=False)
    remover = await asyncpg.connect(dsn)
    try:
        removing = remover.transaction()
        await removing.start()
        await remover.execute(removal, uuid.UUID(target))
        payload = {
            "user_id": user["id"],
            "model_version_id": model_version["id"],
            "prompt": "hi",
        }
        submission = asyncio.create_task(client.post("/conversations", json=payload))
        await _waiting_for_a_lock(dsn, 'INSERT INTO "conversation"')
        await removing.commit()
        body = assert_error(await submission, 404, "not_found")
        assert body["message"] == message
        assert await remover.fetchval("SELECT count(*) FROM conversation") == 0
    finally:
        await remover.close()


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
