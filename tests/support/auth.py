"""The admin key every test process and client of a run shares."""

from __future__ import annotations

from shared.settings import generate_admin_key

# Random per run; passes the settings' checks (long enough, no placeholder words).
ADMIN_KEY = generate_admin_key()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


ADMIN_HEADERS = bearer(ADMIN_KEY)
