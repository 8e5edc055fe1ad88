"""The Kubernetes manifests (deploy/) agree with Kubernetes and with the code, offline.

Each overlay is rendered with `kubectl kustomize` (kustomize is built into kubectl; no
cluster is contacted) and every object is validated against the Kubernetes JSON schemas that
`kubernetes-validate` ships. KEDA's ScaledObject has no schema there: its required fields are
checked here. The rest holds the manifests to the code: every variable is a setting and the
settings validate, ports and probe paths are the ones the processes serve, the grace periods
nest, the pods run as the images' non-root user on a read-only root, the resources cover the
measured memory.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version
from pydantic import AliasChoices, SecretStr

from api.long_poll import MAX_WAIT_SECONDS
from api.routes import health
from shared.metrics import create_metrics
from shared.settings import Settings, generate_admin_key
from tests.deploy.test_container_files import DOCKERFILES, exec_form, parse_dockerfile

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("dev", "production")
# The oldest Kubernetes the manifests are meant for, and the newest whose schemas are shipped.
KUBERNETES_VERSIONS = ("1.29", latest_version())
# Custom resources: no schema in kubernetes-validate; each is checked by a test of its own.
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject")}
API, WORKER, MIGRATE = "ai-eng-api-api", "ai-eng-api-worker", "ai-eng-api-migrate"
CONFIG_MAP, SECRET = "ai-eng-api-config", "ai-eng-api-secrets"
PRODUCTION_SECRET_KEYS = DEPLOY / "overlays" / "production" / "secrets.env.example"
# Settings that no manifest sets, and why.
UNSET_SETTINGS = {
    # DATABASE_URL (a Secret) supersedes the five parts.
    "POSTGRES_HOSTNAME": "DATABASE_URL",
    "POSTGRES_PORT": "DATABASE_URL",
    "POSTGRES_USER": "DATABASE_URL",
    "POSTGRES_PASSWORD": "DATABASE_URL",
    "POSTGRES_DB": "DATABASE_URL",
    # Spans appended to a local file: for tests, not for a pod with a read-only root.
    "OTEL_TRACES_FILE": "tests only",
}
# Settings whose value is a credential, or may carry one (a URL with user:password).
SECRET_SETTINGS = {
    name for name, field in Settings.model_fields.items() if field.annotation == SecretStr | None
} | {"DATABASE_URL", "REDIS_URL", "POSTGRES_PASSWORD"}
DNS_PORT = 53


# --- rendering and lookups ------------------------------------------------------------------


def render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl (with kustomize built in) renders the manifests; install it")
    result = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


_RENDERED: dict[str, list[dict[str, Any]]] = {}


@pytest.fixture
def objects(overlay: str) -> list[dict[str, Any]]:
    if overlay not in _RENDERED:
        _RENDERED[overlay] = render(overlay)
    return _RENDERED[overlay]


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The object of `kind` named `name`, or generated from that name (kustomize's suffix)."""
    found = [
        obj
        for obj in objects
        if obj["kind"] == kind
        and re.fullmatch(rf"{name}(-[a-z0-9]{{10}})?", obj["metadata"]["name"])
    ]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_templates(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for obj in objects:
        if obj["kind"] in {"Deployment", "Job"}:
            yield obj["metadata"]["name"], obj["spec"]["template"]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod["spec"]
    result: list[dict[str, Any]] = spec["containers"] + spec.get("initContainers", [])
    return result


def only_container(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (container,) = find(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = container
    return result


def env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value
    return pairs


def config(objects: list[dict[str, Any]]) -> dict[str, str]:
    data: dict[str, str] = find(objects, "ConfigMap", CONFIG_MAP).get("data", {})
    return data


def secret_keys(objects: list[dict[str, Any]], overlay: str) -> set[str]:
    """The keys of the Secret: rendered (dev) or created by the operator (production)."""
    rendered = [o for o in objects if o["kind"] == "Secret"]
    if rendered:
        (secret,) = rendered
        return set(secret.get("data", {})) | set(secret.get("stringData", {}))
    assert overlay == "production", f"{overlay} renders no Secret"
    return set(env_file(PRODUCTION_SECRET_KEYS))


def setting_names() -> set[str]:
    """Every name the settings read: each field and each of its aliases."""
    names = set(Settings.model_fields)
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif isinstance(alias, AliasChoices):
            names.update(choice for choice in alias.choices if isinstance(choice, str))
    return names


def effective(objects: list[dict[str, Any]], name: str) -> Any:
    """A setting's value as the pods get it: the ConfigMap's, else the code's default."""
    value = config(objects).get(name, "")
    return value if value != "" else Settings.model_fields[name].default


def url_port(url: str, default: int) -> int:
    return urlsplit(url).port or default


# --- schemas --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schemas(
    objects: list[dict[str, Any]], version: str
) -> None:
    errors = []
    for obj in objects:
        kind = (obj["apiVersion"], obj["kind"])
        name = f"{obj['kind']} {obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            if kind not in CUSTOM_KINDS:
                errors.append(f"{name}: no schema for {kind} in Kubernetes {version}")
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{name}: {'.'.join(map(str, exc.path))}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_the_overlays_render_every_part(objects: list[dict[str, Any]], overlay: str) -> None:
    kinds = sorted(o["kind"] for o in objects)
    assert kinds.count("Deployment") == 2
    for kind, name in [
        ("Deployment", API),
        ("Deployment", WORKER),
        ("Service", "ai-eng-api"),
        ("HorizontalPodAutoscaler", API),
        ("ScaledObject", WORKER),
        ("Job", MIGRATE),
        ("PodDisruptionBudget", API),
        ("PodDisruptionBudget", WORKER),
        ("ConfigMap", CONFIG_MAP),
        ("NetworkPolicy", "ai-eng-api-default-deny"),
    ]:
        find(objects, kind, name)
    namespaces = {o["metadata"].get("namespace") for o in objects}
    assert len(namespaces) == 1
    assert None not in namespaces, f"{overlay}: every object in the overlay's namespace"


# --- KEDA -----------------------------------------------------------------------------------


def test_scaled_object_has_its_required_fields_and_scales_the_worker(
    objects: list[dict[str, Any]],
) -> None:
    scaled = find(objects, "ScaledObject", WORKER)
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    # Required by KEDA's CRD: scaleTargetRef.name, and triggers each with type and metadata
    # whose values are strings.
    target = spec["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert target.get("apiVersion", "apps/v1") == "apps/v1"
    worker = find(objects, "Deployment", target["name"])
    assert worker["metadata"]["name"] == WORKER
    assert spec["triggers"], "a ScaledObject needs at least one trigger"
    for trigger in spec["triggers"]:
        assert isinstance(trigger["type"], str)
        assert trigger["metadata"], trigger["type"]
        for key, value in trigger["metadata"].items():
            assert isinstance(value, str), f"{trigger['type']}.{key} must be a string"
    known = {"apiVersion", "kind", "metadata", "spec"}
    assert set(scaled) <= known
    assert set(spec) <= {
        "scaleTargetRef",
        "triggers",
        "minReplicaCount",
        "maxReplicaCount",
        "pollingInterval",
        "cooldownPeriod",
        "idleReplicaCount",
        "initialCooldownPeriod",
        "fallback",
        "advanced",
    }
    # The sweeper runs in the workers: never scaled to zero.
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["minReplicaCount"] <= spec["fallback"]["replicas"] <= spec["maxReplicaCount"]
    assert spec["fallback"]["failureThreshold"] >= 1
    # KEDA makes the worker's HPA itself; a second one on the same Deployment would fight it.
    hpa_targets = {
        o["spec"]["scaleTargetRef"]["name"]
        for o in objects
        if o["kind"] == "HorizontalPodAutoscaler"
    }
    assert WORKER not in hpa_targets


def test_scaled_object_targets_the_queue_depth_per_worker_slot(
    objects: list[dict[str, Any]],
) -> None:
    (trigger,) = find(objects, "ScaledObject", WORKER)["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger.get("metricType", "AverageValue") == "AverageValue"
    meta = trigger["metadata"]
    assert urlsplit(meta["serverAddress"]).scheme in {"http", "https"}
    # The gauge the API exports: ZCARD of the queue's sorted set.
    metric = re.fullmatch(r"max\((?P<metric>[a-z_]+)(\{[^}]*\})?\)", meta["query"])
    assert metric, meta["query"]
    exported = {m.name for m in create_metrics(process_metrics=False).registry.collect()}
    assert metric.group("metric") == "queue_depth"
    assert metric.group("metric") in exported
    # One replica per WORKER_MAX_JOBS jobs: each worker runs that many at once.
    assert int(meta["threshold"]) == int(effective(objects, "WORKER_MAX_JOBS"))


# --- settings -------------------------------------------------------------------------------


def test_every_variable_set_is_a_setting(objects: list[dict[str, Any]], overlay: str) -> None:
    names = setting_names()
    set_here: dict[str, set[str]] = {
        "ConfigMap": set(config(objects)),
        "Secret": secret_keys(objects, overlay),
    }
    for owner, pod in pod_templates(objects):
        for container in containers(pod):
            set_here[f"{owner}/{container['name']} env"] = {
                entry["name"] for entry in container.get("env", [])
            }
    unknown = {owner: sorted(keys - names) for owner, keys in set_here.items() if keys - names}
    assert not unknown, f"not settings: {unknown}"


def test_every_pod_reads_the_config_map_and_the_secret(objects: list[dict[str, Any]]) -> None:
    config_name = find(objects, "ConfigMap", CONFIG_MAP)["metadata"]["name"]
    secrets = [o["metadata"]["name"] for o in objects if o["kind"] == "Secret"]
    secret_name = secrets[0] if secrets else SECRET
    for owner, pod in pod_templates(objects):
        for container in containers(pod):
            sources = container.get("envFrom", [])
            assert {"configMapRef": {"name": config_name}} in sources, owner
            assert {"secretRef": {"name": secret_name}} in sources, owner


def test_every_setting_is_set_or_deliberately_left(
    objects: list[dict[str, Any]], overlay: str
) -> None:
    # The Secret's keys are those secrets.env.example lists; the dev overlay fills some.
    documented_secrets = set(env_file(PRODUCTION_SECRET_KEYS))
    assert secret_keys(objects, overlay) <= documented_secrets, overlay
    configured = set(config(objects)) | documented_secrets | set(UNSET_SETTINGS)
    missing = set(Settings.model_fields) - configured
    assert not missing, f"settings in no ConfigMap or Secret: {sorted(missing)}"
    assert not set(UNSET_SETTINGS) & set(config(objects)), "set after all: drop it from the list"


def test_credentials_are_in_the_secret_not_the_config_map(
    objects: list[dict[str, Any]], overlay: str
) -> None:
    in_config = SECRET_SETTINGS & set(config(objects))
    assert not in_config, f"credentials in the ConfigMap: {sorted(in_config)}"
    if overlay == "production":
        assert {"ADMIN_API_KEY", "DATABASE_URL", "REDIS_URL"} <= secret_keys(objects, overlay)


def test_the_config_validates_as_settings(objects: list[dict[str, Any]], overlay: str) -> None:
    values: dict[str, Any] = {k: v for k, v in config(objects).items() if v != ""}
    rendered = [o for o in objects if o["kind"] == "Secret"]
    if rendered:
        values |= {k: base64.b64decode(v).decode() for k, v in rendered[0].get("data", {}).items()}
    else:
        # What the operator's Secret holds, with values of the right shape.
        values |= {
            "ADMIN_API_KEY": generate_admin_key(),
            "DATABASE_URL": "postgresql://app:pw@postgres.example:5432/ai_eng_api",
            "REDIS_URL": "rediss://app:pw@redis.example:6379/0",
        }
    # model_validate reads neither the environment nor .env: only these values count. It runs
    # every validator, the timeouts' nesting and the admin key's checks included.
    settings = Settings.model_validate(values)
    environment = settings.ENVIRONMENT
    assert environment == {"dev": "DEV", "production": "PRD"}[overlay]


# --- ports and probes -----------------------------------------------------------------------


def api_image_port() -> int:
    cmd = exec_form(parse_dockerfile(DOCKERFILES["api"])[-1].args_of("CMD")[0])
    assert cmd
    return int(cmd[cmd.index("--port") + 1])


def health_paths() -> set[str]:
    return {path for route in health.router.routes if (path := getattr(route, "path", None))}


def test_api_ports_and_probes_match_the_app(objects: list[dict[str, Any]]) -> None:
    container = only_container(objects, API)
    (port,) = container["ports"]
    assert port["containerPort"] == api_image_port()
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] in health_paths(), f"{probe}: no route {check['path']}"
        assert check["port"] in {port["name"], port["containerPort"]}, probe
    service = find(objects, "Service", "ai-eng-api")
    assert service["spec"]["selector"].items() <= (
        find(objects, "Deployment", API)["spec"]["template"]["metadata"]["labels"].items()
    )
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in {port["name"], port["containerPort"]}
    hpa = find(objects, "HorizontalPodAutoscaler", API)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": API,
    }
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert container["resources"]["requests"]["cpu"], "CPU utilisation is of the request"


def test_worker_probe_and_metrics_port_match_the_worker(objects: list[dict[str, Any]]) -> None:
    container = only_container(objects, WORKER)
    runtime = parse_dockerfile(DOCKERFILES["worker"])[-1]
    healthcheck = exec_form(runtime.args_of("HEALTHCHECK")[0].split(" CMD ", 1)[1])
    assert healthcheck == ["python", "-m", "worker", "--check"]
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"] == healthcheck, probe
    (port,) = container["ports"]
    assert port["containerPort"] == int(effective(objects, "WORKER_METRICS_PORT"))
    # Loopback would leave Prometheus (and the NetworkPolicy's port) nothing to reach.
    assert effective(objects, "WORKER_METRICS_HOST") == "0.0.0.0"


def test_worker_liveness_outlasts_a_heartbeat(objects: list[dict[str, Any]]) -> None:
    """The probe fails only once the heartbeat has really expired (worker/arq_worker.py)."""
    live = only_container(objects, WORKER)["livenessProbe"]
    interval = int(effective(objects, "WORKER_HEALTH_CHECK_INTERVAL_SECONDS"))
    heartbeat_ttl = interval * 2 + 1
    assert live["periodSeconds"] * live["failureThreshold"] > heartbeat_ttl


def test_worker_grace_periods_nest(objects: list[dict[str, Any]]) -> None:
    """The kubelet waits longer than the worker's own grace: running jobs finish or go back."""
    pod = find(objects, "Deployment", WORKER)["spec"]["template"]["spec"]
    grace = int(effective(objects, "WORKER_SHUTDOWN_GRACE_SECONDS"))
    assert "lifecycle" not in only_container(objects, WORKER), "a preStop hook eats the grace"
    # The hand-back after the grace (cancel, write the rows back, close pools) needs seconds.
    assert pod["terminationGracePeriodSeconds"] >= grace + 10


def test_api_grace_covers_the_pre_stop_pause(objects: list[dict[str, Any]]) -> None:
    pod = find(objects, "Deployment", API)["spec"]["template"]["spec"]
    command = only_container(objects, API)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    # The pause, then the longest wait a request may ask for (?wait=N, Prefer: wait=N).
    assert pod["terminationGracePeriodSeconds"] > int(command[1]) + MAX_WAIT_SECONDS


# --- pods -----------------------------------------------------------------------------------


def image_uid(process: str) -> int:
    user = parse_dockerfile(DOCKERFILES[process])[-1].args_of("USER")[-1]
    return int(user.split(":")[0])


def test_pods_run_as_the_images_user_on_a_read_only_root(objects: list[dict[str, Any]]) -> None:
    uids = {image_uid(process) for process in DOCKERFILES}
    for owner, pod in pod_templates(objects):
        spec = pod["spec"]
        security = spec["securityContext"]
        assert security["runAsNonRoot"] is True, owner
        assert security["runAsUser"] in uids, owner
        assert security["seccompProfile"]["type"] == "RuntimeDefault", owner
        assert spec["automountServiceAccountToken"] is False, owner
        # A Service named `postgres` would otherwise set POSTGRES_PORT=tcp://... in the pod.
        assert spec["enableServiceLinks"] is False, owner
        empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for container in containers(pod):
            where = f"{owner}/{container['name']}"
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert "runAsUser" not in context or context["runAsUser"] in uids, where
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get("/tmp") in empty_dirs, f"{where}: /tmp is not a writable emptyDir"


def measured_rss_mb(process: str) -> int:
    """Peak RSS under load from docs/benchmarks.md's targets table."""
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    label = {"api": "API", "worker": "Worker"}[process]
    match = re.search(rf"^\| {label} RSS under load \(peak\) \| [^|]+ \| (\d+) MB \|", text, re.M)
    assert match, f"docs/benchmarks.md has no {label} RSS row"
    return int(match.group(1))


def mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    match = re.fullmatch(r"(\d+)([KMG]i?)", quantity)
    assert match, quantity
    return int(match.group(1)) * units[match.group(2)]


@pytest.mark.parametrize(("deployment", "process"), [(API, "api"), (WORKER, "worker")])
def test_resources_cover_the_measured_memory(
    objects: list[dict[str, Any]], deployment: str, process: str
) -> None:
    resources = only_container(objects, deployment)["resources"]
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[part]), part
    rss = measured_rss_mb(process) * 1e6 / 2**20
    request, limit = (mebibytes(resources[p]["memory"]) for p in ("requests", "limits"))
    # The request holds the measured peak; the limit leaves room for a second process
    # (the worker's exec probe) and growth before the OOM killer.
    assert request >= rss * 1.2, f"request {request:.0f} MiB vs {rss:.0f} MiB measured"
    assert limit >= 2 * request


def test_images_are_set_by_the_overlay(objects: list[dict[str, Any]], overlay: str) -> None:
    kustomization = yaml.safe_load(
        (DEPLOY / "overlays" / overlay / "kustomization.yaml").read_text()
    )
    tags = {image["name"]: image for image in kustomization["images"]}
    base_images = {
        c["image"]
        for path in (DEPLOY / "base").glob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") in {"Deployment", "Job"}
        for c in doc["spec"]["template"]["spec"]["containers"]
    }
    assert base_images == {"ai-eng-api-api", "ai-eng-api-worker"}
    assert base_images <= set(tags), "every base image is a kustomize image the overlay sets"
    for image in tags.values():
        assert image.get("newTag") not in {None, "", "latest"}, image
    # The migration runs the code of the API it migrates for.
    job = find(objects, "Job", MIGRATE)["spec"]["template"]
    assert containers(job)[0]["image"] == only_container(objects, API)["image"]
    assert only_container(objects, WORKER)["image"].startswith(tags["ai-eng-api-worker"]["newName"])


# --- migrations, disruptions, network -------------------------------------------------------


def test_migration_job_runs_the_prestart_script_once(objects: list[dict[str, Any]]) -> None:
    job = find(objects, "Job", MIGRATE)
    spec = job["spec"]
    assert spec["parallelism"] == 1
    assert spec["completions"] == 1
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    (container,) = containers(spec["template"])
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert container["command"] == compose["services"]["migrate"]["command"]
    assert (ROOT / container["command"][1]).is_file()
    # deploy/release.sh applies what the Job needs, by these labels, before anything else.
    release = (DEPLOY / "release.sh").read_text()
    assert "app.kubernetes.io/component in (config,migrate)" in release
    assert f"job/{MIGRATE}" in release
    first = {
        o["kind"]
        for o in objects
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        in {"config", "migrate"}
    }
    assert {"ConfigMap", "Job", "NetworkPolicy"} <= first
    assert not first & {"Deployment", "ScaledObject"}


def test_autoscaled_deployments_leave_the_count_to_the_autoscaler(
    objects: list[dict[str, Any]],
) -> None:
    """A `replicas` in the manifest would reset the count at every apply."""
    scaled = {
        o["spec"]["scaleTargetRef"]["name"]
        for o in objects
        if o["kind"] in {"HorizontalPodAutoscaler", "ScaledObject"}
    }
    assert scaled == {API, WORKER}
    for name in scaled:
        assert "replicas" not in find(objects, "Deployment", name)["spec"], name


def test_disruption_budgets_cover_running_pods(objects: list[dict[str, Any]]) -> None:
    for name in (API, WORKER):
        budget = find(objects, "PodDisruptionBudget", name)["spec"]
        labels = find(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert budget["selector"]["matchLabels"].items() <= labels.items(), name
        # A drain can always proceed: one pod at a time.
        assert budget.get("maxUnavailable") == 1, name
    assert find(objects, "HorizontalPodAutoscaler", API)["spec"]["minReplicas"] >= 1


def egress_ports(policy: dict[str, Any]) -> set[int]:
    return {port["port"] for rule in policy["spec"].get("egress", []) for port in rule["ports"]}


def ingress_ports(policy: dict[str, Any]) -> set[int]:
    return {port["port"] for rule in policy["spec"].get("ingress", []) for port in rule["ports"]}


def test_network_policies_allow_only_the_dependencies(
    objects: list[dict[str, Any]], overlay: str
) -> None:
    values = config(objects)
    secrets = [o for o in objects if o["kind"] == "Secret"]
    postgres, redis = 5432, url_port(str(Settings.model_fields["REDIS_URL"].default), 6379)
    if secrets:
        data = {k: base64.b64decode(v).decode() for k, v in secrets[0]["data"].items()}
        postgres = url_port(data["DATABASE_URL"], 5432)
        redis = url_port(data["REDIS_URL"], 6379)
    sentinel = 26379
    model = url_port(values["OLLAMA_BASE_URL"], 80)
    deny = find(objects, "NetworkPolicy", "ai-eng-api-default-deny")["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny
    assert "egress" not in deny
    api = find(objects, "NetworkPolicy", API)
    assert egress_ports(api) == {DNS_PORT, postgres, redis, sentinel}
    assert ingress_ports(api) == {only_container(objects, API)["ports"][0]["containerPort"]}
    worker = find(objects, "NetworkPolicy", WORKER)
    assert egress_ports(worker) == {DNS_PORT, postgres, redis, sentinel, model}
    assert ingress_ports(worker) == {int(effective(objects, "WORKER_METRICS_PORT"))}
    migrate = find(objects, "NetworkPolicy", MIGRATE)
    assert egress_ports(migrate) == {DNS_PORT, postgres}
    assert "Ingress" not in migrate["spec"]["policyTypes"] or not migrate["spec"].get("ingress")
    for name, component in [(API, "api"), (WORKER, "worker"), (MIGRATE, "migrate")]:
        selector = find(objects, "NetworkPolicy", name)["spec"]["podSelector"]["matchLabels"]
        assert selector["app.kubernetes.io/component"] == component, overlay


# --- docs -----------------------------------------------------------------------------------


def exported_series() -> set[str]:
    names = set()
    for family in create_metrics().registry.collect():
        suffixes = {
            "counter": ["_total"],
            "histogram": ["_bucket", "_sum", "_count"],
        }.get(family.type, [""])
        names.update(family.name + suffix for suffix in suffixes)
    return names


def test_the_deploy_doc_alerts_on_series_the_service_exports() -> None:
    """The alert and recording rules in docs/deploy.md name real metrics (or another exporter's)."""
    doc = (ROOT / "docs" / "deploy.md").read_text()
    text = "\n".join(re.findall(r"```yaml\n(.*?)```", doc, re.DOTALL))
    # A series is a name before a label selector or a range, or alone in parentheses.
    selectors = set(re.findall(r"\b([a-z_]+)\s*[{\[]", text))
    selectors |= set(re.findall(r"\(([a-z_]+)\)", text))
    labels = {"namespace", "pod", "le", "status", "error_code"}
    # kube-state-metrics and KEDA export theirs.
    ours = {n for n in selectors - labels if not n.startswith(("kube_", "keda_"))}
    assert ours, "no metric found in docs/deploy.md's rules"
    unknown = ours - exported_series()
    assert not unknown, f"docs/deploy.md names metrics nobody exports: {sorted(unknown)}"
