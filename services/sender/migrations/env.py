"""Alembic environment of the `sender` schema (run through `herald migrate`)."""

from services.sender.models import SCHEMA, metadata
from shared.migration_env import run_env

run_env(metadata, SCHEMA)
