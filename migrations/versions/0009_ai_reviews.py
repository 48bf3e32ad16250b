"""ai_reviews: physicians' decisions on AI findings (issue 13): accepted, rejected or edited

One row per decision (the newest per finding is current, the older ones are its history), with the
SR that records it in the study; accepted and edited findings' SRs are released to patients.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 02:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ai_reviews",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("report_uid", sa.String(64), nullable=False),
        sa.Column("finding_key", sa.String(128), nullable=False),
        sa.Column("plugin_name", sa.String(64), nullable=False),
        sa.Column("plugin_version", sa.String(64), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("changes_json", sa.Text(), nullable=False),
        sa.Column("reviewer", sa.String(64), nullable=False),
        sa.Column("review_sr_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_ai_reviews_finding", "ai_reviews", ["report_uid", "finding_key"])
    op.create_index("ix_ai_reviews_study", "ai_reviews", ["study_uid"])
    op.create_index("ix_ai_reviews_plugin", "ai_reviews", ["plugin_name", "plugin_version"])


def downgrade() -> None:
    op.drop_table("ai_reviews")
