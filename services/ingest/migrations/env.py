"""Alembic environment of the `ingest` schema (run through `herald migrate`)."""

from services.ingest.models import SCHEMA, metadata
from shared.migration_env import run_env

run_env(metadata, SCHEMA)
