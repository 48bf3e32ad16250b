"""routing rules: routing_cursors, routing_forwards

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 02:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "routing_cursors",
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("rule"),
    )
    op.create_table(
        "routing_forwards",
        sa.Column("id", BigId, nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("series_uid", sa.String(64), nullable=False),
        sa.Column("sop_uid", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_attempt_at", TS, nullable=True),
        sa.Column("sent_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("rule", "destination", "seq", "sop_uid", name="uq_routing_forwards_event"),
    )
    op.create_index("ix_routing_forwards_lane", "routing_forwards", ["status", "destination", "study_uid", "id"])
    op.create_index("ix_routing_forwards_destination", "routing_forwards", ["destination", "status", "id"])


def downgrade() -> None:
    op.drop_index("ix_routing_forwards_destination", table_name="routing_forwards")
    op.drop_index("ix_routing_forwards_lane", table_name="routing_forwards")
    op.drop_table("routing_forwards")
    op.drop_table("routing_cursors")
