"""reports: physicians' report versions (issue 13): drafts, signed versions, amendments

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 03:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("id", BigId, nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("supersedes_id", sa.BigInteger(), nullable=True),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("sections_json", sa.Text(), nullable=False),
        sa.Column("key_images_json", sa.Text(), nullable=False),
        sa.Column("ai_findings_json", sa.Text(), nullable=False),
        sa.Column("author", sa.String(64), nullable=False),
        sa.Column("signer_name", sa.String(128), nullable=False),
        sa.Column("signed_by", sa.String(64), nullable=False),
        sa.Column("signed_at", TS, nullable=True),
        sa.Column("sr_uid", sa.String(64), nullable=False),
        sa.Column("pdf_uid", sa.String(64), nullable=False),
        sa.Column("kos_uid", sa.String(64), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reports_study", "reports", ["study_uid", "status"])


def downgrade() -> None:
    op.drop_index("ix_reports_study", table_name="reports")
    op.drop_table("reports")
