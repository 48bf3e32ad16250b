"""schema compatibility: the oldest schema revision whose code still runs against this index

Each upgrade records it (``pacs.index.db.upgrade``), so a node of an older version that meets an
index a newer node already upgraded can tell an expand-only upgrade (it may keep running: a rolling
upgrade) from one that contracted the schema under it (it stops with a sentence).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 04:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schema_compat",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("revision", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("schema_compat")
