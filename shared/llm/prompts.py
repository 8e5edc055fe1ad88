"""Prompt assembly: versioned prompt files plus the request's own parts, in a fixed order.

The version is stored with every conversation, so a change of wording is a new folder
under `shared/prompts/` and a new `PROMPT_VERSION`, never an edit of an old one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from shared.llm.base import ChatMessage

PROMPT_VERSION = "v1"
PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"

# Versions name folders; anything else (`..`, `v1/../x`) must not reach the filesystem.
_VERSION_NAME = re.compile(r"v[0-9]+")


@dataclass(frozen=True, slots=True)
class PromptSet:
    system_prompt: str
    general_instructions: str


@cache
def load_prompt_set(version: str = PROMPT_VERSION) -> PromptSet:
    """Read one version's files once per process; unknown versions raise `ValueError`."""
    folder = PROMPTS_DIR / version
    if not _VERSION_NAME.fullmatch(version) or not folder.is_dir():
        raise ValueError(f"unknown prompt version {version!r}")
    return PromptSet(
        system_prompt=(folder / "system_prompt.md").read_text(encoding="utf-8").strip(),
        general_instructions=(folder / "general_instructions.md")
        .read_text(encoding="utf-8")
        .strip(),
    )


def build_messages(
    *,
    prompt: str,
    system_instruction: str | None,
    context: str | None,
    version: str = PROMPT_VERSION,
) -> tuple[ChatMessage, ...]:
    """The system message and the user message for one conversation.

    The system message is, separated by blank lines and skipping empty parts: the base
    system prompt, the request's `system_instruction`, the general instructions, then
    `Context:` with the request's context. Base rules come first so a request cannot
    push them out of the position models weigh most.
    """
    prompts = load_prompt_set(version)
    context_text = (context or "").strip()
    parts = [
        prompts.system_prompt,
        (system_instruction or "").strip(),
        prompts.general_instructions,
        f"Context:\n{context_text}" if context_text else "",
    ]
    system = "\n\n".join(part for part in parts if part)
    return (
        ChatMessage(role="system", content=system),
        ChatMessage(role="user", content=prompt.strip()),
    )
