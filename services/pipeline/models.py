import sqlalchemy as sa

from shared.db import outbox_table, processed_events_table

SCHEMA = "pipeline"
metadata = sa.MetaData(schema=SCHEMA)

outbox = outbox_table(metadata, SCHEMA)
processed_events = processed_events_table(metadata, SCHEMA)
