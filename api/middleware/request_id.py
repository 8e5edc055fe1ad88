"""Request ids: accepted from the caller when sane, made here otherwise (the edge layer binds
it to every log line of the request and echoes it in `X-Request-ID`)."""

from __future__ import annotations

import random
import re

from starlette.types import Scope

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")

# The id ends up in logs and response headers; anything else is a possible injection vector.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def request_id_for(scope: Scope) -> str:
    """The caller's `X-Request-ID` if it is sane, else a new one (32 hex digits, random like
    a trace id: unique, not secret, so no system call for entropy on every request)."""
    for key, value in scope["headers"]:
        if key.lower() == REQUEST_ID_KEY:
            candidate: str = value.decode("latin-1")
            if _SANE_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return f"{random.getrandbits(128):032x}"
