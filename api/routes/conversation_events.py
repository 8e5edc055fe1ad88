"""`GET /conversations/{id}/events`: a conversation's text as Server-Sent Events, as it is
generated, then the conversation itself.

The worker writes the text to the conversation's Redis stream (`shared.stream_events`);
this replays what is there, follows what comes, and ends with `done`, the conversation as
`GET /conversations/{id}` returns it, read from PostgreSQL. The stream is a convenience, the
row the truth: whatever Redis lost, the reader still gets `done`.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from arq.connections import ArqRedis
from fastapi import APIRouter, Header
from loguru import logger
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.auth import PrincipalDep
from api.deps import EngineDep, QueueDep, SettingsDep
from api.errors import error_responses
from api.long_poll import listening
from shared.db import is_db_unavailable
from shared.errors import NotFoundError
from shared.models import ConversationStatus
from shared.repositories.conversation_statements import Row
from shared.schemas.conversations import ConversationRead
from shared.services import conversations as service
from shared.stream_events import EntryKind, StreamEntry, after_seq, events_key

# The router's lifespan, merged into the app's when it is included, runs the process's one
# subscription to ended conversations (the long-polls of `GET /conversations/{id}?wait=N`).
router = APIRouter(
    prefix="/conversations",
    tags=["conversations"],
    responses=error_responses(401),
    lifespan=listening,
)

# A blocking read returns within this, below the queue pool's socket timeout (5 s).
MAX_BLOCK_SECONDS = 4.0
# Entries read per call, replaying or following.
READ_COUNT = 500
# Lines end in LF, as most servers send them (the specification allows CRLF, LF or CR).
SEPARATOR = "\n"
# After Redis failed a read, wait this long before the next one (the row is checked meanwhile).
REDIS_RETRY_SECONDS = 1.0

_EVENTS_DOC = """The conversation's text as Server-Sent Events (`text/event-stream`).

- `event: delta`, `id: <seq>`, `data: {"seq": n, "text": "..."}`: the next piece of the
  answer, in order from seq 1, none missing, none repeated;
- `event: reset`, `data: {"attempt": n}`: the generation started over (a retry, or another
  worker after a crash): drop the text received so far;
- `event: done`, `data`: the conversation exactly as `GET /conversations/{id}` returns it;
  then the server closes the stream. Its `response` is the final text.

Connect at any time: what was generated so far is replayed, then followed live; once the
conversation has ended only its replay (while kept) and `done` are sent. `Last-Event-ID: n`
resumes after delta n. Comments (`: ping`) keep the connection alive while it waits.
"""


@router.get(
    "/{conversation_id}/events",
    response_class=EventSourceResponse,
    summary="Follow a conversation's text as it is generated",
    description=_EVENTS_DOC,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "The event stream"},
        **error_responses(404, 422, 503),
    },
)
async def conversation_events(
    conversation_id: uuid.UUID,
    engine: EngineDep,
    queue: QueueDep,
    caller: PrincipalDep,
    settings: SettingsDep,
    last_event_id: Annotated[
        int, Header(ge=0, description="Resume after this delta (its `id`); 0: from the start")
    ] = 0,
) -> EventSourceResponse:
    owner = caller.owner_scope()
    # Read before the stream starts, so another's or a missing conversation is a plain 404.
    row = await service.read_conversation(engine, conversation_id=conversation_id, owner_id=owner)
    follower = _Follower(
        redis=queue,
        engine=engine,
        key=events_key(settings.QUEUE_NAME, conversation_id),
        conversation_id=conversation_id,
        owner_id=owner,
        check_every=settings.EVENTS_KEEPALIVE_SECONDS,
        after=last_event_id,
    )
    return EventSourceResponse(
        follower.events(row), ping=settings.EVENTS_KEEPALIVE_SECONDS, sep=SEPARATOR
    )


def _is_terminal(row: Row) -> bool:
    return ConversationStatus(row["status"]).is_terminal


def _event(event: str, data: str, event_id: str | None = None) -> ServerSentEvent:
    return ServerSentEvent(data=data, event=event, id=event_id, sep=SEPARATOR)


def _done(row: Row) -> ServerSentEvent:
    return _event("done", ConversationRead.model_validate(row).model_dump_json())


def _json(payload: dict[str, object]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


class _Follower:
    """One client's reading of one stream: its position, the last delta it was sent, and
    whether the stream lost entries it would need (trimmed past its cap)."""

    def __init__(
        self,
        *,
        redis: ArqRedis,
        engine: AsyncEngine,
        key: str,
        conversation_id: uuid.UUID,
        owner_id: uuid.UUID | None,
        check_every: float,
        after: int,
    ) -> None:
        self._redis = redis
        self._engine = engine
        self._key = key
        self._conversation_id = conversation_id
        self._owner_id = owner_id
        self._check_every = check_every
        self._position = after_seq(after)
        self._last_seq = after
        self._gap = False

    async def events(self, row: Row | None) -> AsyncIterator[ServerSentEvent]:
        """Replay, follow, then `done` once the row is finished.

        The row is read again when the worker marks the stream ended, and every
        `check_every` seconds otherwise: a conversation can end without a word in the stream
        (cancelled, failed by the sweeper, or Redis lost the mark).
        """
        checked = time.monotonic()
        while row is not None:
            finished = _is_terminal(row)
            # A finished conversation's stream only gets drained; an open one is waited on.
            wait = 0.0 if finished else max(checked + self._check_every - time.monotonic(), 0)
            entries = await self._read(wait)
            ended = False
            for entry in entries:
                self._position = entry.entry_id
                ended = ended or entry.kind is EntryKind.END
                event = self._to_event(entry)
                if event is not None:
                    yield event
            if finished and len(entries) < READ_COUNT:
                yield _done(row)
                return
            if not finished and (ended or time.monotonic() - checked >= self._check_every):
                row = await self._reread(row)
                checked = time.monotonic()
        # Deleted meanwhile: there is no conversation to end with.

    def _to_event(self, entry: StreamEntry) -> ServerSentEvent | None:
        if entry.kind is EntryKind.RESET:
            # The text starts over here: whatever was missing before no longer matters.
            self._gap = False
            self._last_seq = entry.seq
            return _event("reset", _json({"attempt": entry.attempt}))
        if entry.kind is not EntryKind.DELTA or self._gap or entry.seq <= self._last_seq:
            return None
        if entry.seq != self._last_seq + 1:
            # Trimmed past the cap: sending the rest would leave a hole in the text. The
            # client gets the whole answer in `done`.
            logger.warning("events_stream_incomplete", expected=self._last_seq + 1, got=entry.seq)
            self._gap = True
            return None
        self._last_seq = entry.seq
        return _event("delta", _json({"seq": entry.seq, "text": entry.text}), str(entry.seq))

    async def _read(self, wait: float) -> list[StreamEntry]:
        """The entries after the position: at once, or blocking up to `wait` for some."""
        try:
            if wait <= 0:
                raw = await self._redis.xrange(
                    self._key, min=f"({self._position}", max="+", count=READ_COUNT
                )
            else:
                block_ms = max(int(min(wait, MAX_BLOCK_SECONDS) * 1000), 1)
                answer = await self._redis.xread(
                    {self._key: self._position}, count=READ_COUNT, block=block_ms
                )
                raw = answer[0][1] if answer else []
        except (RedisError, OSError) as exc:
            logger.warning("events_read_failed", error=type(exc).__name__)
            await asyncio.sleep(min(wait, REDIS_RETRY_SECONDS))
            return []
        return [StreamEntry.parse(entry_id, fields) for entry_id, fields in raw]

    async def _reread(self, row: Row) -> Row | None:
        """The row now; the last one read while the database is away; None once deleted."""
        try:
            return await service.read_conversation(
                self._engine, conversation_id=self._conversation_id, owner_id=self._owner_id
            )
        except NotFoundError:
            return None
        except Exception as exc:
            if not is_db_unavailable(exc):
                raise
            logger.warning("events_row_check_failed", error=type(exc).__name__)
            return row
