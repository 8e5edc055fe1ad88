"""Prompt assembly: merge order, empty parts, stripping, versions, caching."""

from __future__ import annotations

import pytest

from shared.llm.base import ChatMessage
from shared.llm.prompts import PROMPT_VERSION, PROMPTS_DIR, build_messages, load_prompt_set

BASE = "You are a helpful, reliable assistant. Follow safety and policy rules strictly."
GENERAL = "Use provided context when relevant. Be concise and accurate."


def test_version_one_is_current_and_read_from_its_files() -> None:
    prompts = load_prompt_set("v1")

    assert PROMPT_VERSION == "v1"
    assert (prompts.system_prompt, prompts.general_instructions) == (BASE, GENERAL)


def test_all_parts_merge_in_order_separated_by_blank_lines() -> None:
    messages = build_messages(
        prompt="  What is the refund window?  \n",
        system_instruction="  Answer as a support agent.\n",
        context="\n Refunds are accepted within 30 days.\nShipping is free. \n",
    )

    assert messages == (
        ChatMessage(
            role="system",
            content=(
                f"{BASE}\n\n"
                "Answer as a support agent.\n\n"
                f"{GENERAL}\n\n"
                "Context:\nRefunds are accepted within 30 days.\nShipping is free."
            ),
        ),
        ChatMessage(role="user", content="What is the refund window?"),
    )


@pytest.mark.parametrize("empty", [None, "", "   \n\t "])
def test_empty_instruction_and_context_are_skipped(empty: str | None) -> None:
    system, user = build_messages(prompt="hi", system_instruction=empty, context=empty)

    assert system.content == f"{BASE}\n\n{GENERAL}"
    assert "Context:" not in system.content
    assert (user.role, user.content) == ("user", "hi")


def test_context_without_instruction_keeps_order() -> None:
    system, _ = build_messages(prompt="hi", system_instruction=None, context="facts")

    assert system.content == f"{BASE}\n\n{GENERAL}\n\nContext:\nfacts"


def test_explicit_version_is_used() -> None:
    explicit = build_messages(prompt="hi", system_instruction=None, context=None, version="v1")

    assert explicit == build_messages(prompt="hi", system_instruction=None, context=None)


@pytest.mark.parametrize("version", ["v0", "v999", "../v1", "v1/..", "", "V1"])
def test_unknown_version_is_refused(version: str) -> None:
    with pytest.raises(ValueError, match="unknown prompt version"):
        build_messages(prompt="hi", system_instruction=None, context=None, version=version)


def test_files_are_read_once() -> None:
    assert load_prompt_set("v1") is load_prompt_set("v1")
    assert load_prompt_set.cache_info().currsize >= 1


def test_prompt_files_exist_for_every_version_folder() -> None:
    for folder in PROMPTS_DIR.iterdir():
        if folder.is_dir():
            assert (folder / "system_prompt.md").is_file()
            assert (folder / "general_instructions.md").is_file()
