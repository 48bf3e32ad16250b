"""nodes: the serve processes of one archive, for the secret-key check between nodes

Each node registers its ID, version and a fingerprint of its secret key, and refreshes ``seen_at``
every few seconds; a node refuses to start beside a live node with another key.

Revision ID: 0007
Revises: 0006_changefeed_webhooks
Create Date: 2026-12-07 01:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006_changefeed_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("node_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("key_fingerprint", sa.String(32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("nodes")
