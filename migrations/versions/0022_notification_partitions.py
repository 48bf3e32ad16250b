"""notification partitions (issue 17): patient message deliveries carry their partition

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 16:20:00.000000

Expand only: the new column has the default partition's id (1) as its server default, so deliveries
written before (and by nodes still on 0021, which notify about the default partition's shares and
reports only) land in partition 1, where they belong. The patient message log and its re-sends
answer each partition's admins with their partition's deliveries only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("notification_deliveries") as batch:
        batch.add_column(sa.Column("partition_fk", sa.Integer(), nullable=False, server_default=sa.text("1")))
    op.create_index("ix_notification_deliveries_partition", "notification_deliveries", ["partition_fk", "id"])


def downgrade() -> None:
    op.drop_index("ix_notification_deliveries_partition", table_name="notification_deliveries")
    with op.batch_alter_table("notification_deliveries") as batch:
        batch.drop_column("partition_fk")
