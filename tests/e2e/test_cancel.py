"""Cancel through the real processes: the model call stops, the text so far is kept."""

from __future__ import annotations

import pytest

from tests.support.fake_llm import FakeLLMServer
from tests.support.fake_llm_behaviour import stream_pieces
from tests.support.processes import wait_until
from tests.support.stack import Stack

pytestmark = pytest.mark.e2e

PIECES_BEFORE_CANCEL = 3


def _submit(stack: Stack, prompt: str) -> str:
    user_id, model_id = stack.setup_model()
    response = stack.client.post(
        "/conversations", json={"user_id": user_id, "model_version_id": model_id, "prompt": prompt}
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_a_running_generation_cancelled_stops_the_model_and_keeps_its_text(
    stack: Stack, fake_llm: FakeLLMServer
) -> None:
    prompt = "tell me a long story about queues and workers"
    # The model streams three pieces, then waits: the conversation is mid-generation.
    fake_llm.configure(hold=True, hold_after_pieces=PIECES_BEFORE_CANCEL)
    cid = _submit(stack, prompt)
    wait_until(lambda: fake_llm.stats().calls_for(prompt) == 1, timeout=20, what="the model call")
    cancelled = stack.client.post(f"/conversations/{cid}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    # The model server sees its client go away: the call was aborted, not left to finish.
    wait_until(lambda: fake_llm.stats().client_hangups == 1, timeout=10, what="the hang-up")
    said = "".join(stream_pieces(f"echo: {prompt}")[:PIECES_BEFORE_CANCEL])

    def kept() -> bool:
        return stack.client.get(f"/conversations/{cid}").json()["response"] == said

    wait_until(kept, timeout=10, what="the text generated before the cancel")
    final = stack.client.get(f"/conversations/{cid}").json()
    assert (final["status"], final["attempts"]) == ("cancelled", 1)
    fake_llm.configure(hold=False)
    assert fake_llm.stats().calls_for(prompt) == 1
