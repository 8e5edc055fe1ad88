"""No input gives a 500: NUL and control characters, loose numbers, NaN, huge offsets.

Each case here used to reach PostgreSQL (which refuses U+0000 and offsets past a bigint) or
be coerced (`"1"` read as a number). They are now refused at the door with 422, and the
OpenAPI document states the same rules as patterns.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from shared.schemas.common import Page
from tests.api.conftest import assert_error, create_model_version, create_user

NUL = "\u0000"
# One of each kind of control character (Unicode category Cc): C0, tab, DEL, C1.
CONTROLS = ["\u0001", "\t", "\u001f", "\u007f", "\u0085", "\u009f"]
SINGLE_LINE_FIELDS = [
    ("/model-versions", "provider"),
    ("/model-versions", "model_name"),
    ("/model-versions", "version_tag"),
    ("/users", "email"),
]


def _valid_model_version(**fields: Any) -> dict[str, Any]:
    return {"provider": "ollama", "model_name": "llama3.2:3b", "version_tag": "v1", **fields}


def _valid_email(value: str) -> str:
    return f"ana{value}@example.com"


async def _owners(client: httpx.AsyncClient) -> dict[str, str]:
    user = await create_user(client)
    model_version = await create_model_version(client, model_name="nul-test")
    return {"user_id": user["id"], "model_version_id": model_version["id"]}


def _assert_refused_field(response: httpx.Response, field: str) -> None:
    body = assert_error(response, 422, "validation_error")
    assert [d["loc"] for d in body["details"]] == [["body", field]], body


# NUL, in every string field of every request body


@pytest.mark.parametrize("field", ["prompt", "system_instruction", "context", "response"])
@pytest.mark.parametrize("where", ["start", "middle", "alone"])
async def test_nul_in_a_conversation_text_is_a_validation_error(
    client: httpx.AsyncClient, field: str, where: str
) -> None:
    owners = await _owners(client)
    value = {"start": NUL + "hi", "middle": "hi" + NUL + "there", "alone": NUL}[where]
    payload = {**owners, "prompt": "hi", "response": "hello", field: value}
    _assert_refused_field(await client.post("/conversations", json=payload), field)
    listed = await client.get("/conversations")
    assert listed.json() == []


async def test_nul_in_an_edited_response_is_a_validation_error(client: httpx.AsyncClient) -> None:
    owners = await _owners(client)
    created = await client.post(
        "/conversations", json={**owners, "prompt": "hi", "response": "hello"}
    )
    assert created.status_code == 201, created.text
    response = await client.patch(
        f"/conversations/{created.json()['id']}", json={"response": "bad" + NUL}
    )
    _assert_refused_field(response, "response")


@pytest.mark.parametrize(("path", "field"), SINGLE_LINE_FIELDS)
@pytest.mark.parametrize("char", [NUL, *CONTROLS])
async def test_control_characters_in_a_name_are_a_validation_error(
    client: httpx.AsyncClient, path: str, field: str, char: str
) -> None:
    if field == "email":
        payload = {"email": _valid_email(char)}
    else:
        payload = _valid_model_version(**{field: f"name{char}x"})
    _assert_refused_field(await client.post(path, json=payload), field)


@pytest.mark.parametrize(("path", "field"), SINGLE_LINE_FIELDS)
@pytest.mark.parametrize("char", [NUL, "\u0001", "\u007f"])
async def test_control_characters_in_a_renamed_name_are_a_validation_error(
    client: httpx.AsyncClient, path: str, field: str, char: str
) -> None:
    target = await (create_user(client) if field == "email" else create_model_version(client))
    value = _valid_email(char) if field == "email" else f"name{char}x"
    response = await client.patch(f"{path}/{target['id']}", json={field: value})
    _assert_refused_field(response, field)


@pytest.mark.parametrize("name", [NUL, "key" + NUL, "\u0001", "key\u009f"])
async def test_control_characters_in_a_key_name_are_a_validation_error(
    client: httpx.AsyncClient, name: str
) -> None:
    user = await create_user(client)
    response = await client.post(f"/users/{user['id']}/api-keys", json={"name": name})
    _assert_refused_field(response, "name")


async def test_multi_line_texts_keep_newlines_tabs_and_other_controls(
    client: httpx.AsyncClient,
) -> None:
    owners = await _owners(client)
    text = "line one\n\tline two\r\nbell \u0007 and NEL \u0085 end"
    payload = {**owners, "prompt": text, "context": text, "response": text}
    response = await client.post("/conversations", json=payload)
    assert response.status_code == 201, response.text
    assert response.json()["prompt"] == text
    assert response.json()["response"] == text


async def test_names_may_contain_spaces_and_non_ascii(client: httpx.AsyncClient) -> None:
    created = await create_model_version(client, model_name="Llama 3.2 — ünïcode")
    assert created["model_name"] == "Llama 3.2 — ünïcode"
    user = await create_user(client, "josé@exämple.com")
    assert user["email"] == "josé@exämple.com"


@pytest.mark.parametrize("blank", [" ", "   ", "\n\t ", "\u3000"])
async def test_a_blank_prompt_is_a_validation_error(client: httpx.AsyncClient, blank: str) -> None:
    owners = await _owners(client)
    response = await client.post("/conversations", json={**owners, "prompt": blank})
    _assert_refused_field(response, "prompt")


@pytest.mark.parametrize("field", ["provider", "model_name", "version_tag"])
async def test_a_blank_name_is_a_validation_error(client: httpx.AsyncClient, field: str) -> None:
    response = await client.post("/model-versions", json=_valid_model_version(**{field: "   "}))
    _assert_refused_field(response, field)


async def test_a_lone_surrogate_is_a_validation_error(client: httpx.AsyncClient) -> None:
    owners = await _owners(client)
    # json.dumps would refuse to write it; Python's json parser reads it.
    raw = json.dumps({**owners, "prompt": "hi SURROGATE there"}).replace("SURROGATE", "\\ud800")
    response = await client.post(
        "/conversations", content=raw.encode(), headers={"Content-Type": "application/json"}
    )
    _assert_refused_field(response, "prompt")


# The document states the same rules


def _schema_property(openapi: dict[str, Any], schema: str, field: str) -> dict[str, Any]:
    prop: dict[str, Any] = openapi["components"]["schemas"][schema]["properties"][field]
    typed = [p for p in prop.get("anyOf", [prop]) if p.get("type") == "string"]
    assert len(typed) == 1, prop
    return typed[0]


def _schema_accepts(prop: dict[str, Any], value: str) -> bool:
    return (
        prop.get("minLength", 0) <= len(value) <= prop.get("maxLength", len(value))
        and re.search(prop["pattern"], value) is not None
    )


# Every string field of every request body, by schema name.
_TEXT_FIELDS = [
    ("ConversationCreate", "prompt"),
    ("ConversationCreate", "system_instruction"),
    ("ConversationCreate", "context"),
    ("ConversationCreate", "response"),
    ("ConversationCreate", "callback_url"),
    ("ConversationUpdate", "response"),
    ("ModelVersionCreate", "provider"),
    ("ModelVersionCreate", "model_name"),
    ("ModelVersionCreate", "version_tag"),
    ("ModelVersionUpdate", "provider"),
    ("ModelVersionUpdate", "model_name"),
    ("ModelVersionUpdate", "version_tag"),
    ("UserCreate", "email"),
    ("UserUpdate", "email"),
    ("ApiKeyCreate", "name"),
]


@pytest.mark.parametrize(("schema", "field"), _TEXT_FIELDS)
async def test_every_text_field_of_a_body_declares_a_pattern_refusing_nul(
    client: httpx.AsyncClient, schema: str, field: str
) -> None:
    openapi = (await client.get("/openapi.json")).json()
    prop = _schema_property(openapi, schema, field)
    assert "pattern" in prop, (schema, field)
    for sample in (NUL, "a" + NUL, "a" + NUL + "@b.co", "a@b.co" + NUL):
        assert not _schema_accepts(prop, sample), (schema, field, sample)


def test_every_string_field_of_every_request_body_is_listed_above(app: FastAPI) -> None:
    openapi = app.openapi()
    bodies: set[str] = set()
    for operations in openapi["paths"].values():
        for operation in operations.values():
            # A body may be `$ref` or, when optional, `anyOf: [{$ref}, null]`.
            body = json.dumps(operation.get("requestBody", {}))
            bodies.update(re.findall(r'"#/components/schemas/(\w+)"', body))
    assert bodies
    strings = set()
    for name in bodies:
        for field, prop in openapi["components"]["schemas"][name]["properties"].items():
            variants = prop.get("anyOf", [prop])
            if any(v.get("type") == "string" and "format" not in v for v in variants):
                strings.add((name, field))
    assert strings == set(_TEXT_FIELDS)


@pytest.mark.parametrize(
    ("field", "samples"),
    [
        ("prompt", ["hi", " padded ", "   ", "", "\n\n", "two\nlines", "nul" + NUL, "x" * 10]),
        ("context", ["hi", "   ", "", "a" + NUL + "b", "tab\there"]),
    ],
)
async def test_the_document_and_the_server_agree_on_conversation_texts(
    client: httpx.AsyncClient, field: str, samples: list[str]
) -> None:
    owners = await _owners(client)
    openapi = (await client.get("/openapi.json")).json()
    prop = _schema_property(openapi, "ConversationCreate", field)
    for sample in samples:
        payload = {**owners, "prompt": "hi", "response": "ok", field: sample}
        response = await client.post("/conversations", json=payload)
        assert response.status_code in {201, 422}, response.text
        assert (response.status_code == 201) == _schema_accepts(prop, sample), (field, sample)


@pytest.mark.parametrize(
    ("field", "samples"),
    [
        ("email", ["a@b.co", "a b@c.co", "a@b", "@b.co", "a@@b.co", "a@b.c" + NUL, "a\u0001@b.co"]),
        ("model_name", ["m", "m x", " m ", "   ", "m" + NUL, "m\u0001", "m\u009f", "m\u007f"]),
    ],
)
async def test_the_document_and_the_server_agree_on_names(
    client: httpx.AsyncClient, field: str, samples: list[str]
) -> None:
    openapi = (await client.get("/openapi.json")).json()
    schema = "UserCreate" if field == "email" else "ModelVersionCreate"
    prop = _schema_property(openapi, schema, field)
    for index, sample in enumerate(samples):
        if field == "email":
            response = await client.post("/users", json={"email": sample})
        else:
            payload = _valid_model_version(model_name=sample, version_tag=f"v{index}")
            response = await client.post("/model-versions", json=payload)
        assert response.status_code in {201, 422}, response.text
        assert (response.status_code == 201) == _schema_accepts(prop, sample), (field, sample)


# Numbers are JSON numbers, finite ones


@pytest.mark.parametrize("field", ["temperature", "top_p", "max_tokens"])
@pytest.mark.parametrize("value", ["1", "1.0", True, False, [1], {"v": 1}])
async def test_conversation_numbers_are_not_coerced(
    client: httpx.AsyncClient, field: str, value: Any
) -> None:
    owners = await _owners(client)
    payload = {**owners, "prompt": "hi", "response": "ok", field: value}
    _assert_refused_field(await client.post("/conversations", json=payload), field)


@pytest.mark.parametrize("field", ["max_tokens_cap", "default_temperature"])
@pytest.mark.parametrize("value", ["1", "1.0", True])
async def test_model_version_numbers_are_not_coerced(
    client: httpx.AsyncClient, field: str, value: Any
) -> None:
    response = await client.post("/model-versions", json=_valid_model_version(**{field: value}))
    _assert_refused_field(response, field)
    created = await create_model_version(client)
    response = await client.patch(f"/model-versions/{created['id']}", json={field: value})
    _assert_refused_field(response, field)


async def test_numbers_are_read_as_json_schema_reads_them(client: httpx.AsyncClient) -> None:
    # `number` includes integers; `integer` includes numbers without a fraction (2.0).
    owners = await _owners(client)
    payload = {
        **owners,
        "prompt": "hi",
        "response": "ok",
        "temperature": 1,
        "top_p": 0,
        "max_tokens": 64.0,
    }
    response = await client.post("/conversations", json=payload)
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (1.0, 0.0, 64)
    created = await create_model_version(
        client, model_name="ints", default_temperature=2, max_tokens_cap=1e3
    )
    assert (created["default_temperature"], created["max_tokens_cap"]) == (2.0, 1000)
    payload = {**owners, "prompt": "hi", "response": "ok", "max_tokens": 64.5}
    _assert_refused_field(await client.post("/conversations", json=payload), "max_tokens")


@pytest.mark.parametrize(
    ("schema", "field", "minimum", "maximum"),
    [
        ("ConversationCreate", "temperature", 0, 2),
        ("ConversationCreate", "top_p", 0, 1),
        ("ConversationCreate", "max_tokens", 1, None),
        ("ModelVersionCreate", "default_temperature", 0, 2),
        ("ModelVersionCreate", "max_tokens_cap", 1, 1_000_000),
        ("ModelVersionUpdate", "max_tokens_cap", 1, 1_000_000),
    ],
)
async def test_the_document_bounds_the_numbers(
    client: httpx.AsyncClient, schema: str, field: str, minimum: int, maximum: int | None
) -> None:
    openapi = (await client.get("/openapi.json")).json()
    prop = openapi["components"]["schemas"][schema]["properties"][field]
    (typed,) = [p for p in prop["anyOf"] if p["type"] != "null"]
    assert typed["type"] in {"number", "integer"}
    assert typed["minimum"] == minimum
    if maximum is not None:
        assert typed["maximum"] == maximum


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
@pytest.mark.parametrize("field", ["temperature", "top_p", "max_tokens"])
async def test_non_finite_numbers_are_a_validation_error(
    client: httpx.AsyncClient, literal: str, field: str
) -> None:
    owners = await _owners(client)
    raw = (
        f'{{"user_id": "{owners["user_id"]}", "model_version_id": '
        f'"{owners["model_version_id"]}", "prompt": "hi", "response": "ok", "{field}": {literal}}}'
    )
    response = await client.post(
        "/conversations", content=raw.encode(), headers={"Content-Type": "application/json"}
    )
    _assert_refused_field(response, field)
    assert (await client.get("/conversations")).json() == []


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
async def test_non_finite_model_version_temperature_is_a_validation_error(
    client: httpx.AsyncClient, literal: str
) -> None:
    raw = (
        '{"provider": "ollama", "model_name": "m", "version_tag": "v1", '
        f'"default_temperature": {literal}}}'
    )
    response = await client.post(
        "/model-versions", content=raw.encode(), headers={"Content-Type": "application/json"}
    )
    _assert_refused_field(response, "default_temperature")


# Paging past a bigint

LIST_ROUTES = ["/users", "/model-versions", "/conversations"]
MAX_OFFSET = 2**63 - 1


@pytest.mark.parametrize("path", LIST_ROUTES)
async def test_the_largest_offset_is_an_empty_page(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path, params={"offset": MAX_OFFSET})
    assert response.status_code == 200, response.text
    assert response.json() == []


@pytest.mark.parametrize("path", LIST_ROUTES)
@pytest.mark.parametrize("offset", [str(MAX_OFFSET + 1), str(2**64), "9" * 40, "1" * 5000])
async def test_an_offset_past_a_bigint_is_a_validation_error(
    client: httpx.AsyncClient, path: str, offset: str
) -> None:
    body = assert_error(await client.get(path, params={"offset": offset}), 422, "validation_error")
    assert body["details"][0]["loc"] == ["query", "offset"]


async def test_the_document_bounds_the_offset(client: httpx.AsyncClient) -> None:
    openapi = (await client.get("/openapi.json")).json()
    for path in LIST_ROUTES:
        params = {p["name"]: p for p in openapi["paths"][path]["get"]["parameters"]}
        assert params["offset"]["schema"]["maximum"] == MAX_OFFSET
        assert params["offset"]["schema"]["minimum"] == 0


def test_the_page_model_bounds_the_offset() -> None:
    assert Page(offset=MAX_OFFSET).offset == MAX_OFFSET
    with pytest.raises(ValidationError):
        Page(offset=MAX_OFFSET + 1)
