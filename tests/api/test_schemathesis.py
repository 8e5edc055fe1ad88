"""Schemathesis against the app's own OpenAPI document: every phase, every check, zero failures.

In-process (ASGI), on this run's database and Redis, as a normal user: `alice`'s key sends
every request; `bob`'s key is the peer the object-level authorization check replays
alice's reads with (a user key must never receive another user's conversation).
`ignored_auth` sends the same requests without a key and with a wrong one.

Bounded for the suite: few examples per operation, a fixed seed, derandomized generation,
no deadline, one worker (the order of requests repeats). The stateful phase follows the
document's links (model version -> submission -> poll, edit, cancel, delete, owner); which
link values it uses is drawn at random by schemathesis, so its path varies between runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from fastapi import FastAPI

from api.main import create_app
from shared.settings import Settings
from tests.support.auth import ADMIN_HEADERS, bearer
from tests.support.schemathesis_run import hypothesis_home, identities, run, served

SEED = 20_260_101
OWNER, PEER = "alice", "bob"

# Generated traffic would trip the per-user submission rate, the cap on unfinished
# conversations and the queue's back-pressure (no worker drains the queue here): all off.
# Those limits have their own tests (tests/api/test_limits.py).
GENEROUS_LIMITS: dict[str, Any] = {
    "SUBMIT_RATE_LIMIT": "off",
    "MAX_ACTIVE_CONVERSATIONS_PER_USER": 0,
    "QUEUE_MAX_DEPTH": 0,
}

# A user key gets 403 from these whatever it sends. The coverage and fuzzing phases test
# them (every check applies); the stateful phase spends its steps on what a user can chain.
ADMIN_ONLY = [
    "POST /users",
    "GET /users",
    "PATCH /users/{user_id}",
    "DELETE /users/{user_id}",
    "POST /model-versions",
    "PATCH /model-versions/{model_version_id}",
    "DELETE /model-versions/{model_version_id}",
]


LONG_POLL = {"query.wait": 0}
ACCEPTED_422 = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]


def _config(auth_document: Path) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "workers": 1,
            "request-timeout": 10,
            # Nothing carried over from an earlier run, nothing written to the working tree.
            "cache": {"enabled": False},
            "generation": {"max-examples": 5, "deterministic": True, "database": "none"},
            "checks": {"enabled": True},
            "auth": {"wfc": {"path": str(auth_document), "user": OWNER, "peers": [OWNER, PEER]}},
            "phases": {
                "stateful": {
                    "generation": {"max-examples": 20},
                    "max-steps": 8,
                    # Keep following links that sometimes lead to a 4xx (a random `user_id`
                    # next to a linked model version is a 403), or submissions stay rare.
                    "link-calibration": False,
                }
            },
            "operations": [
                {"include-name": ADMIN_ONLY, "phases": {"stateful": {"enabled": False}}},
                # A long-poll on a conversation no worker finishes here waits its whole N
                # seconds; the bounds of `wait` are tested in tests/e2e/test_long_poll.py.
                {"include-name": ["GET /conversations/{conversation_id}"], "parameters": LONG_POLL},
                # Generated submissions reuse a few Idempotency-Key values with other bodies,
                # which is refused with 422 by design (tests/api/test_idempotency.py).
                # A submission preferring to wait for its answer waits its whole N seconds
                # here (no worker runs); `Prefer: wait` is tested in tests/e2e/test_long_poll.py.
                {
                    "include-name": ["POST /conversations"],
                    "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED_422}},
                    "parameters": {"header.Prefer": "respond-async"},
                },
            ],
        }
    )


def _created(response: requests.Response) -> dict[str, Any]:
    assert response.status_code in (201, 202), response.text
    body: dict[str, Any] = response.json()
    return body


def _set_up(admin: requests.Session) -> dict[str, str]:
    """A key per user, a model version they may use, and conversations each of them owns.

    Owned conversations make the object-level check meaningful from the first phase: alice's
    list returns hers, bob's does not, so reading one of them as bob must be refused.
    """
    admin.headers.update(ADMIN_HEADERS)
    model = _created(
        admin.post(
            "/model-versions",
            json={"provider": "ollama", "model_name": "llama3.2:3b", "version_tag": "v1"},
        )
    )
    keys = {}
    for name in (OWNER, PEER):
        user = _created(admin.post("/users", json={"email": f"{name}@example.com"}))
        keys[name] = _created(admin.post(f"/users/{user['id']}/api-keys", json={}))["key"]
        for answer in ({"response": "stored"}, {}):
            payload = {"model_version_id": model["id"], "prompt": f"from {name}", **answer}
            _created(admin.post("/conversations", json=payload, headers=bearer(keys[name])))
    return keys


@pytest.mark.usefixtures("clean_db")
def test_the_api_conforms_to_its_openapi_document(settings: Settings, tmp_path: Path) -> None:
    # Not `running_app`: schemathesis serves the app from its own event loop, where the
    # lifespan has to run too (see `served`). The settings are the same overrides.
    app: FastAPI = create_app(settings.model_copy(update=GENEROUS_LIMITS))
    with hypothesis_home(tmp_path / "hypothesis"), served(app) as admin:
        keys = _set_up(admin)
        config = _config(identities(tmp_path / "identities.json", keys))
        schema = schemathesis.openapi.from_asgi(settings.OPENAPI_JSON_PATH, app, config=config)
        outcome = run(schema)
    assert not outcome.problems, outcome.report()
    for phase in ("coverage", "fuzzing", "stateful"):
        assert outcome.cases[phase] > 0, outcome.report()
