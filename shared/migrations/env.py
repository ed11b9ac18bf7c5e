"""Alembic environment of the `tenancy` schema (run through `herald migrate`)."""

from shared.migration_env import run_env
from shared.tenancy import SCHEMA, metadata

run_env(metadata, SCHEMA)
