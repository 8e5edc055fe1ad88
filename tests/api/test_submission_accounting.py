"""Who a submission is held to, how it is counted and where it is found: the admin acting
for a user is not capped by the user's limit, a stored answer counts as stored, not queued,
and the Location joins a public base URL without a doubled slash."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.settings import Settings
from tests.api.conftest import client_of, create_model_version, create_user, running_app
from tests.api.test_limits import accounts, fresh_redis_keys
from tests.support.auth import ADMIN_KEY

__all__ = ["fresh_redis_keys"]  # the fixture, used by name below

pytestmark = pytest.mark.usefixtures("clean_db", "fresh_redis_keys")


async def _submitted(admin: httpx.AsyncClient) -> dict[str, float]:
    """`conversations_submitted_total` by mode, as /metrics shows it."""
    text = (await admin.get("/metrics")).text
    return {
        sample.labels["mode"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "conversations_submitted_total"
    }


async def test_the_admin_acting_for_a_user_is_not_held_to_the_users_cap(
    settings: Settings,
) -> None:
    async with accounts(settings, MAX_ACTIVE_CONVERSATIONS_PER_USER=1) as a:
        assert (await a.submit(a.ana)).status_code == 202
        assert (await a.submit(a.ana)).status_code == 429
        for _ in range(3):
            assert (await a.submit(a.admin, user_id=a.ana_id)).status_code == 202


async def test_a_stored_answer_is_counted_as_stored_and_a_generation_as_queued(
    settings: Settings,
) -> None:
    async with accounts(settings) as a:
        assert await _submitted(a.admin) == {}
        assert (await a.submit(a.ana, response="given")).status_code == 201
        assert await _submitted(a.admin) == {"stored": 1}
        assert (await a.submit(a.ana)).status_code == 202
        assert await _submitted(a.admin) == {"stored": 1, "queued": 1}


async def test_a_public_base_url_with_a_path_and_a_trailing_slash_makes_one_clean_location(
    settings: Settings,
) -> None:
    base = "https://api.example.com/llm/"
    async with (
        running_app(settings, PUBLIC_BASE_URL=base) as app,
        client_of(app, ADMIN_KEY) as admin,
    ):
        user = await create_user(admin, "located@example.com")
        model = await create_model_version(admin)
        response = await admin.post(
            "/conversations",
            json={"user_id": user["id"], "model_version_id": model["id"], "prompt": "hi"},
        )
    assert response.status_code == 202, response.text
    expected = f"https://api.example.com/llm/conversations/{response.json()['id']}"
    assert response.headers["Location"] == expected
