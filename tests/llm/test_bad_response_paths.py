"""A bad response names the wrong field by its whole path, as a reader would look it up."""

from __future__ import annotations

import httpx
import pytest
from pydantic import BaseModel

from shared.llm.base import LLMBadResponseError
from shared.llm.transport import parse_body

URL = "http://llm.test/api/chat"


class _Message(BaseModel):
    role: str
    content: str


class _Choice(BaseModel):
    message: _Message


class _Completion(BaseModel):
    choices: list[_Choice]


def test_a_nested_field_is_named_by_its_dotted_path() -> None:
    body = {"choices": [{"message": {"role": "assistant", "content": "ok"}}, {"message": {}}]}
    response = httpx.Response(200, json=body, request=httpx.Request("POST", URL))
    with pytest.raises(LLMBadResponseError) as info:
        parse_body(response, _Completion, provider="openai")
    assert info.value.message == (
        f"openai sent an invalid response from {URL}: "
        "choices.1.message.role: missing; choices.1.message.content: missing"
    )
