"""The OpenAPI document, with the limits that are settings written into it, and its links.

The request schemas carry fixed outer bounds; an operator may set tighter ones
(`PROMPT_MAX_CHARS`, `MAX_TOKENS_LIMIT`, ...). The document must say what this server really
accepts, so the configured numbers replace the fixed ones here.

Links say where the ids a response returns lead: from a model version to a submission, from a
submission to polling, editing, cancelling and deleting it and to its owner, from a new key to
its revocation. Clients and stateful API testers follow them.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from shared.settings import Settings


def _limits(settings: Settings) -> dict[str, dict[str, int]]:
    return {
        "prompt": {"maxLength": settings.PROMPT_MAX_CHARS},
        "system_instruction": {"maxLength": settings.SYSTEM_INSTRUCTION_MAX_CHARS},
        "context": {"maxLength": settings.CONTEXT_MAX_CHARS},
        "max_tokens": {"maximum": settings.MAX_TOKENS_LIMIT},
    }


def _apply(prop: dict[str, Any], bounds: dict[str, int]) -> None:
    # An optional field is `anyOf: [{the type}, {"type": "null"}]`; the bound goes on the type.
    targets = [p for p in prop.get("anyOf", [prop]) if p.get("type") != "null"]
    for target in targets:
        target.update(bounds)


def _link(
    method: str, path: str, body: dict[str, str] | None = None, **parameters: str
) -> dict[str, Any]:
    pointer = path.replace("~", "~0").replace("/", "~1")
    link: dict[str, Any] = {"operationRef": f"#/paths/{pointer}/{method}"}
    if parameters:
        link["parameters"] = parameters
    if body is not None:
        link["requestBody"] = body
    return link


_ID = "$response.body#/id"
_CONVERSATION = "/conversations/{conversation_id}"
# (path, method) of the source operation -> the links of each of its 2xx responses.
_LINKS: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("/model-versions", "get"): {
        "SubmitConversation": _link(
            "post", "/conversations", body={"model_version_id": "$response.body#/0/id"}
        ),
    },
    ("/model-versions/{model_version_id}", "get"): {
        "SubmitConversation": _link("post", "/conversations", body={"model_version_id": _ID}),
    },
    ("/conversations", "post"): {
        "GetConversation": _link("get", _CONVERSATION, conversation_id=_ID),
        "UpdateConversation": _link("patch", _CONVERSATION, conversation_id=_ID),
        "CancelConversation": _link("post", f"{_CONVERSATION}/cancel", conversation_id=_ID),
        "DeleteConversation": _link("delete", _CONVERSATION, conversation_id=_ID),
        "GetOwner": _link("get", "/users/{user_id}", user_id="$response.body#/user_id"),
    },
    ("/users/{user_id}/api-keys", "post"): {
        "RevokeKey": _link(
            "delete",
            "/users/{user_id}/api-keys/{key_id}",
            user_id="$response.body#/user_id",
            key_id=_ID,
        ),
    },
}


def _add_links(schema: dict[str, Any]) -> None:
    for (path, method), links in _LINKS.items():
        operation = schema["paths"].get(path, {}).get(method)
        if operation is None:
            continue
        for status, response in operation["responses"].items():
            if status.startswith("2"):
                response["links"] = copy.deepcopy(links)


def install_openapi(app: FastAPI, settings: Settings) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
                separate_input_output_schemas=app.separate_input_output_schemas,
            )
            create = schema.get("components", {}).get("schemas", {}).get("ConversationCreate")
            if create is not None:
                for field, bounds in _limits(settings).items():
                    _apply(create["properties"][field], bounds)
            _add_links(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
