"""deploy/release.sh orders a release: migration Job first, the rollout only once it succeeded.

A stand-in `kubectl` first on PATH records every call and answers as told; `kustomize` goes to
the real one, so the script renders the real overlay. No cluster is contacted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "release.sh"
OVERLAY = ROOT / "deploy" / "overlays" / "production"

FAKE_KUBECTL = """#!/usr/bin/env bash
{ printf '%s\\037' "$@"; printf '\\n'; } >> "$KUBECTL_LOG"
case "$1" in
  kustomize) exec "$REAL_KUBECTL" "$@" ;;
  -n) [[ "$3" == get ]] && printf '%s' "$JOB_CONDITIONS" ;;
esac
exit 0
"""


def run_release(tmp_path: Path, *, job_conditions: str) -> tuple[int, list[list[str]]]:
    real = shutil.which("kubectl")
    if real is None:
        pytest.fail("kubectl (with kustomize built in) renders the manifests; install it")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "kubectl"
    fake.write_text(FAKE_KUBECTL)
    fake.chmod(0o755)
    log = tmp_path / "calls"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "KUBECTL_LOG": str(log),
        "REAL_KUBECTL": real,
        "JOB_CONDITIONS": job_conditions,
        # A Job in neither state fails the release at once instead of after 16 minutes.
        "MIGRATE_TIMEOUT_SECONDS": "0",
    }
    result = subprocess.run(
        ["bash", str(SCRIPT), str(OVERLAY)],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    # One call per line, its arguments separated by the unit separator (octal 037).
    calls = [line.rstrip("\x1f").split("\x1f") for line in log.read_text().splitlines()]
    return result.returncode, calls


def index_of(calls: list[list[str]], *words: str) -> int:
    matches = [i for i, call in enumerate(calls) if all(w in call for w in words)]
    assert matches, f"no call with {words}: {calls}"
    return matches[0]


def test_release_migrates_before_it_rolls_out(tmp_path: Path) -> None:
    code, calls = run_release(tmp_path, job_conditions="SuccessCriteriaMet Complete ")
    assert code == 0, calls
    render = index_of(calls, "kustomize")
    delete = index_of(calls, "delete", "job", "ai-eng-api-migrate")
    migrate = index_of(calls, "apply", "app.kubernetes.io/component in (config,migrate)")
    wait = index_of(calls, "get", "job/ai-eng-api-migrate")
    everything = [i for i, c in enumerate(calls) if "apply" in c and "-l" not in c]
    rollouts = [i for i, c in enumerate(calls) if c[2:4] == ["rollout", "status"]]
    assert render < delete < migrate < wait
    assert len(everything) == 1
    assert wait < everything[0]
    assert len(rollouts) == 2
    assert all(everything[0] < i for i in rollouts)
    # The namespace is the overlay's, read from the rendered objects.
    assert all(c[1] == "ai-eng-api" for c in calls if c[0] == "-n")


def test_a_failed_migration_applies_nothing_else(tmp_path: Path) -> None:
    code, calls = run_release(tmp_path, job_conditions="FailureTarget Failed ")
    assert code == 1
    applies = [c for c in calls if "apply" in c]
    assert len(applies) == 1
    assert "app.kubernetes.io/component in (config,migrate)" in applies[0]
    assert not [c for c in calls if "rollout" in c]
    assert ["-n", "ai-eng-api", "logs", "job/ai-eng-api-migrate", "--tail=50"] in calls
