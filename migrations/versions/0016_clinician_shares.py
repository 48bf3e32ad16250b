"""clinician shares (issue 13): a share link may also carry a read-only DICOMweb bearer token

``shares.dicomweb_token_hash`` holds the SHA-256 of that token (NULL for a share made for a
patient's phone only); ``shares.recipient`` names the clinician or hospital it was made for.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-08 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shares") as batch:
        batch.add_column(sa.Column("dicomweb_token_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("recipient", sa.String(128), nullable=False, server_default=""))
    op.create_index("ux_shares_dicomweb_token", "shares", ["dicomweb_token_hash"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_shares_dicomweb_token", table_name="shares")
    with op.batch_alter_table("shares") as batch:
        batch.drop_column("recipient")
        batch.drop_column("dicomweb_token_hash")
