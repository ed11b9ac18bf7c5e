"""Alembic environment of the `pipeline` schema (run through `herald migrate`)."""

from services.pipeline.models import SCHEMA, metadata
from shared.migration_env import run_env

run_env(metadata, SCHEMA)
