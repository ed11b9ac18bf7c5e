"""The dependency points one way: ``herald`` (the command, the migration runner, the list of
services) → ``services`` → ``shared``. ``shared`` names no service, and the services are listed
once, in ``herald/services.py``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from herald.migrate import MIGRATIONS
from herald.services import SERVICES

REPO = Path(__file__).resolve().parents[2]
SERVICE_NAMES = {"ingest", "scheduler", "pipeline", "sender"}


def _modules(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", _modules("shared"), ids=lambda p: str(p.relative_to(REPO)))
def test_shared_imports_neither_a_service_nor_the_entry_package(path: Path) -> None:
    wrong = sorted(n for n in _imported(path) if n.split(".")[0] in {"services", "herald"})
    assert not wrong, f"{path.relative_to(REPO)} imports {wrong}: shared must know no service"


@pytest.mark.parametrize("path", _modules("services"), ids=lambda p: str(p.relative_to(REPO)))
def test_a_service_imports_no_other_service(path: Path) -> None:
    """Services share code through ``shared`` and talk through events and HTTP, never imports."""
    own = path.relative_to(REPO / "services").parts[0]
    wrong = sorted(
        n for n in _imported(path) if n.startswith("services.") and n.split(".")[1] not in (own, "__init__")
    )
    assert not wrong, f"{path.relative_to(REPO)} imports {wrong}: move the shared part to shared/"


def _lists_every_service(node: ast.AST) -> bool:
    if isinstance(node, ast.Dict):
        items = node.keys
    elif isinstance(node, ast.Tuple | ast.List | ast.Set):
        items = node.elts
    else:
        return False
    strings = {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)}
    return SERVICE_NAMES <= strings


def test_the_services_are_listed_once_in_herald_services() -> None:
    listed_elsewhere = [
        str(path.relative_to(REPO))
        for folder in ("herald", "shared", "services", "devtools", "bench")
        for path in _modules(folder)
        if path != REPO / "herald" / "services.py"
        and any(_lists_every_service(node) for node in ast.walk(ast.parse(path.read_text())))
    ]
    assert not listed_elsewhere, (
        f"import herald.services.SERVICES instead of listing them: {listed_elsewhere}"
    )
    assert set(SERVICES) == SERVICE_NAMES


def test_every_service_has_its_migrations_and_app_factory() -> None:
    assert list(MIGRATIONS) == ["tenancy", *SERVICES]
    for name, service in SERVICES.items():
        assert (service.migrations / "env.py").is_file(), f"{name}: no migrations at {service.migrations}"
        module, _, function = service.app_factory.partition(":")
        assert (REPO / Path(*module.split("."))).with_suffix(".py").is_file(), service.app_factory
        assert function
