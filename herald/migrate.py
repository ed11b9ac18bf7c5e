"""``herald migrate``: Alembic migrations, one environment per schema, run as their own step.

The shared ``tenancy`` schema comes first, then one schema per service in the order of
``herald.services.SERVICES``. Each folder's ``env.py`` calls ``shared.migration_env.run_env``,
which takes an advisory lock so two concurrent runs never race.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from herald.services import ROOT, SERVICES

#: schema → folder holding its env.py and versions/, in the order they are applied
MIGRATIONS: dict[str, Path] = {
    "tenancy": ROOT / "shared" / "migrations",
    **{name: service.migrations for name, service in SERVICES.items() if service.migrations is not None},
}


def alembic_config(schema: str, database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS[schema]))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    cfg.attributes["schema"] = schema
    return cfg


def upgrade_all(database_url: str, revision: str = "head", schemas: list[str] | None = None) -> list[str]:
    done = []
    for schema in schemas or list(MIGRATIONS):
        command.upgrade(alembic_config(schema, database_url), revision)
        done.append(schema)
    return done
