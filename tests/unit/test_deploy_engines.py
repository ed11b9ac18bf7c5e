"""The engines component gives Herald clustered RabbitMQ and PostgreSQL that survive a node loss.

Rendered with the real kustomize (kubectl kustomize), overlays/with-engines must contain a
3-node RabbitmqCluster and a 3-instance CloudNativePG Cluster that their operators accept (checked
against the operators' CRD schemas vendored in deploy/k8s/crds, where present), and every Herald
pod must build HERALD_AMQP_URL and HERALD_DATABASE_URL from the Secrets those operators create.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft4Validator

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_ROOT = REPO_ROOT / "deploy" / "k8s"
CRDS = K8S_ROOT / "crds"
OVERLAY = K8S_ROOT / "overlays" / "with-engines"

RABBITMQ_CRD = CRDS / "rabbitmq.com_rabbitmqclusters.yaml"
CNPG_CRD = CRDS / "postgresql.cnpg.io_clusters.yaml"
# The Secrets the operators create for a cluster named <name>, and the keys they document.
RABBITMQ_SECRET_KEYS = {"username", "password", "host", "port"}
CNPG_SECRET_KEYS = {"username", "password", "host", "port", "dbname"}
HERALD_WORKLOADS = {
    ("Deployment", "herald-ingest"),
    ("Deployment", "herald-scheduler"),
    ("Deployment", "herald-pipeline"),
    ("Deployment", "herald-sender"),
    ("Job", "herald-migrate"),
}


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def structural_to_json_schema(node: Any) -> Any:
    """A Kubernetes structural (OpenAPI v3) schema as a JSON Schema draft 4 a validator can use.

    - x-kubernetes-* keys are dropped; x-kubernetes-preserve-unknown-fields keeps the object open,
      x-kubernetes-int-or-string allows an integer or a string;
    - nullable: true admits null;
    - an object with declared properties and no additionalProperties is closed, as the API
      server's strict field validation (a misspelt field is refused, not silently pruned).
    """
    if isinstance(node, list):
        return [structural_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {
        key: structural_to_json_schema(value)
        for key, value in node.items()
        if not key.startswith("x-kubernetes-") and key not in {"nullable", "description"}
    }
    # "properties" maps field names to schemas: convert the schemas, keep the names.
    if isinstance(node.get("properties"), dict):
        schema["properties"] = {
            name: structural_to_json_schema(sub) for name, sub in node["properties"].items()
        }
    if node.get("x-kubernetes-int-or-string"):
        schema.pop("type", None)
        schema.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    open_object = node.get("x-kubernetes-preserve-unknown-fields") is True
    if "properties" in node and "additionalProperties" not in node and not open_object:
        schema["additionalProperties"] = False
    return schema


def _crd_schema(path: Path, api_version: str, kind: str) -> dict[str, Any]:
    if not path.is_file():
        pytest.skip(f"{path.relative_to(REPO_ROOT)} is not vendored (deploy/k8s/crds/README.md)")
    group, version = api_version.split("/")
    for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if not document or document.get("kind") != "CustomResourceDefinition":
            continue
        spec = document["spec"]
        if spec["group"] != group or spec["names"]["kind"] != kind:
            continue
        for served in spec["versions"]:
            if served["name"] == version:
                schema = served["schema"]["openAPIV3Schema"]
                assert schema["properties"]["spec"]["properties"], f"{path.name}: incomplete schema"
                return structural_to_json_schema(schema)
    raise AssertionError(f"{path.name} defines no {kind} in {api_version}")


def _errors(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    validator = Draft4Validator(schema)
    return [
        f"{'/'.join(str(part) for part in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def _one(documents: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in documents if doc["kind"] == kind]
    return found


# --------------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    command = _kustomize_command()
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed")
    result = subprocess.run([*command, str(OVERLAY)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


# --------------------------------------------------------------------------------------------------
# the translation itself (always runs, CRDs vendored or not)
# --------------------------------------------------------------------------------------------------


def test_structural_schema_translation_refuses_misspelt_fields_and_keeps_open_objects_open() -> None:
    structural = {
        "type": "object",
        "properties": {
            "replicas": {"type": "integer", "format": "int32"},
            "port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "override": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "note": {"type": "string", "nullable": True},
        },
        "x-kubernetes-validations": [{"rule": "self.replicas > 0"}],
    }
    schema = structural_to_json_schema(structural)
    good = {
        "replicas": 3,
        "port": "amqp",
        "override": {"any": {"thing": 1}},
        "labels": {"a": "b"},
        "note": None,
    }
    assert _errors(schema, good) == []
    assert _errors(schema, {"replica": 3}), "a misspelt field must be refused"
    assert _errors(schema, {"replicas": "3"}), "a wrong type must be refused"
    assert _errors(schema, {"labels": {"a": 1}}), "additionalProperties schemas still apply"


# --------------------------------------------------------------------------------------------------
# the rendered overlay
# --------------------------------------------------------------------------------------------------


def test_overlay_adds_the_engines_to_production_in_the_herald_namespace(
    rendered: list[dict[str, Any]],
) -> None:
    kinds = {doc["kind"] for doc in rendered}
    assert {"RabbitmqCluster", "Cluster", "ScaledObject", "Deployment", "Job"} <= kinds
    assert all(doc["metadata"].get("namespace") == "herald" for doc in rendered if doc["kind"] != "Namespace")


def test_rabbitmq_has_three_spread_persistent_nodes_and_a_disruption_budget(
    rendered: list[dict[str, Any]],
) -> None:
    rabbitmq = _one(rendered, "RabbitmqCluster")
    spec = rabbitmq["spec"]
    assert spec["replicas"] == 3, "quorum queues need 3 nodes to survive the loss of one"
    assert spec["persistence"]["storage"], "messages must survive a pod restart"
    assert spec["resources"]["requests"] and spec["resources"]["limits"]
    (term,) = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": rabbitmq["metadata"]["name"]}
    budgets = [doc for doc in rendered if doc["kind"] == "PodDisruptionBudget"]
    assert any(
        budget["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": rabbitmq["metadata"]["name"]}
        and budget["spec"].get("maxUnavailable") == 1
        for budget in budgets
    ), "a drain must take at most one RabbitMQ node at a time"
    assert "rabbitmq_prometheus" in spec["rabbitmq"]["additionalPlugins"]


def test_postgres_is_a_primary_and_two_replicas_owned_by_herald(rendered: list[dict[str, Any]]) -> None:
    spec = _one(rendered, "Cluster")["spec"]
    assert spec["instances"] == 3
    assert spec["bootstrap"]["initdb"] == {"database": "herald", "owner": "herald"}
    assert spec["storage"]["size"]
    assert spec["affinity"]["enablePodAntiAffinity"] is True
    assert spec["monitoring"]["enablePodMonitor"] is True


def test_rabbitmq_cluster_follows_the_operator_crd(rendered: list[dict[str, Any]]) -> None:
    rabbitmq = _one(rendered, "RabbitmqCluster")
    schema = _crd_schema(RABBITMQ_CRD, rabbitmq["apiVersion"], "RabbitmqCluster")
    assert _errors(schema, rabbitmq) == []


def test_postgres_cluster_follows_the_operator_crd(rendered: list[dict[str, Any]]) -> None:
    cluster = _one(rendered, "Cluster")
    schema = _crd_schema(CNPG_CRD, cluster["apiVersion"], "Cluster")
    assert _errors(schema, cluster) == []


@pytest.mark.parametrize(("kind", "name"), sorted(HERALD_WORKLOADS))
def test_herald_urls_come_from_the_operators_secrets(
    rendered: list[dict[str, Any]], kind: str, name: str
) -> None:
    rabbitmq_secret = f"{_one(rendered, 'RabbitmqCluster')['metadata']['name']}-default-user"
    postgres_secret = f"{_one(rendered, 'Cluster')['metadata']['name']}-app"
    workload = next(doc for doc in rendered if doc["kind"] == kind and doc["metadata"]["name"] == name)
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    env = container["env"]
    names = [entry["name"] for entry in env]
    assert len(names) == len(set(names)), f"{name}: an env var is set twice"

    refs = {
        entry["name"]: entry["valueFrom"]["secretKeyRef"]
        for entry in env
        if "secretKeyRef" in entry.get("valueFrom", {})
    }
    by_secret: dict[str, set[str]] = {}
    for ref in refs.values():
        by_secret.setdefault(ref["name"], set()).add(ref["key"])
    assert by_secret.get(rabbitmq_secret) == RABBITMQ_SECRET_KEYS
    assert by_secret.get(postgres_secret) == CNPG_SECRET_KEYS

    # Kubernetes expands $(VAR) only for variables defined earlier in the same list.
    values = {entry["name"]: entry.get("value") for entry in env}
    for url, scheme, secret in (
        ("HERALD_AMQP_URL", "amqp://", rabbitmq_secret),
        ("HERALD_DATABASE_URL", "postgresql+asyncpg://", postgres_secret),
    ):
        value = values.get(url)
        assert value and value.startswith(scheme), f"{name}: {url} must be a {scheme} URL, got {value!r}"
        used = re.findall(r"\$\(([A-Z0-9_]+)\)", value)
        assert used, f"{name}: {url} is not composed from the Secret"
        earlier = names[: names.index(url)]
        for variable in used:
            assert variable in earlier, f"{name}: {url} uses $({variable}) before it is defined"
            assert refs[variable]["name"] == secret, f"{name}: {url} mixes in {variable} from another Secret"
    # ...and everything else still comes from the configuration and herald-secrets.
    sources = [next(iter(source.values()))["name"] for source in container["envFrom"]]
    assert sources == ["herald-config", "herald-secrets"]
