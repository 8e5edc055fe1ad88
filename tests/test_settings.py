"""Settings: every one documented, bad values named clearly, timeouts that nest."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.settings import Settings, SettingsError, load_settings

ENV_EXAMPLE = Path(__file__).resolve().parent.parent / ".env.example"


def test_every_setting_is_documented_with_a_comment() -> None:
    lines = ENV_EXAMPLE.read_text().splitlines()
    documented = {}
    for index, line in enumerate(lines):
        match = re.match(r"^([A-Z][A-Z0-9_]*)=", line)
        if match:
            documented[match.group(1)] = index
    missing = set(Settings.model_fields) - set(documented)
    assert not missing, f"not in .env.example: {sorted(missing)}"
    for name, index in documented.items():
        above = lines[index - 1] if index else ""
        assert above.startswith("#") or re.match(r"^[A-Z_]+=", above), name


def test_a_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_PORT", "not-a-port")
    monkeypatch.setenv("LOG_FORMAT", "XML")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert "POSTGRES_PORT" in str(error.value)
    assert "LOG_FORMAT" in str(error.value)


def test_timeouts_must_nest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_TIMEOUT_SECONDS", "200")
    with pytest.raises(SettingsError, match="OLLAMA_TIMEOUT_SECONDS must be smaller"):
        load_settings()


def test_database_url_overrides_the_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db.internal:6543/app")
    url = load_settings().database_url
    assert url.drivername == "postgresql+asyncpg"
    assert (url.host, url.port, url.database, url.username) == ("db.internal", 6543, "app", "u")


def test_the_parts_build_the_url_and_empty_values_are_ignored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "")
    monkeypatch.setenv("OPENAI_BASE_URL", "")
    monkeypatch.setenv("POSTGRES_HOSTNAME", "pg")
    monkeypatch.setenv("POSTGRES_DB", "seed_db")
    settings = load_settings()
    assert settings.OPENAI_BASE_URL is None
    assert (
        settings.database_url.render_as_string() == "postgresql+asyncpg://postgres@pg:5432/seed_db"
    )
