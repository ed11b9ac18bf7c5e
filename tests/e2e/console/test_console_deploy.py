"""The console's deployment files (offline, no infrastructure): its Compose service and its
Kubernetes Deployment run ``herald run console`` on 8005, probed like the services, hardened,
pointed at the four services' in-cluster addresses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from herald.migrate import MIGRATIONS
from herald.services import COMPONENTS, CONSOLE, SERVICES

REPO = Path(__file__).resolve().parents[3]


def test_herald_lists_the_console_as_a_component_without_schema_that_migrate_skips() -> None:
    assert CONSOLE.port == 8005 and CONSOLE.migrations is None
    assert list(COMPONENTS) == [*SERVICES, "console"]
    assert "console" not in MIGRATIONS


def test_compose_runs_the_console_on_8005_pointed_at_the_services() -> None:
    service = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["console"]
    assert service["command"] == ["run", "console"]
    assert "8005:8005" in service["ports"]
    assert "127.0.0.1:8005/readyz" in " ".join(service["healthcheck"]["test"])
    env = service["environment"]
    for name in SERVICES:
        assert env[f"CONSOLE_{name.upper()}_URL"] == f"http://{name}:{SERVICES[name].port}"


def _console_documents() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((REPO / "deploy" / "k8s" / "base" / "console.yaml").read_text()))


def test_k8s_console_deployment_runs_the_console_hardened_and_probed() -> None:
    deployment, service = _console_documents()
    assert deployment["kind"] == "Deployment" and service["kind"] == "Service"
    assert (
        "console.yaml"
        in yaml.safe_load((REPO / "deploy" / "k8s" / "base" / "kustomization.yaml").read_text())["resources"]
    )
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["run", "console"]
    assert [p["containerPort"] for p in container["ports"]] == [8005]
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e["value"] for e in container["env"]}
    for name in SERVICES:
        assert env[f"CONSOLE_{name.upper()}_URL"] == f"http://herald-{name}:{SERVICES[name].port}"
    assert service["spec"]["ports"][0]["port"] == 8005
