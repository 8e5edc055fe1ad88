"""A conversation's live text: the Redis stream the worker writes and the API reads.

One stream per conversation, `<QUEUE_NAME>:events:<conversation id>`. Its entries, in order:

- `delta`: a piece of the answer, numbered by its entry id `<seq>-0` (seq 1, 2, 3, ...);
- `reset`: a new run of the generation took over (a retry after an error, another worker
  after a crash, a hand-back at shutdown); the text before it is void. Its id is
  `<seq of the delta before it>-<n>`, so "the deltas after seq n" includes it;
- `end`: the conversation's outcome is written in PostgreSQL (which stays the only truth).

Every entry names its `attempt` (the claim's fencing number) and its `run` (a random id per
claim, since a handed-back attempt keeps its number). One script appends, so numbering,
fencing and the reset are atomic: a run older than the stream's newest attempt is refused,
and nothing is appended after `end`. The stream is capped (`MAXLEN ~`) and expires: a day
after its last entry while unfinished, `EVENTS_RETENTION_SECONDS` after `end`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

# While a conversation is unfinished its stream outlives any pause between two attempts
# (backoff, a long queue, a lease that has to run out after a crash).
UNFINISHED_TTL_SECONDS = 24 * 3600
# What `append` answers when the stream refuses the run (a newer attempt owns it, or it ended).
REFUSED = -1


class EntryKind(StrEnum):
    DELTA = "delta"
    RESET = "reset"
    END = "end"


def events_key(queue_name: str, conversation_id: uuid.UUID | str) -> str:
    """The conversation's stream, under the queue's prefix like every key of the service."""
    return f"{queue_name}:events:{conversation_id}"


def after_seq(seq: int) -> str:
    """The exclusive stream position just past delta `seq`: the `reset` that may follow it is
    included (`XRANGE key (<this> +`). Seq 0 is the start of the stream."""
    return f"{seq}-0"


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One entry as the reader sees it."""

    entry_id: str
    kind: EntryKind
    seq: int
    attempt: int
    text: str

    @classmethod
    def parse(cls, entry_id: bytes | str, fields: dict[bytes, bytes]) -> StreamEntry:
        ident = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        return cls(
            entry_id=ident,
            kind=EntryKind(fields[b"kind"].decode()),
            seq=int(ident.split("-", 1)[0]),
            attempt=int(fields.get(b"attempt", b"0")),
            text=fields.get(b"text", b"").decode(),
        )


# KEYS[1] the stream. ARGV: kind (delta | end), attempt, run, text, max length, expiry seconds.
# Returns the seq of the last delta in the stream after the append, or -1 when refused.
_APPEND = """
local key = KEYS[1]
local kind, attempt, run = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local maxlen, ttl = ARGV[5], ARGV[6]
local seq, sub = 0, 0
local last_kind, last_attempt, last_run = nil, 0, nil
local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1]
if last then
  local ms, n = string.match(last[1], '^(%d+)-(%d+)$')
  seq, sub = tonumber(ms), tonumber(n)
  local fields = last[2]
  for i = 1, #fields, 2 do
    local name, value = fields[i], fields[i + 1]
    if name == 'kind' then last_kind = value
    elseif name == 'attempt' then last_attempt = tonumber(value)
    elseif name == 'run' then last_run = value end
  end
end
if last_kind == 'end' or attempt < last_attempt then
  return -1
end
if last_kind == 'delta' and last_run ~= run then
  sub = sub + 1
  redis.call('XADD', key, 'MAXLEN', '~', maxlen, string.format('%d-%d', seq, sub),
    'kind', 'reset', 'attempt', attempt, 'run', run)
end
if kind == 'delta' then
  seq = seq + 1
  redis.call('XADD', key, 'MAXLEN', '~', maxlen, string.format('%d-0', seq),
    'kind', 'delta', 'attempt', attempt, 'run', run, 'text', ARGV[4])
else
  redis.call('XADD', key, 'MAXLEN', '~', maxlen, string.format('%d-%d', seq, sub + 1),
    'kind', 'end', 'attempt', attempt, 'run', run)
end
redis.call('EXPIRE', key, ttl)
return seq
"""


class EventStreamWriter:
    """Appends to conversation streams with the one script (the worker's side)."""

    def __init__(self, redis: Redis, *, queue_name: str, max_len: int, retention_seconds: int):
        self._script: AsyncScript = redis.register_script(_APPEND)
        self._queue_name = queue_name
        self._max_len = max_len
        self._retention = retention_seconds

    async def append_delta(
        self, conversation_id: uuid.UUID, *, attempt: int, run: str, text: str
    ) -> int:
        """Append a piece of text (after a `reset` when another run wrote last); the new
        seq, or `REFUSED`."""
        return await self._append(
            conversation_id, EntryKind.DELTA, attempt, run, text, UNFINISHED_TTL_SECONDS
        )

    async def append_end(self, conversation_id: uuid.UUID, *, attempt: int, run: str) -> int:
        """Mark the stream finished and let it expire after the retention period."""
        return await self._append(conversation_id, EntryKind.END, attempt, run, "", self._retention)

    async def _append(
        self,
        conversation_id: uuid.UUID,
        kind: EntryKind,
        attempt: int,
        run: str,
        text: str,
        ttl: int,
    ) -> int:
        key = events_key(self._queue_name, conversation_id)
        args = [kind.value, attempt, run, text, self._max_len, ttl]
        return int(await self._script(keys=[key], args=args))
