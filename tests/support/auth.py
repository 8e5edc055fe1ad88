"""The admin key every test process and client of a run shares."""

from __future__ import annotations

import secrets

# Random per run, long enough for the settings check, free of placeholder words.
ADMIN_KEY = "aek_admin_" + secrets.token_urlsafe(32)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


ADMIN_HEADERS = bearer(ADMIN_KEY)
