"""instances.dataset_sha256: the SHA-256 of the data set (the bytes after the File Meta Information)

Two sends of one instance are the same when their data sets are, whichever route or calling AE
they came by (the File Meta Information differs: Source AE Title, Implementation Class UID).
Rows indexed before this revision keep NULL: ingest computes the digest from the stored object
the first time the same SOP Instance UID arrives again, and records it. Lookups go through the
unique SOP Instance UID, so the column needs no index of its own.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("instances", sa.Column("dataset_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("dataset_sha256")
