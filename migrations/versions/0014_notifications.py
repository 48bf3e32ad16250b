"""notifications (issue 13): users.email, notification_deliveries, notification_cursors

The report notices' cursor starts after the newest change feed event at upgrade time: an archive
that already holds signed reports does not mail its patients about them.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("email", sa.String(254), nullable=True))
    cursors = op.create_table(
        "notification_cursors",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "notification_deliveries",
        sa.Column("id", BigId, nullable=False),
        sa.Column("notification", sa.String(96), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("recipient", sa.String(254), nullable=False),
        sa.Column("first_name", sa.String(64), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("share_id", sa.BigInteger(), nullable=True),
        sa.Column("message_key", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_attempt_at", TS, nullable=True),
        sa.Column("sent_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("notification", "recipient", name="uq_notification_deliveries_recipient"),
    )
    op.create_index("ix_notification_deliveries_status", "notification_deliveries", ["status", "id"])
    newest = op.get_bind().execute(sa.text("SELECT COALESCE(MAX(seq), 0) FROM outbox")).scalar_one()
    op.bulk_insert(cursors, [{"name": "report.signed", "last_seq": int(newest or 0)}])


def downgrade() -> None:
    op.drop_index("ix_notification_deliveries_status", table_name="notification_deliveries")
    op.drop_table("notification_deliveries")
    op.drop_table("notification_cursors")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("email")
