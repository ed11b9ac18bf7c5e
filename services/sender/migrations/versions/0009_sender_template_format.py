"""template_catalogue.parameter_format: how Meta holds a template's variables (POSITIONAL
``{{1}}`` or NAMED ``{{first_name}}``), which decides how a send carries its parameters; and
header_format / header_handle: a media header (IMAGE, VIDEO, DOCUMENT; its link comes with each
message) and the sample Meta reviews it with.

Existing rows were created at Meta with their variables renumbered ``{{1}}…``, so they start
POSITIONAL; a sync brings Meta's own value for templates made in Meta's UI.

Revision ID: 0009_sender
Revises: 0008_sender
Create Date: 2026-12-04 21:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_sender"
down_revision: str | None = "0008_sender"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "sender"


def upgrade() -> None:
    op.add_column(
        "template_catalogue",
        sa.Column("parameter_format", sa.Text(), nullable=False, server_default="POSITIONAL"),
        schema=S,
    )
    op.add_column("template_catalogue", sa.Column("header_format", sa.Text(), nullable=True), schema=S)
    op.add_column("template_catalogue", sa.Column("header_handle", sa.Text(), nullable=True), schema=S)


def downgrade() -> None:
    op.drop_column("template_catalogue", "header_handle", schema=S)
    op.drop_column("template_catalogue", "header_format", schema=S)
    op.drop_column("template_catalogue", "parameter_format", schema=S)
