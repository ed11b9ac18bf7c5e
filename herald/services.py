"""The one list of Herald's services: what ``herald run`` starts, what ``herald migrate``
migrates (after the shared ``tenancy`` schema), and the port each listens on by default.

Adding a service is one line here; ``make up``, the end-to-end tests and the benchmarks read it.
``SERVICES`` are the four with a schema and the broker; ``CONSOLE`` is the operators' web console,
a fifth process with neither (it talks to the four over HTTP); ``COMPONENTS`` is everything
``herald run`` can start.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the folder holding ``herald``, ``shared`` and ``services``: the checkout, or site-packages once
#: installed as a wheel (the migration folders are package data, installed alongside the code)
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Service:
    name: str
    #: ``module:function`` returning ``(runtime, app)``; imported only when the service runs
    app_factory: str
    #: Alembic folder (``env.py``, ``versions/``) of the service's own schema, named after it;
    #: None for a component without a schema (the console), which ``herald migrate`` skips
    migrations: Path | None
    #: HTTP port when ``<NAME>_PORT`` is not set
    port: int

    def build(self) -> tuple[Any, Any]:
        module, _, function = self.app_factory.partition(":")
        return getattr(importlib.import_module(module), function)()


#: name → service, in the order they are migrated and started
SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service("ingest", "services.ingest.app:build", ROOT / "services" / "ingest" / "migrations", 8001),
        Service(
            "scheduler", "services.scheduler.app:build", ROOT / "services" / "scheduler" / "migrations", 8002
        ),
        Service(
            "pipeline", "services.pipeline.app:build", ROOT / "services" / "pipeline" / "migrations", 8003
        ),
        Service("sender", "services.sender.app:build", ROOT / "services" / "sender" / "migrations", 8004),
    )
}

#: the operators' web console: no schema, no broker; reaches the services through their HTTP APIs
CONSOLE = Service("console", "services.console.app:build", None, 8005)

#: everything ``herald run`` starts: the four services, then the console
COMPONENTS: dict[str, Service] = {**SERVICES, CONSOLE.name: CONSOLE}
