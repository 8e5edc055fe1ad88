"""docs/routes.md is what `scripts/routes_doc.py` records from the app, ids and times aside.

Regenerate with `make routes_doc` when these fail.
"""

from __future__ import annotations

import difflib
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scripts import routes_doc

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "routes.md"
HINT = "docs/routes.md is out of date: run `make routes_doc`"

# What differs from one recording to the next, and what it is replaced with.
VOLATILE = [
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<uuid>"),
    (re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?"), "<time>"),
    # Request ids and trace ids.
    (re.compile(r"\b[0-9a-f]{32}\b"), "<hex>"),
    (
        re.compile(
            r'"(latency_ms|queue_wait_ms|oldest_pending_age_seconds|input_tokens|output_tokens'
            r'|total_tokens)": ?[-+.\deE]+'
        ),
        r'"\1": <n>',
    ),
    (re.compile(r"^retry-after: \d+$", re.MULTILINE), "retry-after: <s>"),
    # The visible start of a user key (`prefix`), random per key.
    (re.compile(r"\baek_[A-Za-z0-9_-]{8}(?![A-Za-z0-9_-])"), "aek_<prefix>"),
]


def normalise(text: str) -> str:
    for pattern, replacement in VOLATILE:
        text = pattern.sub(replacement, text)
    return text


def test_every_operation_of_the_app_has_one_section_and_no_other() -> None:
    documented = routes_doc.documented_operations(DOC.read_text())
    operations = routes_doc.app_operations()
    assert sorted(operations - set(documented)) == [], f"no section for these; {HINT}"
    assert sorted(set(documented) - operations) == [], f"the app has no such route; {HINT}"
    assert len(documented) == len(set(documented)), "an operation has two sections"


def test_no_key_is_written_down() -> None:
    text = DOC.read_text()
    assert set(re.findall(r'"key": "([^"]*)"', text)) == {routes_doc.MASKED_KEY}
    presented = re.findall(r"-H \"Authorization: Bearer ([^\"]*)\"", text)
    assert presented, "the examples show no key at all"
    assert [k for k in presented if not re.fullmatch(r"\$[A-Z_]+", k)] == []
    assert re.search(r"aek_[A-Za-z0-9_-]{20,}", text) is None


def test_the_document_is_what_the_app_answers_now() -> None:
    # In a thread of its own: the script runs its own event loops, apart from pytest's.
    with ThreadPoolExecutor(max_workers=1) as pool:
        fresh, _ = pool.submit(routes_doc.generate).result(timeout=60)
    expected, actual = normalise(fresh), normalise(DOC.read_text())
    if actual != expected:
        diff = "\n".join(
            difflib.unified_diff(
                actual.splitlines(),
                expected.splitlines(),
                "docs/routes.md",
                "recorded now",
                lineterm="",
                n=2,
            )
        )
        raise AssertionError(f"{HINT}\n{diff[:6000]}")
