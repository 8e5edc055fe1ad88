"""Settings: every one documented, bad values named clearly, timeouts that nest."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.settings import (
    ADMIN_KEY_MIN_LENGTH,
    Environment,
    Settings,
    SettingsError,
    admin_key_problem,
    admin_key_setting_problem,
    generate_admin_key,
    load_settings,
    parse_host_ports,
    parse_rate_limit,
    timeouts_problem,
)
from tests.support.auth import ADMIN_KEY

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
    monkeypatch.setenv("LLM_TIMEOUT_SECONDS", "200")
    with pytest.raises(SettingsError, match="LLM_TIMEOUT_SECONDS must be smaller"):
        load_settings()


def _timeouts(llm: float, job: float, lease: float) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        LLM_TIMEOUT_SECONDS=llm,
        WORKER_JOB_TIMEOUT_SECONDS=job,
        WORKER_LEASE_SECONDS=lease,
    )


@pytest.mark.parametrize(
    ("llm", "job", "lease", "message"),
    [
        (10, 10, 30, "LLM_TIMEOUT_SECONDS must be smaller than WORKER_JOB_TIMEOUT_SECONDS"),
        (11, 10, 30, "LLM_TIMEOUT_SECONDS must be smaller than WORKER_JOB_TIMEOUT_SECONDS"),
        (5, 30, 30, "WORKER_JOB_TIMEOUT_SECONDS must be smaller than WORKER_LEASE_SECONDS"),
        (5, 31, 30, "WORKER_JOB_TIMEOUT_SECONDS must be smaller than WORKER_LEASE_SECONDS"),
        # Both broken: the first inequality is named first.
        (30, 30, 30, "LLM_TIMEOUT_SECONDS must be smaller than WORKER_JOB_TIMEOUT_SECONDS"),
    ],
    ids=["llm-equals-job", "llm-above-job", "job-equals-lease", "job-above-lease", "all-equal"],
)
def test_each_timeout_must_be_strictly_below_the_next(
    llm: float, job: float, lease: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _timeouts(llm, job, lease)


def test_the_timeout_problems_are_said_in_full() -> None:
    assert timeouts_problem(10, 10, 30) == (
        "LLM_TIMEOUT_SECONDS must be smaller than WORKER_JOB_TIMEOUT_SECONDS"
    )
    assert timeouts_problem(5, 30, 30) == (
        "WORKER_JOB_TIMEOUT_SECONDS must be smaller than WORKER_LEASE_SECONDS"
    )
    assert timeouts_problem(5, 10, 30) is None


def test_timeouts_just_below_each_other_are_accepted() -> None:
    settings = _timeouts(9.999, 10, 10.001)
    assert (
        settings.LLM_TIMEOUT_SECONDS,
        settings.WORKER_JOB_TIMEOUT_SECONDS,
        settings.WORKER_LEASE_SECONDS,
    ) == (9.999, 10, 10.001)


def test_the_default_timeouts_nest() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (
        settings.LLM_TIMEOUT_SECONDS
        < settings.WORKER_JOB_TIMEOUT_SECONDS
        < settings.WORKER_LEASE_SECONDS
    )


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


def test_an_admin_key_is_required_outside_dev(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "PRD")
    with pytest.raises(SettingsError, match="ADMIN_API_KEY is required"):
        load_settings()
    monkeypatch.setenv("ENVIRONMENT", "DEV")
    assert load_settings().ADMIN_API_KEY is None


def test_a_missing_admin_key_outside_dev_says_how_to_make_one() -> None:
    assert admin_key_setting_problem(None, Environment.PRD) == (
        "ADMIN_API_KEY is required outside ENVIRONMENT=DEV (make one with: "
        "python -c 'import secrets; print(\"aek_admin_\" + secrets.token_urlsafe(32))')"
    )
    assert admin_key_setting_problem(None, Environment.DEV) is None
    assert admin_key_setting_problem("a" * 40, Environment.DEV) == (
        "ADMIN_API_KEY must be at least 32 random characters"
    )


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("aek_" + "k3Y" * 5, "at least 32"),
        ("a" * 40, "at least 32"),
        ("changeme-changeme-changeme-changeme-1234", "placeholder"),
        ("my-Secret-admin-key-0123456789-abcdefghij", "placeholder"),
        ("aek_EXAMPLE_0123456789abcdefghijklmnopqrstuv", "placeholder"),
    ],
)
def test_a_short_or_placeholder_admin_key_is_refused(
    monkeypatch: pytest.MonkeyPatch, key: str, reason: str
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "PRD")
    monkeypatch.setenv("ADMIN_API_KEY", key)
    with pytest.raises(SettingsError, match=reason) as error:
        load_settings()
    assert key not in str(error.value)


def test_a_random_admin_key_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "PRD")
    monkeypatch.setenv("ADMIN_API_KEY", ADMIN_KEY)
    settings = load_settings()
    assert settings.ADMIN_API_KEY is not None
    assert settings.ADMIN_API_KEY.get_secret_value() == ADMIN_KEY
    assert ADMIN_KEY not in repr(settings)


@pytest.mark.parametrize(
    ("environment", "openapi", "metrics"),
    [("DEV", True, "public"), ("HML", True, "admin"), ("PRD", False, "admin")],
)
def test_docs_and_metrics_exposure_follow_the_environment(
    monkeypatch: pytest.MonkeyPatch, environment: str, openapi: bool, metrics: str
) -> None:
    monkeypatch.setenv("ENVIRONMENT", environment)
    monkeypatch.setenv("ADMIN_API_KEY", ADMIN_KEY)
    settings = load_settings()
    assert settings.openapi_enabled is openapi
    assert settings.metrics_access.value == metrics


@pytest.mark.parametrize("value", ["120/minute", "10/second", "5 per 2 hours", "off"])
def test_rate_limits_in_the_limits_notation_are_accepted(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SUBMIT_RATE_LIMIT", value)
    assert value == load_settings().SUBMIT_RATE_LIMIT


@pytest.mark.parametrize("value", ["off", "OFF", "none", "None", "", "  "])
def test_a_rate_limit_can_be_turned_off(value: str) -> None:
    assert parse_rate_limit(value) is None


def test_host_port_lists_take_every_valid_port_and_the_last_colon() -> None:
    assert parse_host_ports("a:1, ,b:65535,[::1]:26379") == [
        ("a", 1),
        ("b", 65535),
        ("[::1]", 26379),
    ]
    for bad in ("a:65536", "a:-1", "a:1,b"):
        with pytest.raises(ValueError, match=r"^expected host:port") as error:
            parse_host_ports(bad)
        assert str(error.value) == f"expected host:port, got {bad.split(',')[-1]!r}"


def test_a_malformed_rate_limit_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBMIT_RATE_LIMIT", "lots")
    with pytest.raises(SettingsError, match=r"SUBMIT_RATE_LIMIT: .*rate limit 'lots'"):
        load_settings()


def test_a_generated_admin_key_passes_the_checks_and_is_fresh() -> None:
    keys = {generate_admin_key() for _ in range(5)}
    assert len(keys) == 5
    for key in keys:
        assert key.startswith("aek_admin_")
        # 32 random bytes, base64url: 43 characters after the prefix.
        assert len(key) == len("aek_admin_") + 43
        assert admin_key_problem(key) is None


def test_admin_key_checks_at_their_bounds() -> None:
    distinct = "abcdefgh"  # the fewest distinct characters allowed
    assert admin_key_problem((distinct * 4)[:ADMIN_KEY_MIN_LENGTH]) is None
    assert admin_key_problem((distinct * 4)[: ADMIN_KEY_MIN_LENGTH - 1]) == (
        "must be at least 32 random characters"
    )
    assert admin_key_problem("abcdefg" * 5) == "must be at least 32 random characters"
    assert admin_key_problem("abcdefgh" * 4 + "TODO") == (
        "looks like a placeholder; generate a random one"
    )


def test_every_problem_is_named_in_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_PORT", "0")
    monkeypatch.setenv("WORKER_LEASE_SECONDS", "1")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert str(error.value) == (
        "invalid configuration: POSTGRES_PORT: Input should be greater than or equal to 1"
    )
    monkeypatch.delenv("POSTGRES_PORT")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert str(error.value) == (
        "invalid configuration: settings: Value error, "
        "WORKER_JOB_TIMEOUT_SECONDS must be smaller than WORKER_LEASE_SECONDS"
    )
    assert error.value.__cause__ is None


def test_several_problems_are_joined_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_PORT", "0")
    monkeypatch.setenv("LOG_FORMAT", "XML")
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert str(error.value) == (
        "invalid configuration: LOG_FORMAT: Input should be 'JSON' or 'HUMAN'; "
        "POSTGRES_PORT: Input should be greater than or equal to 1"
    )


def test_the_old_llm_timeout_name_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_TIMEOUT_SECONDS", "42")
    assert load_settings().LLM_TIMEOUT_SECONDS == 42
    monkeypatch.setenv("LLM_TIMEOUT_SECONDS", "43")
    assert load_settings().LLM_TIMEOUT_SECONDS == 43  # the new name wins
