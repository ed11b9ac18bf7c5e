"""Alembic environment of the `scheduler` schema (run through `herald migrate`)."""

from services.scheduler.models import SCHEMA, metadata
from shared.migration_env import run_env

run_env(metadata, SCHEMA)
