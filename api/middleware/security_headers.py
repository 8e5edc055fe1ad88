"""Headers every response carries so browsers and caches treat it as private API data.

From OWASP's REST security guidance: nothing is cached on the way (answers are per key), a
body is never sniffed into another content type, and no page may frame this service. HSTS
belongs to the TLS terminator in front of the API, which knows the scheme clients use.
"""

from __future__ import annotations

from collections.abc import Iterable

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"cache-control", b"no-store"),
)
_NAMES = frozenset(name for name, _ in SECURITY_HEADERS)


def with_edge_headers(
    headers: Iterable[tuple[bytes, bytes]], request_id: tuple[bytes, bytes]
) -> list[tuple[bytes, bytes]]:
    """A response's headers with exactly one request id (ours) and every security header a
    route did not set itself."""
    merged = []
    present = set()
    request_id_key = request_id[0]
    for name, value in headers:
        lower = name.lower()
        if lower == request_id_key:
            continue
        if lower in _NAMES:
            present.add(lower)
        merged.append((name, value))
    merged.append(request_id)
    merged.extend(pair for pair in SECURITY_HEADERS if pair[0] not in present)
    return merged
