"""The benchmark's own logic (`bench/`), without running a benchmark: no load, no clock."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from bench import floor_app, profile, report
from bench.load import LoadResult, percentile
from shared.schemas.conversations import ConversationRead


def test_the_floor_answers_with_the_api_columns() -> None:
    columns = [c.strip() for c in floor_app.COLUMNS.split(",")]
    assert columns == list(ConversationRead.model_fields)


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([7.0], 99) == 7
    assert math.isnan(percentile([], 50))


def test_verdicts_say_by_how_much_a_target_is_missed() -> None:
    assert report.at_least(0.6, 0.6) == "**met**"
    assert report.at_least(0.3, 0.6, "x") == "**missed** by 0.30x (50 % of the target)"
    assert report.at_most(15.0, 15) == "**met**"
    assert report.at_most(45.0, 15, " ms") == f"**missed** by 30.0 ms (3.0{report.X} the target)"
    assert report.at_most(math.nan, 15) == "not measured"


def _load(rps: float) -> LoadResult:
    return LoadResult(round(rps * 10), 0, 10.0, 1.0, 2.0, 3.0, 0.1)


def test_ratios_pair_the_api_with_the_floor_at_the_same_concurrency() -> None:
    results = report.Results("make bench", "now", "abc", "wrk", [], 0.0)
    for app, key, connections, rps in [
        ("floor", "none", 32, 1000),
        ("floor", "none", 1, 500),
        ("API", "admin", 32, 250),
        ("API", "admin", 1, 50),
    ]:
        row = report.HttpRow(app, report.POST, key, connections, _load(rps), 1.0, 100.0)
        results.http.append(row)
    assert report.ratio_to_floor(results, report.POST, "admin", 32) == 0.25
    assert report.ratio_to_floor(results, report.POST, "admin", 1) == 0.1
    assert math.isnan(report.ratio_to_floor(results, report.GET, "admin", 32))


def test_a_profile_sums_samples_by_library_and_function(tmp_path: Path) -> None:
    site = "/x/lib/python3.11/site-packages"
    api = f"{profile.ROOT}/api/routes/conversations.py"
    raw = tmp_path / "p.raw"
    raw.write_text(
        f"run (/x/lib/python3.11/asyncio/runners.py);create ({api});"
        f"execute ({site}/sqlalchemy/orm/session.py) 3\n"
        f"run (/x/lib/python3.11/asyncio/runners.py);create ({api}) 1\n"
    )
    found = profile.summarise("api", raw)
    assert found is not None
    assert found.samples == 4
    assert dict(found.on_stack) == {"asyncio": 100, "project: api/": 100, "SQLAlchemy": 75}
    assert dict(found.own) == {"SQLAlchemy": 75, "project: api/": 25}
    assert found.functions[0] == ("execute (sqlalchemy/orm/session.py)", 75)
    assert found.project == [("create (api/routes/conversations.py)", 100)]


def test_no_profile_without_samples(tmp_path: Path) -> None:
    assert profile.summarise("api", tmp_path / "missing.raw") is None
    (tmp_path / "empty.raw").write_text("")
    assert profile.summarise("api", tmp_path / "empty.raw") is None


def test_a_throughput_counts_completed_conversations_only() -> None:
    t = report.Throughput(
        delay_seconds=1,
        workers=1,
        max_jobs=100,
        queued=300,
        statuses=Counter({"completed": 290, "failed": 10}),
        llm_calls=300,
        drain_seconds=5.8,
        created_seconds=8.0,
        first_start_ms=10,
        wait_after_release_ms=[10.0],
        worker_cpu_seconds=2.9,
        worker_cpu_percent=50,
        machine_percent=100,
        rss_mb=[(90.0, 95.0)],
        outcomes=Counter(),
    )
    assert t.rate == 50
    assert t.cpu_ms_per_job == 10


def test_a_run_keeps_the_streaming_section_written_by_hand(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        "# Benchmarks\n\n## Run\n\n- old\n\n"
        f"{report.STREAMING}\n\nfrom python -m bench.streaming\n\n"
        f"{report.READING}\n\n- by hand\n"
    )

    assert report.kept_section(doc, report.STREAMING) == [
        f"{report.STREAMING}\n\nfrom python -m bench.streaming"
    ]
    assert report.kept_section(tmp_path / "missing.md", report.STREAMING) == []
