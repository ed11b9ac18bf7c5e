"""Alembic environment of the `ingest` schema (run through `herald migrate`)."""

from services.ingest.models import SCHEMA, metadata
from shared.migrate import run_env

run_env(metadata, SCHEMA)
