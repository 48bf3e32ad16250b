"""partition jobs (issue 17): jobs, plugin results and enablement, benchmarks, routing, webhooks,
retention and the audit log carry their partition

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-11 05:00:00.000000

Expand only: every new column has the default partition's id (1) as its server default, so rows
written before (and by nodes still running the previous revision, which know only the default
partition) land in partition 1, where they belong. Per-partition plugin enablement is a new table:
a plugin version runs in a partition other than the default one only where a row enables it there.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)

# (ai_reviews gets its partition with the lookups' revision, 0021.)
_TABLES = ("jobs", "plugin_results", "benchmarks", "routing_cursors", "routing_forwards", "webhooks",
           "webhook_deliveries", "retention_marks", "legal_holds", "audit_events")
_INDEXES = {  # name: (table, columns)
    "ix_jobs_partition": ("jobs", ["partition_fk", "created_at"]),
    "ix_plugin_results_partition": ("plugin_results", ["partition_fk", "study_uid"]),
    "ix_benchmarks_partition": ("benchmarks", ["partition_fk", "name"]),
    "ix_webhooks_partition": ("webhooks", ["partition_fk"]),
    "ix_audit_events_partition": ("audit_events", ["partition_fk", "at"]),
}


def upgrade() -> None:
    # A plain ADD COLUMN (never a table rebuild on SQLite): audit_events keeps its append-only triggers.
    for table in _TABLES:
        op.add_column(table, sa.Column("partition_fk", sa.Integer(), nullable=False, server_default=sa.text("1")))
    for name, (table, columns) in _INDEXES.items():
        op.create_index(name, table, columns)
    op.create_table(
        "plugin_enablements",
        sa.Column("partition_fk", sa.Integer(), nullable=False),
        sa.Column("plugin_fk", BigId, nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False, server_default=""),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["partition_fk"], ["partitions.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["plugin_fk"], ["plugins.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("partition_fk", "plugin_fk"),
    )


def downgrade() -> None:
    op.drop_table("plugin_enablements")
    for name, (table, _columns) in _INDEXES.items():
        op.drop_index(name, table_name=table)
    for table in _TABLES:  # SQLite 3.35+ drops a column in place too (the triggers stay)
        op.execute(f"ALTER TABLE {table} DROP COLUMN partition_fk")
