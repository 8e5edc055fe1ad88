"""Write docs/routes.md from the running application: every route, a `curl` and its answer.

    make routes_doc        # or: .venv/bin/python -m scripts.routes_doc [--output PATH]

Builds the real app (`api.main.create_app`) on a throwaway migrated PostgreSQL database, the
local Redis (a queue of its own) and the stand-in LLM server of `tests/support/`, then drives
every route over HTTP in one story: the admin creates users and keys and registers a model, a
user submits a prompt and polls until a real arq worker (run in-process, in burst mode) has
answered it, lists, edits, cancels and deletes; then the errors, limits and outages. Each
request is written as `curl` with the status, headers and body it got. Route descriptions,
parameters and body fields come from the OpenAPI document and the key each route takes from
how the app answers without one, so none of it can drift from the code.

Needs PostgreSQL and Redis (`TEST_DATABASE_ADMIN_URL`, `TEST_REDIS_URL`, as for the tests) and
removes all it creates. `tests/docs/test_routes_doc.py` fails when the document no longer
matches what the app answers: run this again then.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from pydantic import AnyHttpUrl, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from api.limits import DEPTH_SAMPLE_SECONDS
from api.main import create_app
from api.middleware.security_headers import SECURITY_HEADERS
from shared.errors import ErrorCode
from shared.metrics import create_metrics
from shared.settings import LogFormat, Settings, generate_admin_key
from shared.telemetry import setup_telemetry
from tests.support.database import migrated_database
from tests.support.fake_llm import FakeLLMServer
from worker.arq_worker import build_worker
from worker.observability import Observability

ROOT = Path(__file__).resolve().parent.parent

DOC_PATH = ROOT / "docs" / "routes.md"
BASE_URL = "http://localhost:8000"
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# One section per operation, headed "### `GET /users/{user_id}`".
OPERATION_HEADING = re.compile(r"^### `(" + "|".join(METHODS) + r") (/[^`]*)`", re.MULTILINE)
WIDTH = 95

# Small limits, so the story reaches them in a few requests; the intro names them.
# (And a flush interval longer than any answer here, so the recorded events repeat.)
RECORDING_SETTINGS: dict[str, Any] = {
    "SUBMIT_RATE_LIMIT": "5/minute",
    "MAX_ACTIVE_CONVERSATIONS_PER_USER": 3,
    "EVENTS_FLUSH_INTERVAL_MS": 5000,
}
# Response headers that say nothing about the route (the conventions name the security
# headers once); X-Request-ID is shown once.
HIDDEN_HEADERS = {
    "date",
    "server",
    "content-length",
    "x-request-id",
    *(name.decode() for name, _ in SECURITY_HEADERS),
}
MASKED_KEY = "aek_\u2026"
# The stand-in model server listens on a port of its own each run.
MASKED_SERVER = "127.0.0.1:\u2026"
ANSWER = (
    "Python is a high-level, general-purpose programming language known for its readable "
    "syntax and large standard library."
)
Operation = tuple[str, str]


class RecordingSettings(Settings):
    """Settings from the arguments alone: the caller's environment and `.env` never leak in."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def recording_settings(**values: Any) -> Settings:
    """The app's settings for the recording; only the app's lifespan connects anywhere."""
    return RecordingSettings(
        ADMIN_API_KEY=SecretStr(generate_admin_key()),
        OLLAMA_STARTUP_CHECK_ENABLED=False,
        LOG_FORMAT=LogFormat.HUMAN,
        # Expected 5xx answers are logged as errors; an unexpected one fails the story instead.
        LOG_LEVEL="CRITICAL",
        **RECORDING_SETTINGS,
        **values,
    )


# --- the OpenAPI side -----------------------------------------------------------------------


def openapi_operations(openapi: dict[str, Any]) -> set[Operation]:
    """Every (METHOD, path template) of an OpenAPI document."""
    return {
        (method.upper(), path)
        for path, item in openapi.get("paths", {}).items()
        for method in item
        if method.upper() in METHODS
    }


def app_operations() -> set[Operation]:
    """The operations of the app as configured for the recording (nothing is connected)."""
    return openapi_operations(create_app(recording_settings()).openapi())


def documented_operations(markdown: str) -> list[Operation]:
    """The operations a routes document has a section for, in order."""
    return [(m.group(1), m.group(2)) for m in OPERATION_HEADING.finditer(markdown)]


def _github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _bounds(schema: dict[str, Any]) -> str:
    low, high, unit = schema.get("minimum"), schema.get("maximum"), ""
    if "minLength" in schema or "maxLength" in schema:
        low, high, unit = schema.get("minLength"), schema.get("maxLength"), " characters"
    if high is not None and high >= 2**31:
        high = None  # a storage limit (a bigint offset), not one to write down
    if low is not None and high is not None:
        return f"{_number(low)}\u2013{_number(high)}{unit}"
    if high is not None:
        return f"at most {_number(high)}{unit}"
    if low is not None:
        return f"\u2265 {_number(low)}{unit}"
    return ""


class OpenApi:
    """The pieces of the OpenAPI document a section shows."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def operation(self, method: str, path: str) -> dict[str, Any]:
        try:
            op: dict[str, Any] = self.document["paths"][path][method.lower()]
        except KeyError:
            raise SystemExit(f"routes_doc: the app has no operation {method} {path}") from None
        return op

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        if ref is None:
            return schema
        resolved: dict[str, Any] = self.document["components"]["schemas"][ref.rsplit("/")[-1]]
        return {**resolved, **{k: v for k, v in schema.items() if k != "$ref"}}

    def _variants(self, schema: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        variants = [self._resolve(s) for s in schema.get("anyOf", [schema])]
        concrete = [v for v in variants if v.get("type") != "null"]
        return concrete, len(concrete) < len(variants)

    def _describe(self, schema: dict[str, Any], *, required: bool = False) -> str:
        """Type, bounds, null, default: `string, 1-128 characters`, `integer, or `null``..."""
        variants, nullable = self._variants(schema)
        kinds = []
        for variant in variants:
            if "enum" in variant:
                kinds.append("one of " + ", ".join(f"`{v}`" for v in variant["enum"]))
                continue
            kind = "uuid" if variant.get("format") == "uuid" else variant.get("type", "any")
            kinds.append(", ".join(p for p in (kind, _bounds(variant)) if p))
        text = " or ".join(kinds) + (", or `null`" if nullable else "")
        if "default" in schema:
            text += f"; default `{schema['default']}`"
        return text + ("; required" if required else "")

    def query_parameters(self, op: dict[str, Any]) -> list[str]:
        return [
            f"- `{p['name']}` ({self._describe(p['schema'], required=p.get('required', False))})"
            + (f": {p['description']}." if p.get("description") else "")
            for p in op.get("parameters", [])
            if p["in"] == "query"
        ]

    def body_fields(self, op: dict[str, Any]) -> tuple[list[str], bool]:
        """One line per field of the JSON body, and whether the body may be left out."""
        body = op.get("requestBody", {})
        content = body.get("content", {}).get("application/json")
        if content is None:
            return [], False
        variants, nullable = self._variants(content["schema"])
        schema = variants[0]
        required = set(schema.get("required", []))
        lines = [
            f"- `{name}` ({self._describe(prop, required=name in required)})"
            + (f": {prop['description']}" if prop.get("description") else "")
            for name, prop in schema.get("properties", {}).items()
        ]
        return lines, nullable or not body.get("required", False)


# --- recording ------------------------------------------------------------------------------


@dataclass
class Example:
    operation: Operation
    status: int
    curl: str
    answer: str


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _curl(method: str, url: str, *, key: str | None, data: str | None) -> str:
    target = _shell_quote(url) if re.search(r"[?&]", url) else url
    lines = [f"curl -i {target}" if method == "GET" else f"curl -i -X {method} {target}"]
    if key is not None:
        lines.append(f'-H "Authorization: Bearer ${key}"')
    if data is not None:
        lines.append("-H 'Content-Type: application/json'")
        lines.append(f"-d {_shell_quote(data)}")
    return " \\\n  ".join(lines)


def _pretty(response: httpx.Response, mask: Callable[[Any], Any] | None) -> str:
    if not response.content:
        return ""
    if not response.headers.get("content-type", "").startswith("application/json"):
        return response.text
    body = response.json()
    return json.dumps(mask(body) if mask else body, indent=2, ensure_ascii=False)


def _mask_key(body: Any) -> Any:
    return {**body, "key": MASKED_KEY} if isinstance(body, dict) and "key" in body else body


def _mask_servers(body: Any) -> Any:
    servers = body.get("model_servers") if isinstance(body, dict) else None
    if not servers:
        return body
    return {**body, "model_servers": [{**s, "server": MASKED_SERVER} for s in servers]}


class Recorder:
    """Sends requests to the app; keeps those the document shows, by name."""

    def __init__(self, client: httpx.AsyncClient, openapi: OpenApi) -> None:
        self.client = client
        self.openapi = openapi
        self.keys: dict[str, str] = {}  # shell variable name -> the secret it stands for
        self.examples: dict[str, Example] = {}
        self.skipped: list[str] = []
        self._patterns = [
            (op, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", op[1]) + "$"))
            for op in sorted(openapi_operations(openapi.document))
        ]
        self._request_id_shown = False

    def _operation_of(self, method: str, url: str) -> Operation:
        path = httpx.URL(url).path
        for op, pattern in self._patterns:
            if op[0] == method and pattern.match(path):
                return op
        raise RuntimeError(f"no operation of the app serves {method} {path}")

    async def send(
        self,
        method: str,
        url: str,
        *,
        key: str | None,
        json_body: Any = None,
        raw: bytes | None = None,
        expect: int | None,
        client: httpx.AsyncClient | None = None,
    ) -> httpx.Response:
        headers = {} if key is None else {"Authorization": f"Bearer {self.keys[key]}"}
        content = raw if json_body is None else json.dumps(json_body).encode()
        if content is not None:
            headers["Content-Type"] = "application/json"
        response = await (client or self.client).request(
            method, url, headers=headers, content=content
        )
        if expect is not None and response.status_code != expect:
            raise RuntimeError(
                f"routes_doc: {method} {url} answered {response.status_code} where the story "
                f"expects {expect}: {response.text[:500]}"
            )
        return response

    async def record(
        self,
        name: str,
        method: str,
        url: str,
        *,
        key: str | None,
        json_body: Any = None,
        raw: bytes | None = None,
        shown_data: str | None = None,
        expect: int,
        optional: bool = False,
        mask: Callable[[Any], Any] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> httpx.Response:
        """Send, check the status is `expect`, and keep the exchange as example `name`.

        `optional`: another status leaves the example out (the app does not do that yet).
        """
        if name in self.examples:
            raise RuntimeError(f"example {name!r} recorded twice")
        response = await self.send(
            method,
            url,
            key=key,
            json_body=json_body,
            raw=raw,
            expect=None if optional else expect,
            client=client,
        )
        if response.status_code != expect:
            self.skipped.append(f"{name} ({method} {url} answered {response.status_code})")
            return response
        status = HTTPStatus(response.status_code)
        lines = [f"HTTP/1.1 {status.value} {status.phrase}"]
        for header, value in response.headers.multi_items():
            if header == "x-request-id" and not self._request_id_shown:
                self._request_id_shown = True
            elif header in HIDDEN_HEADERS:
                continue
            lines.append(f"{header}: {value}")
        body = _pretty(response, mask)
        if shown_data is None and json_body is not None:
            shown_data = json.dumps(json_body)
        elif shown_data is None and raw is not None:
            shown_data = raw.decode()
        self.examples[name] = Example(
            operation=self._operation_of(method, url),
            status=response.status_code,
            curl=_curl(method, BASE_URL + url, key=key, data=shown_data),
            answer="\n".join(lines) + (f"\n\n{body}" if body else ""),
        )
        return response

    async def probe_access(self, user_key: str) -> dict[Operation, str]:
        """Which key each operation takes, as the app answers: without a key (401 or not),
        then with a user key (403 or not). Ids are random and bodies empty: nothing changes."""
        access = {}
        for method, path in sorted(openapi_operations(self.openapi.document)):
            url = re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), path)
            raw = b"{}" if "requestBody" in self.openapi.operation(method, path) else None
            keyless = await self.send(method, url, key=None, raw=raw, expect=None)
            as_user = await self.send(method, url, key=user_key, raw=raw, expect=None)
            if keyless.status_code != HTTPStatus.UNAUTHORIZED:
                access[(method, path)] = "none"
            elif as_user.status_code == HTTPStatus.FORBIDDEN:
                access[(method, path)] = "admin (a user key gets `403`)"
            else:
                access[(method, path)] = "admin or user"
        return access


# --- the story ------------------------------------------------------------------------------


async def run_worker_until_idle(settings: Settings) -> None:
    """The worker `python -m worker` runs, in burst mode: it stops once the queue is empty."""
    telemetry = setup_telemetry(settings, process_name="worker", set_global=False)
    obs = Observability(telemetry=telemetry, metrics=create_metrics(process_metrics=False))
    worker = build_worker(settings, obs, burst=True, handle_signals=False, poll_delay=0.05)
    try:
        await worker.async_run()
    finally:
        await worker.close()
        telemetry.shutdown()


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan started, and an HTTP client that calls it in-process."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield client


async def tell_story(rec: Recorder, settings: Settings) -> None:
    """Every request of the document, in the order they happen (not the order shown)."""
    await rec.record("live", "GET", "/health/live", key=None, expect=200)
    await rec.record("db", "GET", "/health/db", key=None, expect=200)
    await rec.record("ready_probe", "GET", "/health/ready", key=None, expect=200)

    # The admin registers users and gives ana and bruno a key each.
    r = await rec.record(
        "user_create",
        "POST",
        "/users",
        key="ADMIN_KEY",
        json_body={"email": "ana@example.com"},
        expect=201,
    )
    ana = r.json()["id"]
    r = await rec.send(
        "POST", "/users", key="ADMIN_KEY", json_body={"email": "bruno@example.com"}, expect=201
    )
    bruno = r.json()["id"]
    r = await rec.send(
        "POST", "/users", key="ADMIN_KEY", json_body={"email": "carla@example.com"}, expect=201
    )
    carla = r.json()["id"]
    r = await rec.record(
        "key_create",
        "POST",
        f"/users/{ana}/api-keys",
        key="ADMIN_KEY",
        json_body={"name": "laptop"},
        expect=201,
        mask=_mask_key,
    )
    rec.keys["USER_KEY"] = r.json()["key"]
    r = await rec.send("POST", f"/users/{bruno}/api-keys", key="ADMIN_KEY", expect=201)
    rec.keys["BRUNO_KEY"] = r.json()["key"]

    # Ana makes herself a second key, lists her keys and revokes the new one.
    r = await rec.record(
        "key_create_self",
        "POST",
        f"/users/{ana}/api-keys",
        key="USER_KEY",
        json_body={"name": "ci"},
        expect=201,
        mask=_mask_key,
    )
    rec.keys["CI_KEY"] = r.json()["key"]
    ci_key = r.json()["id"]
    await rec.record("key_list", "GET", f"/users/{ana}/api-keys", key="USER_KEY", expect=200)
    await rec.record(
        "key_revoke", "DELETE", f"/users/{ana}/api-keys/{ci_key}", key="USER_KEY", expect=204
    )
    await rec.record("key_revoked_use", "GET", "/conversations", key="CI_KEY", expect=401)

    await rec.record(
        "user_list",
        "GET",
        "/users?limit=2&offset=0&order_by=email_asc",
        key="ADMIN_KEY",
        expect=200,
    )
    await rec.record("user_get", "GET", f"/users/{ana}", key="USER_KEY", expect=200)
    await rec.record(
        "user_patch",
        "PATCH",
        f"/users/{ana}",
        key="ADMIN_KEY",
        json_body={"email": "ana.silva@example.com"},
        expect=200,
    )
    await rec.record("user_delete", "DELETE", f"/users/{carla}", key="ADMIN_KEY", expect=204)
    await rec.record("user_delete_after", "GET", f"/users/{carla}", key="ADMIN_KEY", expect=404)

    # Model versions, registered by the admin, read with any key.
    r = await rec.record(
        "model_create",
        "POST",
        "/model-versions",
        key="ADMIN_KEY",
        json_body={"provider": "ollama", "model_name": "llama3.2:3b", "version_tag": "v1"},
        expect=201,
    )
    model = r.json()["id"]
    qwen: dict[str, Any] = {"provider": "ollama", "model_name": "qwen2.5:0.5b", "version_tag": "v1"}
    qwen |= {"max_tokens_cap": 512, "default_temperature": 0.2}
    await rec.send("POST", "/model-versions", key="ADMIN_KEY", json_body=qwen, expect=201)
    await rec.record(
        "model_list",
        "GET",
        "/model-versions?limit=10&order_by=model_name_asc",
        key="USER_KEY",
        expect=200,
    )
    await rec.record("model_get", "GET", f"/model-versions/{model}", key="USER_KEY", expect=200)
    await rec.record(
        "model_patch",
        "PATCH",
        f"/model-versions/{model}",
        key="ADMIN_KEY",
        json_body={"version_tag": "v2", "default_temperature": 0.7},
        expect=200,
    )
    mistral = {"provider": "ollama", "model_name": "mistral:7b", "version_tag": "v1"}
    r = await rec.send("POST", "/model-versions", key="ADMIN_KEY", json_body=mistral, expect=201)
    await rec.record(
        "model_delete",
        "DELETE",
        f"/model-versions/{r.json()['id']}",
        key="ADMIN_KEY",
        expect=204,
    )

    # Ana submits with her key; a worker answers.
    stored = {"model_version_id": model, "prompt": "What is 2 + 2?", "response": "4"}
    r = await rec.record(
        "conv_stored",
        "POST",
        "/conversations",
        key="USER_KEY",
        json_body=stored | {"temperature": 0.0},
        expect=201,
    )
    stored_url = r.headers["location"]
    r = await rec.record(
        "conv_accepted",
        "POST",
        "/conversations",
        key="USER_KEY",
        json_body={
            "model_version_id": model,
            "prompt": "What is Python?",
            "context": "The reader is new to programming.",
            "temperature": 0.7,
            "max_tokens": 256,
        },
        expect=202,
    )
    answered = r.headers["location"]
    await rec.record(
        "ready_admin", "GET", "/health/ready", key="ADMIN_KEY", expect=200, mask=_mask_servers
    )
    await rec.record("conv_pending", "GET", answered, key="USER_KEY", expect=200)
    await run_worker_until_idle(settings)
    r = await rec.record("conv_completed", "GET", answered, key="USER_KEY", expect=200)
    if r.json()["status"] != "completed":
        raise RuntimeError(f"routes_doc: the worker did not answer: {r.json()}")
    await rec.record("conv_events", "GET", f"{answered}/events", key="USER_KEY", expect=200)
    await rec.record(
        "conv_list",
        "GET",
        "/conversations?status=completed&order_by=created_at_desc&limit=2",
        key="USER_KEY",
        expect=200,
    )
    await rec.record(
        "conv_patch",
        "PATCH",
        answered,
        key="USER_KEY",
        json_body={"response": "Python is a readable, general-purpose programming language."},
        expect=200,
    )
    r = await rec.send(
        "POST",
        "/conversations",
        key="USER_KEY",
        json_body={
            "model_version_id": model,
            "prompt": "Summarise the plot of Hamlet in one sentence.",
            "system_instruction": "Answer briefly.",
            "temperature": 0.3,
            "max_tokens": 200,
        },
        expect=202,
    )
    waiting = r.headers["location"]
    await rec.record(
        "conv_patch_unfinished",
        "PATCH",
        waiting,
        key="USER_KEY",
        json_body={"response": "edited"},
        expect=409,
    )
    await rec.record("conv_cancel", "POST", f"{waiting}/cancel", key="USER_KEY", expect=200)
    await rec.record("conv_cancel_again", "POST", f"{waiting}/cancel", key="USER_KEY", expect=409)
    await rec.record("conv_webhook", "GET", f"{waiting}/webhook", key="USER_KEY", expect=200)
    await rec.record("conv_delete", "DELETE", answered, key="USER_KEY", expect=204)
    await rec.record("conv_delete_after", "GET", answered, key="USER_KEY", expect=404)
    await rec.record("metrics", "GET", "/metrics", key=None, expect=200)

    await _errors(rec, settings, ana=ana, bruno=bruno, model=model, stored_url=stored_url)
    await _limits(rec, settings, ana=ana, model=model)


async def _errors(
    rec: Recorder, settings: Settings, *, ana: str, bruno: str, model: str, stored_url: str
) -> None:
    await rec.record("unauthorized", "GET", "/conversations", key=None, expect=401)
    await rec.record(
        "forbidden_admin_route",
        "POST",
        "/users",
        key="USER_KEY",
        json_body={"email": "eve@example.com"},
        expect=403,
    )
    await rec.record(
        "forbidden_other_user",
        "POST",
        "/conversations",
        key="USER_KEY",
        json_body={"user_id": bruno, "model_version_id": model, "prompt": "Hi"},
        expect=403,
    )
    await rec.record("not_found_other_user", "GET", stored_url, key="BRUNO_KEY", expect=404)
    nobody = str(uuid.UUID(int=0))
    await rec.record(
        "not_found_missing",
        "POST",
        "/conversations",
        key="ADMIN_KEY",
        json_body={"user_id": nobody, "model_version_id": model, "prompt": "Hi"},
        expect=404,
    )
    await rec.record(
        "conflict",
        "POST",
        "/users",
        key="ADMIN_KEY",
        json_body={"email": "ANA.SILVA@example.com"},
        expect=409,
    )
    await rec.record(
        "invalid_body",
        "POST",
        "/users",
        key="ADMIN_KEY",
        json_body={"email": "not-an-email", "name": "Ana"},
        expect=422,
    )
    await rec.record("invalid_query", "GET", "/users?limit=500", key="ADMIN_KEY", expect=422)
    await rec.record(
        "malformed_json",
        "POST",
        "/users",
        key="ADMIN_KEY",
        raw=b'{"email": "ana@example.com",',
        expect=400,
    )
    claude = {"provider": "anthropic", "model_name": "claude-3-5-haiku", "version_tag": "v1"}
    r = await rec.send("POST", "/model-versions", key="ADMIN_KEY", json_body=claude, expect=201)
    await rec.record(
        "provider_not_served",
        "POST",
        "/conversations",
        key="ADMIN_KEY",
        json_body={"user_id": ana, "model_version_id": r.json()["id"], "prompt": "Hi"},
        expect=400,
    )
    # Left out of the document while the app does not refuse an oversized body with 413.
    prompt = "x" * settings.MAX_REQUEST_BODY_BYTES
    big = {"user_id": ana, "model_version_id": model, "prompt": prompt}
    await rec.record(
        "too_large",
        "POST",
        "/conversations",
        key="ADMIN_KEY",
        raw=json.dumps(big).encode(),
        shown_data="@big.json",
        expect=413,
        optional=True,
    )


async def _limits(rec: Recorder, settings: Settings, *, ana: str, model: str) -> None:
    """429 and 503: bruno reaches his limits, the queue fills up, the database goes away."""
    submit = {"model_version_id": model, "prompt": "Hi"}
    accepted = [
        await rec.send("POST", "/conversations", key="BRUNO_KEY", json_body=submit, expect=202)
        for _ in range(settings.MAX_ACTIVE_CONVERSATIONS_PER_USER)
    ]
    await rec.record(
        "too_many_active", "POST", "/conversations", key="BRUNO_KEY", json_body=submit, expect=429
    )
    # The admin queues one for ana too, then looks at who is waiting.
    await rec.send(
        "POST", "/conversations", key="ADMIN_KEY", json_body={"user_id": ana, **submit}, expect=202
    )
    await rec.record("queue_users", "GET", "/queue/users?limit=10", key="ADMIN_KEY", expect=200)
    # One finishes (cancelled): room for one more, the last submission the window allows.
    await rec.send("POST", accepted[0].headers["location"] + "/cancel", key="BRUNO_KEY", expect=200)
    await rec.send("POST", "/conversations", key="BRUNO_KEY", json_body=submit, expect=202)
    await rec.record(
        "too_many_submissions",
        "POST",
        "/conversations",
        key="BRUNO_KEY",
        json_body=submit,
        expect=429,
    )

    # A queue at QUEUE_MAX_DEPTH: stand-in entries fill it for one request.
    client = aioredis.Redis.from_url(settings.REDIS_URL)
    fillers: dict[str, float] = {}
    try:
        depth = int(await client.zcard(settings.QUEUE_NAME))
        now = time.time() * 1000
        fillers = {f"routes-doc-filler:{i}": now for i in range(settings.QUEUE_MAX_DEPTH - depth)}
        if fillers:
            await client.zadd(settings.QUEUE_NAME, fillers)
        # Far below the limit the API reads the depth at most once per DEPTH_SAMPLE_SECONDS;
        # a queue filled at once is seen full after that.
        await asyncio.sleep(DEPTH_SAMPLE_SECONDS)
        await rec.record(
            "queue_full",
            "POST",
            "/conversations",
            key="ADMIN_KEY",
            json_body={"user_id": ana, **submit},
            expect=503,
        )
    finally:
        if fillers:
            await client.zrem(settings.QUEUE_NAME, *fillers)
        await client.aclose()

    # The same app with nothing listening on its database port.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    down = settings.model_copy(
        update={"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{closed_port}/routes_doc"}
    )
    async with running_app(down) as outage:
        await rec.record("db_down", "GET", "/users", key="ADMIN_KEY", expect=503, client=outage)
        await rec.record(
            "db_down_ready", "GET", "/health/ready", key="ADMIN_KEY", expect=503, client=outage
        )


async def _drop_redis_keys(settings: Settings) -> None:
    """Leave Redis as it was: the queue and its jobs, rate-limit windows, heartbeats."""
    client = aioredis.Redis.from_url(settings.REDIS_URL)
    try:
        for job_id in await client.zrange(settings.QUEUE_NAME, 0, -1):
            kinds = ("job", "retry", "in-progress", "result")
            await client.delete(*(f"arq:{kind}:{job_id.decode()}" for kind in kinds))
        async for key in client.scan_iter(match=f"{settings.QUEUE_NAME}*"):
            await client.delete(key)
    finally:
        await client.aclose()


# --- the document ---------------------------------------------------------------------------


INTRO = """\
Every route with a `curl` request and the response the service gave to it. This file is
generated by `make routes_doc` (`scripts/routes_doc.py`), which builds the real application
(`api.main:create_app`) on a throwaway migrated PostgreSQL database and Redis, runs a real arq
worker, drives every route over HTTP and writes down what was answered. Descriptions,
parameters and body fields are those of the OpenAPI document (`/openapi.json`), and
`tests/docs/test_routes_doc.py` fails when this file no longer matches the application: change
the code or the script, then regenerate. Only the LLM is the stand-in server from
`tests/support/`, so the generated `response` text, token counts and `latency_ms` are the
stand-in's (with Ollama they come from the model). Ids, keys and timestamps differ on every run.

The recording ran with the default settings except {overrides}, so the limits are reached in a
few requests and a streamed answer is one delta.

Conventions of every route:

- Authentication: `Authorization: Bearer <key>`. Each route says which key it takes. The admin
  key is the `ADMIN_API_KEY` setting; user keys are issued by
  [`POST /users/{{user_id}}/api-keys`](#{key_anchor}). The examples use shell variables for
  them: `$ADMIN_KEY`, `$USER_KEY` (a key of the user ana), `$CI_KEY` (another key of ana's,
  revoked below) and `$BRUNO_KEY` (a key of the user bruno).
- Who may do what: the admin key everything. A user key reads the model versions, its own user
  and keys, creates and revokes its own keys, and submits, lists and manages its own
  conversations; a route for the admin answers it `403`. Another user's user, keys or
  conversations are answered `404`, as if they did not exist. No key, or an unknown or revoked
  one: `401` with `WWW-Authenticate: Bearer`.
- JSON in, JSON out. Request bodies reject unknown fields (422).
- Errors always have the body `{{"code", "message", "details"}}`; `code` is one of {codes}.
- Lists take `limit` (1\u2013100, default 50), `offset` (\u2265 0, default 0) and `order_by`;
  the total number of matching rows is in the `X-Total-Count` response header.
- `DELETE` is a soft delete: the row disappears from reads and lists (`404` afterwards).
- The `Location` of a submitted conversation is a path, `/conversations/{{id}}`, unless
  `PUBLIC_BASE_URL` is set: then it is that URL followed by the path.
- Every response carries an `X-Request-ID` header (the caller's, when it sent a valid one);
  the same id is in the service's log lines. It is shown once below and left out elsewhere,
  as are `date`, `server` and `content-length`.
- Every response also carries `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
  `Content-Security-Policy: frame-ancestors 'none'` and `Cache-Control: no-store`; they are
  left out below.
- `429` and `503` carry `Retry-After` (seconds).

Contents: {contents}"""

SECTIONS = ("Health", "Users", "API keys", "Model versions", "Conversations", "Queue", "Errors")

COMPLETED_FIELDS = """\
Once a worker picks it up the status becomes `running`, and then `completed` with the answer
and its measurements:

- `response`: the generated answer; `finish_reason`: why generation stopped (`stop`, or
  `length` when `max_tokens` cut it).
- `input_tokens`, `output_tokens`, `total_tokens`: as the LLM counted them.
- `latency_ms`: the generation time (Ollama's reported `total_duration`; the worker's own
  measurement for an OpenAI-compatible server); `queue_wait_ms`: from submission until a
  worker first took it.
- `attempts`: generation attempts so far (a transient LLM failure is retried with backoff);
  `started_at`, `completed_at`: when the first attempt began and when it finished.
- `prompt_version`: the version of the prompt files (`shared/prompts/`) the answer was
  generated with.
- `trace_id`: the OpenTelemetry trace id of the submission, `null` when there was none.
- A conversation that cannot be answered ends `failed`, with `error_code` and `error_message`
  saying why."""


# Code spans and link texts are kept on one line: their spaces are hidden while filling.
_UNBREAKABLE = re.compile(r"`[^`]*`|\[[^\]]*\]")
_HIDDEN_SPACE = "\x00"


def _fill(text: str, *, first: str = "", rest: str = "") -> str:
    text = _UNBREAKABLE.sub(lambda m: m.group(0).replace(" ", _HIDDEN_SPACE), text)
    filled = textwrap.fill(
        text,
        WIDTH,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return filled.replace(_HIDDEN_SPACE, " ")


def wrap_markdown(markdown: str) -> str:
    """Refill paragraphs and `- ` list items to WIDTH columns (headings stay as they are)."""
    blocks = []
    for block in textwrap.dedent(markdown).strip().split("\n\n"):
        lines = block.splitlines()
        if lines[0].startswith("#"):
            blocks.append(block)
        elif lines[0].startswith("- "):
            items: list[str] = []
            for line in lines:
                if line.startswith("- "):
                    items.append(line[2:].strip())
                else:
                    items[-1] += " " + line.strip()
            blocks.append("\n".join(_fill(item, first="- ", rest="  ") for item in items))
        else:
            blocks.append(_fill(" ".join(line.strip() for line in lines)))
    return "\n\n".join(blocks)


class Document:
    """The markdown, built section by section; `render` checks it covers the app exactly."""

    def __init__(
        self, openapi: OpenApi, examples: dict[str, Example], access: dict[Operation, str]
    ) -> None:
        self.openapi = openapi
        self.examples = examples
        self.access = access
        self.parts: list[str] = []
        self.used: set[str] = set()

    def text(self, markdown: str) -> None:
        self.parts.append(wrap_markdown(markdown))

    def heading(self, level: int, title: str) -> None:
        self.parts.append(f"{'#' * level} {title}")

    def operation(self, method: str, path: str, *, note: str = "") -> None:
        """Heading, OpenAPI description, the key it takes, parameters, body, `note`."""
        op = self.openapi.operation(method, path)
        self.heading(3, f"`{method} {path}`")
        self.text(op.get("description") or op.get("summary", ""))
        if note:
            self.text(note)
        self.text(f"**Key:** {self.access[(method, path)]}.")
        params = self.openapi.query_parameters(op)
        if params:
            self.text("Query parameters:\n\n" + "\n".join(params))
        fields, optional = self.openapi.body_fields(op)
        if fields:
            lead = "Body (optional: `{}` or none at all):" if optional else "Body:"
            self.text(lead + "\n\n" + "\n".join(fields))

    def example(self, name: str, lead: str = "") -> None:
        example = self.examples[name]
        self.used.add(name)
        if lead:
            self.text(lead)
        self.parts.append(f"```bash\n{example.curl}\n```")
        self.parts.append(f"```http\n{example.answer}\n```")

    def metrics_example(self, name: str, metric: str) -> None:
        """The lines of one metric, as `curl | grep` shows them."""
        example = self.examples[name]
        self.used.add(name)
        body = example.answer.split("\n\n", 1)[1]
        lines = [ln for ln in body.splitlines() if re.match(rf"(# \w+ )?{metric}\b", ln)]
        self.parts.append(f"```bash\ncurl -s {BASE_URL}/metrics | grep {metric}\n```")
        self.parts.append("```text\n" + "\n".join(lines) + "\n```")

    def render(self) -> str:
        text = "\n\n".join(self.parts) + "\n"
        documented = documented_operations(text)
        have = openapi_operations(self.openapi.document)
        exercised = {example.operation for example in self.examples.values()}
        problems = [
            *(f"no section for {m} {p}" for m, p in sorted(have - set(documented))),
            *(f"a section for {m} {p}, not in the app" for m, p in sorted(set(documented) - have)),
            *(f"{m} {p} has two sections" for m, p in sorted(have) if documented.count((m, p)) > 1),
            *(f"no request exercised {m} {p}" for m, p in sorted(have - exercised)),
            *(f"example {name!r} is not shown" for name in sorted(set(self.examples) - self.used)),
        ]
        if problems:
            raise SystemExit("routes_doc: " + "; ".join(problems))
        return text


def write_document(
    openapi: OpenApi, examples: dict[str, Example], access: dict[Operation, str]
) -> str:
    doc = Document(openapi, examples, access)
    defaults = Settings.model_fields
    overrides = ", ".join(
        f"`{name}={value}` (default `{defaults[name].default}`)"
        for name, value in RECORDING_SETTINGS.items()
    )
    doc.heading(1, "API routes")
    doc.text(
        INTRO.format(
            overrides=overrides,
            key_anchor=_github_anchor("`POST /users/{user_id}/api-keys`"),
            codes=", ".join(f"`{code.value}`" for code in ErrorCode),
            contents=" \u00b7 ".join(f"[{t}](#{_github_anchor(t)})" for t in SECTIONS),
        )
    )

    doc.heading(2, "Health")
    doc.operation("GET", "/health/live", note="The container healthcheck.")
    doc.example("live")
    doc.operation("GET", "/health/db")
    doc.example("db")
    doc.operation(
        "GET",
        "/health/ready",
        note="See [503](#503-service-unavailable) for the answer when a dependency is down.",
    )
    doc.example("ready_probe", "A probe (no key):")
    doc.example(
        "ready_admin",
        "With the admin key, while one conversation waits and no worker runs: `depth` (jobs "
        "waiting in Redis), `workers_alive` (worker processes with a fresh heartbeat), "
        "`pending` (conversations pending in PostgreSQL) and the age in seconds of the oldest. "
        "`model_servers`: each configured model server (host and port; here the stand-in's, "
        f"masked as `{MASKED_SERVER}`), its capacity (`0`: none), the slots all workers hold "
        "on it (`null` without a capacity) and whether it is `healthy` (`false` while a worker "
        "has set it aside for refusing connections).",
    )
    doc.operation(
        "GET",
        "/metrics",
        note="The metrics are listed in [observability.md](observability.md#metrics); each "
        "worker serves its own on `WORKER_METRICS_PORT`. Who may read them is "
        "`METRICS_ACCESS`: `public` (the default in DEV, as here), `admin` (the default "
        "elsewhere) or `off`.",
    )
    doc.metrics_example("metrics", "conversations_submitted_total")

    doc.heading(2, "Users")
    doc.operation("POST", "/users")
    doc.example("user_create")
    doc.operation("GET", "/users")
    doc.example("user_list", "Three users exist; the page holds two, `X-Total-Count` counts all.")
    doc.operation("GET", "/users/{user_id}")
    doc.example("user_get", "Ana reads herself with her own key:")
    doc.operation("PATCH", "/users/{user_id}")
    doc.example("user_patch")
    doc.operation("DELETE", "/users/{user_id}")
    doc.example("user_delete")
    doc.example("user_delete_after", "Afterwards:")

    doc.heading(2, "API keys")
    doc.text(
        "Only a hash of each key is stored: the secret `key` is in the creation response and "
        f"nowhere else (masked as `{MASKED_KEY}` below); `prefix`, its first characters, tells "
        "keys apart. A deleted user's keys stop working at once."
    )
    doc.operation("POST", "/users/{user_id}/api-keys")
    doc.example("key_create", "The admin issues ana her first key (`$USER_KEY`):")
    doc.example("key_create_self", "Ana issues herself a second one (`$CI_KEY`):")
    doc.operation("GET", "/users/{user_id}/api-keys")
    doc.example("key_list")
    doc.operation("DELETE", "/users/{user_id}/api-keys/{key_id}")
    doc.example("key_revoke")
    doc.example("key_revoked_use", "Afterwards the key is refused:")

    doc.heading(2, "Model versions")
    doc.operation(
        "POST",
        "/model-versions",
        note="Which providers can generate answers is checked when a conversation is "
        "submitted ([400](#400-bad-request)).",
    )
    doc.example("model_create")
    doc.operation("GET", "/model-versions")
    doc.example("model_list")
    doc.operation("GET", "/model-versions/{model_version_id}")
    doc.example("model_get")
    doc.operation("PATCH", "/model-versions/{model_version_id}")
    doc.example("model_patch")
    doc.operation("DELETE", "/model-versions/{model_version_id}")
    doc.example("model_delete")

    doc.heading(2, "Conversations")
    doc.text(
        "A conversation's `status` is `pending` \u2192 `running` \u2192 `completed`, `failed` "
        "or `cancelled`. Below, ana submits with her own key, so `user_id` is left out."
    )
    doc.operation("POST", "/conversations")
    doc.example("conv_accepted", "Without `response`: `202 Accepted`; poll the `Location`.")
    doc.example("conv_stored", "With `response`: `201 Created`, nothing is queued.")
    doc.operation("GET", "/conversations/{conversation_id}")
    doc.example("conv_pending", "Until a worker takes it, a conversation is `pending`:")
    doc.text(COMPLETED_FIELDS)
    doc.example("conv_completed", "The same conversation, polled after the worker answered it:")
    doc.operation("GET", "/conversations/{conversation_id}/events")
    doc.example(
        "conv_events",
        "The same conversation's text as Server-Sent Events, asked for after the end: the "
        "replay, then `done` with the conversation, and the stream closes. Connected earlier, "
        "the deltas arrive as they are generated ([streaming.md](streaming.md)).",
    )
    doc.operation("GET", "/conversations")
    doc.example(
        "conv_list",
        "Ana's completed conversations: the one stored with its answer (`attempts: 0`, no "
        "measurements) is listed beside the generated one.",
    )
    doc.operation("PATCH", "/conversations/{conversation_id}")
    doc.example("conv_patch")
    doc.example("conv_patch_unfinished", "While it is unfinished the answer cannot be edited:")
    doc.operation("POST", "/conversations/{conversation_id}/cancel")
    doc.example("conv_cancel")
    doc.example(
        "conv_cancel_again",
        "A finished (`completed`, `failed` or `cancelled`) conversation cannot be cancelled:",
    )
    doc.operation("GET", "/conversations/{conversation_id}/webhook")
    doc.example(
        "conv_webhook",
        "The delivery of a conversation's webhook (docs/webhooks.md); this one was submitted "
        "without a `callback_url`:",
    )
    doc.operation("DELETE", "/conversations/{conversation_id}")
    doc.example("conv_delete")
    doc.example("conv_delete_after", "Afterwards:")

    doc.heading(2, "Queue")
    doc.operation("GET", "/queue/users")
    doc.example(
        "queue_users",
        "While no worker runs: bruno has as many conversations waiting as he may, ana one "
        "(queued by the admin). A user with none is not listed.",
    )

    doc.heading(2, "Errors")
    doc.heading(3, "400 bad request")
    doc.example("malformed_json", "A body that is not JSON:")
    doc.example(
        "provider_not_served",
        "Submitting a conversation for generation with a model version whose `provider` no "
        'worker can serve (here one registered with `"provider": "anthropic"`). `ollama` is '
        "always served, `openai` (any OpenAI-compatible server) only when `OPENAI_BASE_URL` is "
        "set:",
    )
    doc.heading(3, "401 unauthorized")
    doc.example("unauthorized", "No key (an unknown or revoked one is answered the same way):")
    doc.heading(3, "403 forbidden")
    doc.example("forbidden_admin_route", "A user key on a route for the admin:")
    doc.example("forbidden_other_user", "A user key submitting for another user:")
    doc.heading(3, "404 not found")
    doc.example(
        "not_found_other_user",
        "Another user's conversation (bruno's key asking for ana's) is answered as absent, so "
        "ids cannot be probed:",
    )
    doc.example(
        "not_found_missing",
        "A conversation naming a user or model version that does not exist (or was deleted):",
    )
    doc.heading(3, "409 conflict")
    doc.example("conflict", "The email is taken, whatever its case:")
    if "too_large" in examples:
        doc.heading(3, "413 content too large")
        doc.example(
            "too_large",
            "A body over `MAX_REQUEST_BODY_BYTES` (here `big.json`, a prompt of that many "
            "characters):",
        )
    doc.heading(3, "422 validation error")
    doc.example(
        "invalid_body",
        "Field errors are in `details` (location, message and type; the input is not echoed back):",
    )
    doc.example("invalid_query", "Query parameters are validated the same way:")
    doc.heading(3, "429 too many requests")
    doc.example(
        "too_many_active",
        "A user key may have `MAX_ACTIVE_CONVERSATIONS_PER_USER` conversations pending or "
        "running at once; bruno's are all still waiting:",
    )
    doc.example(
        "too_many_submissions",
        "And `SUBMIT_RATE_LIMIT` submissions per window, refused ones included; the admin key "
        "is not limited:",
    )
    doc.heading(3, "503 service unavailable")
    doc.example(
        "queue_full", "A submission for generation while the queue holds `QUEUE_MAX_DEPTH` jobs:"
    )
    doc.example(
        "db_down",
        "Any data route while the database is unreachable; retry after `Retry-After` seconds:",
    )
    doc.example("db_down_ready", "`/health/ready` names the dependency that is down:")
    return doc.render()


# --- putting it together --------------------------------------------------------------------


async def _record(database_url: str, redis_url: str, llm_url: str) -> tuple[str, list[str]]:
    settings = recording_settings(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        QUEUE_NAME=f"ai-eng-api-routes-doc:{uuid.uuid4().hex[:10]}:queue",
        OLLAMA_BASE_URL=AnyHttpUrl(llm_url),
        WORKER_POLL_DELAY_SECONDS=0.05,
    )
    try:
        async with running_app(settings) as client:
            openapi_response = await client.get(settings.OPENAPI_JSON_PATH)
            openapi = OpenApi(openapi_response.raise_for_status().json())
            rec = Recorder(client, openapi)
            admin_key = settings.ADMIN_API_KEY
            assert admin_key is not None
            rec.keys["ADMIN_KEY"] = admin_key.get_secret_value()
            await tell_story(rec, settings)
            access = await rec.probe_access("BRUNO_KEY")
    finally:
        await _drop_redis_keys(settings)
    text = write_document(openapi, rec.examples, access)
    if any(secret in text for secret in rec.keys.values()):
        raise RuntimeError("routes_doc: a key made it into the document")
    return text, rec.skipped


def generate() -> tuple[str, list[str]]:
    """Record the story against fresh services: the markdown, and the examples left out."""
    redis_url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    with migrated_database() as url, FakeLLMServer() as llm:
        llm.configure(reply=ANSWER)
        database_url = url.render_as_string(hide_password=False)
        return asyncio.run(_record(database_url, redis_url, llm.url))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=DOC_PATH, help="default: %(default)s")
    args = parser.parse_args(argv)
    started = time.monotonic()
    text, skipped = generate()
    args.output.write_text(text)
    print(
        f"wrote {args.output}: {len(documented_operations(text))} operations, "
        f"{len(text.splitlines())} lines, in {time.monotonic() - started:.1f} s",
        flush=True,
    )
    for note in skipped:
        print(f"left out: {note}", file=sys.stderr)


if __name__ == "__main__":
    main()
