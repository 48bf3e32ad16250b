"""change feed and webhooks: outbox.seq / outbox.detail_json, webhooks, webhook_deliveries

The change feed (pacs.events) pages by ``outbox.seq``, a number the feed's sequencer gives to
committed events in commit order (row ids are taken in insert order, which concurrent writers on
PostgreSQL commit out of). Events already in the outbox were all committed before this revision
ran: they are numbered by their ids here.

Revision ID: 0006_changefeed_webhooks
Revises: 0005
Create Date: 2026-12-07 02:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_changefeed_webhooks"
down_revision = "0005"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("outbox", sa.Column("seq", sa.BigInteger(), nullable=True))
    op.add_column("outbox", sa.Column("detail_json", sa.Text(), nullable=True))
    op.execute("UPDATE outbox SET seq = id")
    op.create_index("ix_outbox_seq", "outbox", ["seq"], unique=True)
    op.create_index("ix_outbox_sop", "outbox", ["sop_uid"])
    op.create_index("ix_outbox_unsequenced", "outbox", ["id"], postgresql_where=sa.text("seq IS NULL"),
                    sqlite_where=sa.text("seq IS NULL"))

    op.create_table(
        "webhooks",
        sa.Column("id", BigId, nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("description", sa.String(256), nullable=False),
        sa.Column("actions", sa.String(256), nullable=False),
        sa.Column("secret_nonce", sa.String(64), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", BigId, nullable=False),
        sa.Column("webhook_fk", BigId, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_attempt_at", TS, nullable=True),
        sa.Column("delivered_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["webhook_fk"], ["webhooks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("webhook_fk", "seq", name="uq_webhook_deliveries_event"),
    )
    op.create_index("ix_webhook_deliveries_lane", "webhook_deliveries", ["status", "webhook_fk", "study_uid", "id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_lane", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhooks")
    op.drop_index("ix_outbox_unsequenced", table_name="outbox")
    op.drop_index("ix_outbox_sop", table_name="outbox")
    op.drop_index("ix_outbox_seq", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("detail_json")
        batch.drop_column("seq")
