import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from shared.db import outbox_table, processed_events_table

SCHEMA = "ingest"
metadata = sa.MetaData(schema=SCHEMA)

#: every CloudEvent accepted over HTTP, once: CloudEvents identifies an event by (source, id)
received_events = sa.Table(
    "received_events",
    metadata,
    sa.Column("tenant_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

outbox = outbox_table(metadata, SCHEMA)
processed_events = processed_events_table(metadata, SCHEMA)
