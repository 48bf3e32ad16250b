"""retention (issue 17): studies.last_accessed_at, legal_holds, retention_marks

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-09 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("last_accessed_at", TS, nullable=True))
    op.create_table(
        "legal_holds",
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(256), nullable=False),
        sa.Column("held_by", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("study_uid"),
    )
    op.create_table(
        "retention_marks",
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("marked_at", TS, nullable=False),
        sa.Column("delete_after", TS, nullable=False),
        sa.PrimaryKeyConstraint("study_uid"),
    )


def downgrade() -> None:
    op.drop_table("retention_marks")
    op.drop_table("legal_holds")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("last_accessed_at")
