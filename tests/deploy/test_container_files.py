"""The Docker files agree with the repository: no Docker engine needed, only the files.

A compose file or Dockerfile that names a missing path, an undefined service or an
undocumented variable fails only at `docker compose up`; these tests fail first.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from api.routes import health
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILES = {"api": ROOT / "Dockerfile.api", "worker": ROOT / "Dockerfile.worker"}
FIRST_PARTY = {"api", "worker", "shared", "scripts", "migrations", "tests"}
BASE_IMAGE = "python:3.13-slim"
# `${NAME}`, `${NAME:-default}`, `${NAME?error}`, ...; `$$` is a literal dollar sign.
INTERPOLATION = re.compile(r"\$\$|\$\{(?P<braced>[^}]*)\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")
BRACED = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-+?])?(?P<rest>.*)", re.DOTALL)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args_of(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def parse_dockerfile(path: Path) -> list[Stage]:
    """Instructions per stage, continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, f"{path.name}: dangling line continuation"
    stages: list[Stage] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif keyword != "ARG" or stages:
            assert stages, f"{path.name}: {keyword} before the first FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


def exec_form(args: str) -> list[str] | None:
    """The JSON array of an exec-form instruction, or None for the shell form."""
    try:
        value = json.loads(args)
    except ValueError:
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return None


def copy_sources(args: str) -> tuple[list[str], bool]:
    """The source paths of a COPY/ADD and whether they come from another stage."""
    words = exec_form(args) or shlex.split(args)
    flags = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    return paths[:-1], any(f.startswith("--from=") for f in flags)


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and line[0] != "#"]


def strings_in(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings_in(key)
            yield from strings_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings_in(item)


def first_party_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & FIRST_PARTY


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


@pytest.fixture(scope="module")
def app_env(compose: dict[str, Any]) -> dict[str, str]:
    return {key: str(value) for key, value in compose["x-app-env"].items()}


def test_every_build_names_an_existing_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    builds = {name: svc["build"] for name, svc in services.items() if "build" in svc}
    assert set(builds) == {"migrate", "api", "worker"}
    for name, build in builds.items():
        context = ROOT / build["context"]
        assert context.is_dir(), name
        assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']}"
    assert builds["api"] == builds["migrate"]
    assert builds["api"]["dockerfile"] == "Dockerfile.api"
    assert builds["worker"]["dockerfile"] == "Dockerfile.worker"


def test_every_dependency_is_a_defined_service(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        for dependency in svc.get("depends_on", []):
            assert dependency in services, f"{name} depends on unknown {dependency}"


def test_the_api_and_worker_wait_for_migrations_and_redis(
    services: dict[str, dict[str, Any]],
) -> None:
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["python", "scripts/prestart.py"]
    assert (ROOT / "scripts" / "prestart.py").is_file()
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name


def test_every_variable_is_documented_or_has_a_default(compose: dict[str, Any]) -> None:
    env_example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", env_example, re.MULTILINE))
    undocumented = set()
    for text in strings_in(compose):
        for match in INTERPOLATION.finditer(text):
            if match.group(0) == "$$":
                continue
            if match.group("bare"):
                name, op = match.group("bare"), None
            else:
                parts = BRACED.fullmatch(match.group("braced"))
                assert parts, f"unparsable interpolation {match.group(0)!r}"
                name, op = parts.group("name"), parts.group("op")
            if name not in documented and op not in {"-", ":-", "+", ":+"}:
                undocumented.add(name)
    assert not undocumented, f"neither in .env.example nor defaulted: {sorted(undocumented)}"


def test_app_env_names_real_settings_with_matching_defaults(app_env: dict[str, str]) -> None:
    assert set(app_env) <= set(Settings.model_fields), "x-app-env names an unknown setting"
    defaults = {}
    for name, value in app_env.items():
        match = re.fullmatch(r"\$\{(?P<var>\w+):-(?P<default>[^}]*)\}", value)
        # An empty value is ignored by the settings (env_ignore_empty): the code default wins.
        if match and match.group("var") == name and match.group("default"):
            defaults[name] = match.group("default")
    # model_validate skips the environment and .env: only the compose defaults count.
    from_compose = Settings.model_validate(defaults)
    for name in defaults:
        assert getattr(from_compose, name) == Settings.model_fields[name].default, name


def test_app_env_points_at_the_compose_services(
    app_env: dict[str, str], services: dict[str, dict[str, Any]]
) -> None:
    assert app_env["POSTGRES_HOSTNAME"] in services
    assert app_env["POSTGRES_PORT"] == "5432"
    for key in ("REDIS_URL", "OLLAMA_BASE_URL"):
        assert urlsplit(app_env[key]).hostname in services, key
    assert "DATABASE_URL" not in app_env, "a DATABASE_URL from .env would point at localhost"
    assert app_env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "${STACK_OTLP_ENDPOINT:-}"


def test_worker_scales(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker


def test_worker_stop_grace_outlasts_its_shutdown_grace(
    services: dict[str, dict[str, Any]], app_env: dict[str, str]
) -> None:
    period = services["worker"]["stop_grace_period"]
    assert re.fullmatch(r"\d+s", period), period
    default = re.fullmatch(
        r"\$\{WORKER_SHUTDOWN_GRACE_SECONDS:-(\d+)\}", app_env["WORKER_SHUTDOWN_GRACE_SECONDS"]
    )
    assert default
    assert int(default.group(1)) == Settings.model_fields["WORKER_SHUTDOWN_GRACE_SECONDS"].default
    assert int(period[:-1]) > int(default.group(1))


@pytest.mark.parametrize("name", ["postgres", "redis", "api", "worker", "ollama"])
def test_long_running_services_have_healthchecks(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    check = services[name].get("healthcheck", {})
    assert not check.get("disable"), name
    assert check.get("test"), name


def test_tool_and_observability_services_stay_out_of_plain_up(
    services: dict[str, dict[str, Any]],
) -> None:
    assert services["ollama-pull"]["profiles"] == ["tools"]
    assert services["ollama-pull"]["environment"]["OLLAMA_HOST"] == "ollama:11434"
    assert services["jaeger"]["profiles"] == ["obs"]
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"


def test_makefile_names_only_defined_services_and_profiles(
    services: dict[str, dict[str, Any]],
) -> None:
    profiles = {p for svc in services.values() for p in svc.get("profiles", [])}
    subcommands = {"up", "stop", "down", "run", "exec", "logs", "pull", "build", "config"}
    for line in (ROOT / "Makefile").read_text().splitlines():
        if "$(COMPOSE)" not in line:
            continue
        words = line.split("$(COMPOSE)", 1)[1].split()
        for flag, value in pairwise(words):
            if flag == "--profile":
                assert value in profiles, line
        verbs = [i for i, word in enumerate(words) if word in subcommands]
        assert verbs, line
        targets = [w for w in words[verbs[0] + 1 :] if not w.startswith("-")]
        assert set(targets) <= set(services), line


@pytest.mark.parametrize("process", sorted(DOCKERFILES))
def test_dockerfile_builds_from_the_hashed_lock(process: str) -> None:
    stages = parse_dockerfile(DOCKERFILES[process])
    assert len(stages) >= 2, "multi-stage: a builder and a runtime"
    assert all(s.base == BASE_IMAGE for s in stages)
    installs = [r for s in stages for r in s.args_of("RUN") if "pip install" in r]
    assert installs
    for run in installs:
        assert "--require-hashes" in run
        assert "-r /tmp/requirements.lock" in run
    runtime = stages[-1]
    assert not any("pip install" in r for r in runtime.args_of("RUN"))
    venv_copies = [c for c in runtime.args_of("COPY") if "/opt/venv" in c]
    assert venv_copies == [f"--from={stages[0].name} /opt/venv /opt/venv"]


@pytest.mark.parametrize("process", sorted(DOCKERFILES))
def test_dockerfile_copies_existing_paths_not_ignored(process: str) -> None:
    ignored = dockerignore_patterns()
    for stage in parse_dockerfile(DOCKERFILES[process]):
        for args in stage.args_of("COPY") + stage.args_of("ADD"):
            sources, from_stage = copy_sources(args)
            if from_stage:
                continue
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert source.rstrip("/") not in ignored, f"COPY {source}: in .dockerignore"


@pytest.mark.parametrize(
    ("process", "needed"),
    [
        ("api", {"api", "shared", "migrations", "scripts/prestart.py", "alembic.ini"}),
        ("worker", {"worker", "shared"}),
    ],
)
def test_runtime_image_holds_exactly_the_code_its_process_imports(
    process: str, needed: set[str]
) -> None:
    runtime = parse_dockerfile(DOCKERFILES[process])[-1]
    copied: set[str] = set()
    for args in runtime.args_of("COPY"):
        sources, from_stage = copy_sources(args)
        if not from_stage:
            copied.update(source.rstrip("/") for source in sources)
    assert copied == needed
    roots = {source.split("/")[0] for source in copied}
    for source in copied:
        top = source.split("/")[0]
        if top not in FIRST_PARTY:
            continue
        paths = [ROOT / source] if source.endswith(".py") else (ROOT / source).rglob("*.py")
        for path in paths:
            missing = first_party_imports(path) - roots
            assert not missing, f"{path.relative_to(ROOT)} imports {missing}, not in the image"


@pytest.mark.parametrize("process", sorted(DOCKERFILES))
def test_runtime_stage_is_non_root_with_healthcheck_and_exec_form_cmd(process: str) -> None:
    runtime = parse_dockerfile(DOCKERFILES[process])[-1]
    users = runtime.args_of("USER")
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    assert user.isdigit(), "a numeric uid lets orchestrators verify non-root"
    (healthcheck,) = runtime.args_of("HEALTHCHECK")
    assert exec_form(healthcheck.split(" CMD ", 1)[1]), "HEALTHCHECK CMD in exec form"
    (cmd,) = runtime.args_of("CMD")
    assert exec_form(cmd), "CMD in exec form, so the process gets SIGTERM as PID 1"
    assert runtime.args_of("STOPSIGNAL") == ["SIGTERM"]
    assert runtime.args_of("EXPOSE")
    env = " ".join(runtime.args_of("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env


def uvicorn_target(words: list[str]) -> list[str]:
    """The words naming the app in a uvicorn command line: `[--factory] module:attr`."""
    start = words.index("uvicorn") + 1
    return words[start : words.index("--host")]


def test_api_image_serves_the_app_the_makefile_serves() -> None:
    runtime = parse_dockerfile(DOCKERFILES["api"])[-1]
    cmd = exec_form(runtime.args_of("CMD")[0])
    assert cmd
    assert cmd[:3] == ["python", "-m", "uvicorn"]
    target = uvicorn_target(cmd)
    makefile = (ROOT / "Makefile").read_text()
    run_api = re.search(r"^run_api:.*\n\t(?P<recipe>.*)$", makefile, re.MULTILINE)
    assert run_api, "Makefile has no run_api target"
    assert uvicorn_target(run_api.group("recipe").split()) == target
    module, attr = target[-1].split(":")
    source = ROOT / (module.replace(".", "/") + ".py")
    tree = ast.parse(source.read_text())
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)} | {
        t.id
        for n in tree.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    assert attr in defined, f"{source.name} defines no {attr}"
    port = cmd[cmd.index("--port") + 1]
    assert runtime.args_of("EXPOSE") == [port]
    healthcheck = runtime.args_of("HEALTHCHECK")[0]
    assert f"http://127.0.0.1:{port}/health/live" in healthcheck
    assert "/health/live" in {getattr(route, "path", None) for route in health.router.routes}


def test_worker_image_commands_match_the_worker() -> None:
    runtime = parse_dockerfile(DOCKERFILES["worker"])[-1]
    assert exec_form(runtime.args_of("CMD")[0]) == ["python", "-m", "worker"]
    healthcheck = runtime.args_of("HEALTHCHECK")[0]
    assert exec_form(healthcheck.split(" CMD ", 1)[1]) == ["python", "-m", "worker", "--check"]
    assert (ROOT / "worker" / "__main__.py").is_file()
    metrics_port = Settings.model_fields["WORKER_METRICS_PORT"].default
    assert runtime.args_of("EXPOSE") == [str(metrics_port)]


def test_dockerignore_keeps_local_state_out_of_the_context() -> None:
    ignored = dockerignore_patterns()
    for entry in (".venv", ".env", ".git", "tests", "docs", "**/__pycache__"):
        assert entry in ignored, entry
