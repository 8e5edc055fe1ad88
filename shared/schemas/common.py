from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticKnownError

# The patterns below are what the server checks and what the OpenAPI document shows, so a
# client can validate before sending. Values are matched after surrounding whitespace is
# stripped (`StrictInput`), which is why "not blank" is a pattern and not just `minLength: 1`.

# PostgreSQL cannot store U+0000 in text: refused here instead of failing the insert.
NO_NUL = r"^[^\x00]*$"
NO_NUL_NOT_BLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"
# A one-line name: no control character at all (Unicode category Cc: C0, DEL and C1).
_CONTROL = r"\x00-\x1f\x7f-\x9f"
SINGLE_LINE_NOT_BLANK = rf"^[^{_CONTROL}]*[^\s{_CONTROL}][^{_CONTROL}]*$"

# The largest OFFSET PostgreSQL takes (a bigint); a larger one would fail the query.
MAX_OFFSET = 2**63 - 1


class StrictInput(BaseModel):
    """Base for request bodies: unknown fields are rejected, strings are stripped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    # Optional in a PATCH, but an explicit null would clear a required column.
    non_nullable: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _reject_explicit_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = sorted(k for k in cls.non_nullable if k in data and data[k] is None)
            if nulls:
                raise ValueError(f"may be omitted but not null: {', '.join(nulls)}")
        return data


class ReadModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel):
    """Paging parameters shared by every list route."""

    limit: Annotated[int, Field(ge=1, le=100)] = 50
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET)] = 0


Name128 = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=SINGLE_LINE_NOT_BLANK)
]


def _json_integer(value: Any) -> Any:
    # JSON Schema's `integer` is any number without a fraction, `2.0` included, so only
    # strings and booleans are refused before the usual integer check (which refuses 2.5).
    if isinstance(value, str | bool):
        raise PydanticKnownError("int_type")
    return value


# Numbers in request bodies are JSON numbers: `"1"`, `"1.0"` and `true` are refused, not
# coerced, and so are NaN and ±Infinity (Python's json module parses those literals). An
# integer is still a valid float (`"temperature": 1`), and `2.0` a valid integer.
Temperature = Annotated[float, Strict(), Field(ge=0, le=2, allow_inf_nan=False)]
Probability = Annotated[float, Strict(), Field(ge=0, le=1, allow_inf_nan=False)]
TokenCount = Annotated[int, Field(ge=1, le=1_000_000), BeforeValidator(_json_integer)]
# An integer as JSON Schema has it (see above), without bounds of its own.
JsonInteger = Annotated[int, BeforeValidator(_json_integer)]
