"""The deployment files keep the promises operators rely on.

docker-compose.yml must be a valid Compose file that starts the four services on their ports,
only after the migrations succeeded, and reports them healthy only when /readyz answers.
The Kubernetes manifests under deploy/k8s must give every service the right command, probes on
/livez and /readyz, a hardened pod, resources, and enough shutdown time to drain in-flight
messages; and every kustomization must point at files that exist.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import (
    Draft4Validator,
    Draft6Validator,
    Draft7Validator,
    Draft201909Validator,
    Draft202012Validator,
)
from jsonschema.protocols import Validator

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = REPO_ROOT.parent / "shared" / "contracts" / "compose" / "compose-spec.json"
K8S_ROOT = REPO_ROOT / "deploy" / "k8s"
# Vendored operator CRDs, for offline validation only (tests/unit/test_deploy_engines.py): never applied.
K8S_CRDS = K8S_ROOT / "crds"

SERVICE_PORTS = {"ingest": 8001, "scheduler": 8002, "pipeline": 8003, "sender": 8004}
APP_UID = 10001


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _duration_seconds(value: str | float) -> float:
    """Seconds in a Compose duration such as "30s", "1m30s" or "1500ms"."""
    if isinstance(value, int | float):
        return float(value)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"not a duration: {value!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def _command(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return value.split() if isinstance(value, str) else list(value)


def _published_ports(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(host port, container port) pairs of a Compose service, short or long syntax."""
    pairs: set[tuple[int, int]] = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            if "published" in entry:
                pairs.add((int(entry["published"]), int(entry["target"])))
            continue
        fields = str(entry).split("/")[0].split(":")
        if len(fields) >= 2:
            pairs.add((int(fields[-2]), int(fields[-1])))
    return pairs


def _validator_class_for(schema: dict[str, Any]) -> type[Validator]:
    """The validator of the draft that the schema declares in "$schema".

    jsonschema's own validator_for() matches the meta-schema URI exactly, and the Compose schema
    declares "https://json-schema.org/draft-07/schema" (https, no "#"), which it does not
    recognise; compare without scheme and empty fragment instead, and refuse to guess.
    """

    def normalise(uri: str) -> str:
        return uri.split("://", 1)[-1].rstrip("#").rstrip("/")

    declared = normalise(schema.get("$schema", ""))
    for validator_class in (
        Draft202012Validator,
        Draft201909Validator,
        Draft7Validator,
        Draft6Validator,
        Draft4Validator,
    ):
        if normalise(validator_class.META_SCHEMA["$schema"]) == declared:
            return validator_class
    raise AssertionError(f"the Compose schema declares an unknown draft: {schema.get('$schema')!r}")


def _load_k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    """The objects of the manifests; patch files and the vendored CRDs are not objects of their own."""
    documents = []
    skipped = _patch_files()
    for path in sorted([*K8S_ROOT.rglob("*.yaml"), *K8S_ROOT.rglob("*.yml")]):
        if path.resolve() in skipped or K8S_CRDS in path.parents:
            continue
        with path.open(encoding="utf-8") as stream:
            for document in yaml.safe_load_all(stream):
                if document is not None:
                    documents.append((path, document))
    return documents


def _kustomization_files() -> list[Path]:
    return sorted(
        path for path in K8S_ROOT.rglob("*") if path.name in {"kustomization.yaml", "kustomization.yml"}
    )


def _patch_files() -> set[Path]:
    patches = set()
    for kustomization_path in _kustomization_files():
        kustomization = yaml.safe_load(kustomization_path.read_text(encoding="utf-8"))
        for patch in kustomization.get("patches", []):
            if "path" in patch:
                patches.add((kustomization_path.parent / patch["path"]).resolve())
    return patches


def _listed_in_kustomizations() -> set[Path]:
    listed = _patch_files()
    for kustomization_path in _kustomization_files():
        kustomization = yaml.safe_load(kustomization_path.read_text(encoding="utf-8"))
        for entry in [*kustomization.get("resources", []), *kustomization.get("components", [])]:
            listed.add((kustomization_path.parent / entry).resolve())
    return listed


def _graceful_timeout_seconds(documents: list[tuple[Path, dict[str, Any]]]) -> int:
    config_maps = [
        doc
        for _, doc in documents
        if doc.get("kind") == "ConfigMap" and "HERALD_GRACEFUL_TIMEOUT_SECONDS" in doc.get("data", {})
    ]
    assert len(config_maps) == 1, "exactly one ConfigMap must set HERALD_GRACEFUL_TIMEOUT_SECONDS"
    return int(config_maps[0]["data"]["HERALD_GRACEFUL_TIMEOUT_SECONDS"])


def _pre_stop_seconds(container: dict[str, Any]) -> float:
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop.get("exec", {}).get("command", [])
    if len(command) == 2 and command[0] == "sleep":
        return float(command[1])
    return 0.0


def _named_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise AssertionError(f"container {container['name']} has no port named {port!r}")


def _assert_hardened(name: str, pod_spec: dict[str, Any]) -> None:
    """Non-root uid 10001, read-only root with a writable /tmp, no escalation, no capabilities."""
    pod_security = pod_spec.get("securityContext", {})
    volumes = {volume["name"]: volume for volume in pod_spec.get("volumes", [])}
    for container in pod_spec["containers"]:
        security = {**pod_security, **container.get("securityContext", {})}
        where = f"{name}/{container['name']}"
        assert security.get("runAsNonRoot") is True, f"{where}: runAsNonRoot must be true"
        assert security.get("runAsUser") == APP_UID, f"{where}: must run as uid {APP_UID}"
        assert security.get("readOnlyRootFilesystem") is True, f"{where}: root filesystem must be read-only"
        assert security.get("allowPrivilegeEscalation") is False, f"{where}: privilege escalation allowed"
        assert "ALL" in security.get("capabilities", {}).get("drop", []), f"{where}: capabilities not dropped"
        assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: seccomp"
        tmp_mounts = [mount for mount in container.get("volumeMounts", []) if mount["mountPath"] == "/tmp"]
        assert tmp_mounts, f"{where}: /tmp must be writable (an emptyDir) under a read-only root"
        assert "emptyDir" in volumes[tmp_mounts[0]["name"]], f"{where}: /tmp must be an emptyDir"


def _assert_resources(name: str, container: dict[str, Any]) -> None:
    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            assert resources.get(kind, {}).get(resource), f"{name}: resources.{kind}.{resource} is not set"


# --------------------------------------------------------------------------------------------------
# docker-compose.yml
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    if not COMPOSE_SCHEMA.is_file():
        pytest.skip(f"Compose Specification schema not found at {COMPOSE_SCHEMA}")
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    validator_class = _validator_class_for(schema)
    validator_class.check_schema(schema)

    errors = sorted(validator_class(schema).iter_errors(compose), key=lambda error: list(error.path))
    assert not errors, "docker-compose.yml breaks the Compose Specification:\n" + "\n".join(
        f"  {'/'.join(map(str, error.path)) or '(root)'}: {error.message}" for error in errors
    )


@pytest.mark.parametrize(("service_name", "port"), SERVICE_PORTS.items())
def test_compose_runs_each_service_on_its_published_port(
    compose: dict[str, Any], service_name: str, port: int
) -> None:
    service = compose["services"][service_name]
    assert _command(service.get("command")) == ["run", service_name]
    assert (port, port) in _published_ports(service), f"{service_name} must publish {port}:{port}"


@pytest.mark.parametrize(("service_name", "port"), SERVICE_PORTS.items())
def test_compose_service_is_healthy_only_when_ready(
    compose: dict[str, Any], service_name: str, port: int
) -> None:
    test = _command(compose["services"][service_name]["healthcheck"]["test"])
    assert test[0] in {"CMD", "CMD-SHELL"}
    assert f"127.0.0.1:{port}/readyz" in " ".join(test), f"{service_name} must check its own /readyz"


@pytest.mark.parametrize("service_name", SERVICE_PORTS)
def test_compose_service_starts_after_migrations_and_infrastructure(
    compose: dict[str, Any], service_name: str
) -> None:
    depends_on = compose["services"][service_name]["depends_on"]
    assert depends_on["migrate"]["condition"] == "service_completed_successfully"
    assert depends_on["rabbitmq"]["condition"] == "service_healthy"
    assert depends_on["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("service_name", SERVICE_PORTS)
def test_compose_gives_in_flight_messages_time_to_drain(compose: dict[str, Any], service_name: str) -> None:
    service = compose["services"][service_name]
    graceful_timeout = float(service["environment"]["HERALD_GRACEFUL_TIMEOUT_SECONDS"])
    assert _duration_seconds(service["stop_grace_period"]) > graceful_timeout


def test_compose_migrate_runs_migrations_once_after_infrastructure(compose: dict[str, Any]) -> None:
    migrate = compose["services"]["migrate"]
    assert _command(migrate["command"]) == ["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    herald_image = compose["services"]["sender"]["image"]
    assert migrate["image"] == herald_image, "migrate must run the same image as the services"


def test_compose_infrastructure_has_healthchecks_and_volumes(compose: dict[str, Any]) -> None:
    rabbitmq, postgres = compose["services"]["rabbitmq"], compose["services"]["postgres"]
    assert rabbitmq["image"].startswith("rabbitmq:3.13")
    assert _command(rabbitmq["healthcheck"]["test"])[1:] == ["rabbitmq-diagnostics", "-q", "ping"]
    assert postgres["image"].startswith("postgres:16")
    assert "pg_isready" in _command(postgres["healthcheck"]["test"])
    for service in (rabbitmq, postgres):
        named_volumes = [str(volume).split(":")[0] for volume in service["volumes"]]
        assert all(volume in compose["volumes"] for volume in named_volumes)


# --------------------------------------------------------------------------------------------------
# deploy/k8s
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    return _load_k8s_documents()


@pytest.fixture(scope="module")
def deployments(k8s_documents: list[tuple[Path, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Deployments by the service they run (their app.kubernetes.io/component label)."""
    found: dict[str, dict[str, Any]] = {}
    for _, doc in k8s_documents:
        if doc.get("kind") == "Deployment":
            component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
            assert component not in found, f"two Deployments for {component}"
            found[component] = doc
    return found


def test_k8s_has_one_deployment_per_service(deployments: dict[str, dict[str, Any]]) -> None:
    # the four services, plus the operators' console (tests/e2e/console checks its manifest)
    assert set(deployments) == {*SERVICE_PORTS, "console"}


@pytest.mark.parametrize("service_name", SERVICE_PORTS)
def test_k8s_deployment_runs_its_service(deployments: dict[str, dict[str, Any]], service_name: str) -> None:
    deployment = deployments[service_name]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert _command(container.get("command")) == [], "the image's entrypoint (herald) must be kept"
    assert container["args"] == ["run", service_name]
    assert [port["containerPort"] for port in container["ports"]] == [SERVICE_PORTS[service_name]]
    env_sources = {
        ref.get("configMapRef", ref.get("secretRef", {})).get("name") for ref in container["envFrom"]
    }
    assert {"herald-config", "herald-secrets"} <= env_sources


@pytest.mark.parametrize("service_name", SERVICE_PORTS)
def test_k8s_deployment_probes_livez_and_readyz(
    deployments: dict[str, dict[str, Any]], service_name: str
) -> None:
    (container,) = deployments[service_name]["spec"]["template"]["spec"]["containers"]
    expected = {"livenessProbe": "/livez", "readinessProbe": "/readyz", "startupProbe": None}
    for probe_name, path in expected.items():
        probe = container.get(probe_name)
        assert probe, f"{service_name}: {probe_name} missing"
        if path is not None:
            assert probe["httpGet"]["path"] == path, f"{service_name}: {probe_name} must hit {path}"
        assert _named_port(container, probe["httpGet"]["port"]) == SERVICE_PORTS[service_name]


@pytest.mark.parametrize("service_name", SERVICE_PORTS)
def test_k8s_deployment_pod_is_hardened_and_sized(
    deployments: dict[str, dict[str, Any]], service_name: str
) -> None:
    pod_spec = deployments[service_name]["spec"]["template"]["spec"]
    _assert_hardened(service_name, pod_spec)
    for container in pod_spec["containers"]:
        _assert_resources(service_name, container)


@pytest.mark.parametrize("service_name", SERVICE_PORTS)
def test_k8s_deployment_gives_in_flight_messages_time_to_drain(
    k8s_documents: list[tuple[Path, dict[str, Any]]],
    deployments: dict[str, dict[str, Any]],
    service_name: str,
) -> None:
    """The kubelet's SIGKILL comes terminationGracePeriodSeconds after the pod starts terminating,
    and that period includes the preStop hook: both must fit before it."""
    graceful_timeout = _graceful_timeout_seconds(k8s_documents)
    pod_spec = deployments[service_name]["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    pre_stop = _pre_stop_seconds(container)
    assert pre_stop > 0, f"{service_name}: a preStop pause lets endpoints deregister before shutdown"
    assert pod_spec["terminationGracePeriodSeconds"] > pre_stop + graceful_timeout


@pytest.mark.parametrize("service_name", SERVICE_PORTS)
def test_k8s_service_routes_to_its_deployment(
    k8s_documents: list[tuple[Path, dict[str, Any]]],
    deployments: dict[str, dict[str, Any]],
    service_name: str,
) -> None:
    deployment = deployments[service_name]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    services = [
        doc
        for _, doc in k8s_documents
        if doc.get("kind") == "Service" and doc["spec"]["selector"].items() <= pod_labels.items()
    ]
    assert len(services) == 1, f"{service_name}: expected exactly one Service selecting its pods"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (port,) = services[0]["spec"]["ports"]
    assert _named_port(container, port["targetPort"]) == SERVICE_PORTS[service_name]


def test_k8s_migrate_job_runs_migrations_in_a_hardened_pod(
    k8s_documents: list[tuple[Path, dict[str, Any]]],
) -> None:
    jobs = [doc for _, doc in k8s_documents if doc.get("kind") == "Job"]
    assert len(jobs) == 1, "expected exactly one Job: the migration"
    pod_spec = jobs[0]["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    assert container["args"] == ["migrate"]
    assert pod_spec["restartPolicy"] == "Never"
    _assert_hardened("migrate", pod_spec)
    _assert_resources("migrate", container)


@pytest.mark.parametrize("service_name", ["ingest", "sender"])
def test_k8s_disruption_budget_protects_service(
    k8s_documents: list[tuple[Path, dict[str, Any]]],
    deployments: dict[str, dict[str, Any]],
    service_name: str,
) -> None:
    pod_labels = deployments[service_name]["spec"]["template"]["metadata"]["labels"]
    budgets = [
        doc
        for _, doc in k8s_documents
        if doc.get("kind") == "PodDisruptionBudget"
        and doc["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ]
    assert len(budgets) == 1, f"{service_name}: expected one PodDisruptionBudget"


@pytest.mark.parametrize(
    ("service_name", "queue"),
    [("sender", "sender.message.requested"), ("pipeline", "pipeline.order.status_changed")],
)
def test_k8s_autoscaling_follows_queue_depth(
    k8s_documents: list[tuple[Path, dict[str, Any]]],
    deployments: dict[str, dict[str, Any]],
    service_name: str,
    queue: str,
) -> None:
    deployment_name = deployments[service_name]["metadata"]["name"]
    scaled_objects = [
        doc
        for _, doc in k8s_documents
        if doc.get("kind") == "ScaledObject" and doc["spec"]["scaleTargetRef"]["name"] == deployment_name
    ]
    assert len(scaled_objects) == 1, f"{service_name}: expected one ScaledObject"
    triggers = scaled_objects[0]["spec"]["triggers"]
    rabbitmq_triggers = [trigger for trigger in triggers if trigger["type"] == "rabbitmq"]
    assert any(
        trigger["metadata"]["queueName"] == queue and trigger["metadata"]["mode"] == "QueueLength"
        for trigger in rabbitmq_triggers
    ), f"{service_name}: no QueueLength trigger on {queue}"

    authentications = {
        doc["metadata"]["name"]: doc for _, doc in k8s_documents if doc.get("kind") == "TriggerAuthentication"
    }
    for trigger in rabbitmq_triggers:
        authentication = authentications[trigger["authenticationRef"]["name"]]
        hosts = [ref for ref in authentication["spec"]["secretTargetRef"] if ref["parameter"] == "host"]
        assert hosts == [{"parameter": "host", "name": "herald-secrets", "key": "HERALD_AMQP_URL"}]


def test_k8s_kustomizations_list_only_existing_files() -> None:
    kustomizations = _kustomization_files()
    assert kustomizations, "no kustomization.yaml under deploy/k8s"
    for kustomization_path in kustomizations:
        kustomization = yaml.safe_load(kustomization_path.read_text(encoding="utf-8"))
        entries = [*kustomization.get("resources", []), *kustomization.get("components", [])]
        entries += [patch["path"] for patch in kustomization.get("patches", []) if "path" in patch]
        for entry in entries:
            target = kustomization_path.parent / entry
            where = f"{kustomization_path.relative_to(REPO_ROOT)}: {entry}"
            if target.is_dir():
                assert any(
                    (target / name).is_file() for name in ("kustomization.yaml", "kustomization.yml")
                ), f"{where} is a folder without a kustomization.yaml"
            else:
                assert target.is_file(), f"{where} does not exist"


def test_k8s_every_manifest_is_used_except_the_secret_example() -> None:
    """A manifest no kustomization lists is never applied; the Secret example must never be."""
    listed = _listed_in_kustomizations()
    secret_example = (K8S_ROOT / "base" / "secret.example.yaml").resolve()
    assert secret_example.is_file(), "base/secret.example.yaml documents the Secret operators provide"
    assert secret_example not in listed, "the Secret example must not be applied by kustomize"
    manifests = {
        path.resolve()
        for path in K8S_ROOT.rglob("*.yaml")
        if path.name not in {"kustomization.yaml"}
        and path.resolve() != secret_example
        and K8S_CRDS not in path.parents
    }
    assert manifests - listed == set(), f"manifests no kustomization uses: {sorted(manifests - listed)}"


def test_k8s_production_overlay_uses_autoscaling_replicas_and_a_release_image() -> None:
    overlay = yaml.safe_load((K8S_ROOT / "overlays" / "production" / "kustomization.yaml").read_text())
    assert "../../base" in overlay["resources"]
    assert "../../components/keda-autoscaling" in overlay["components"]
    replicas = {entry["name"]: entry["count"] for entry in overlay["replicas"]}
    assert replicas == {"herald-ingest": 2, "herald-sender": 2}
    (image,) = overlay["images"]
    assert image["name"] == "herald" and image.get("newTag") not in (None, "", "latest", "local")


def _kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


@pytest.mark.parametrize("target", ["base", "overlays/production"])
def test_k8s_kustomization_renders(target: str) -> None:
    """Extra check where kustomize (or kubectl) is installed: the real tool accepts the tree."""
    command = _kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed")
    rendered = subprocess.run(
        [*command, str(K8S_ROOT / target)], capture_output=True, text=True, timeout=60, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    documents = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    assert all(
        doc["metadata"].get("namespace") == "herald" for doc in documents if doc["kind"] != "Namespace"
    ), "every namespaced object must land in the herald namespace"
    images = {
        container["image"]
        for doc in documents
        if doc["kind"] in {"Deployment", "Job"}
        for container in doc["spec"]["template"]["spec"]["containers"]
    }
    assert len(images) == 1, f"services and migration must run one image, got {images}"
