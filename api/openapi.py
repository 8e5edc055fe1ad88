"""The OpenAPI document, with the limits that are settings written into it.

The request schemas carry fixed outer bounds; an operator may set tighter ones
(`PROMPT_MAX_CHARS`, `MAX_TOKENS_LIMIT`, ...). The document must say what this server really
accepts, so the configured numbers replace the fixed ones here.
"""

from __future__ import annotations

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
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
