"""modality worklist: worklist_items, performed_steps

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "worklist_items",
        sa.Column("id", BigId, nullable=False),
        sa.Column("accession_number", sa.String(16), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("issuer", sa.String(64), nullable=False),
        sa.Column("patient_name", sa.String(324), nullable=False),
        sa.Column("patient_name_norm", sa.String(324), nullable=False),
        sa.Column("birth_date", sa.String(8), nullable=False),
        sa.Column("sex", sa.String(16), nullable=False),
        sa.Column("requested_procedure_id", sa.String(16), nullable=False),
        sa.Column("requested_procedure", sa.String(64), nullable=False),
        sa.Column("step_id", sa.String(16), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("station_aet", sa.String(16), nullable=False),
        sa.Column("start_date", sa.String(8), nullable=False),
        sa.Column("start_time", sa.String(16), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("referring_physician", sa.String(324), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("placer_order", sa.String(64), nullable=False),
        sa.Column("filler_order", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("accession_number"),
    )
    op.create_index("ix_worklist_items_station", "worklist_items", ["station_aet", "start_date"])
    op.create_index("ix_worklist_items_start", "worklist_items", ["start_date", "start_time"])
    op.create_index("ix_worklist_items_patient_id", "worklist_items", ["patient_id"])
    op.create_index("ix_worklist_items_patient_name_norm", "worklist_items", ["patient_name_norm"])
    op.create_table(
        "performed_steps",
        sa.Column("sop_uid", sa.String(64), nullable=False),
        sa.Column("item_fk", BigId, sa.ForeignKey("worklist_items.id", ondelete="SET NULL"), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("accession_number", sa.String(16), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("step_id", sa.String(16), nullable=False),
        sa.Column("station_aet", sa.String(16), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("calling_aet", sa.String(16), nullable=False),
        sa.Column("start_date", sa.String(8), nullable=False),
        sa.Column("start_time", sa.String(16), nullable=False),
        sa.Column("end_date", sa.String(8), nullable=False),
        sa.Column("end_time", sa.String(16), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("sop_uid"),
    )
    op.create_index("ix_performed_steps_item", "performed_steps", ["item_fk"])


def downgrade() -> None:
    op.drop_index("ix_performed_steps_item", table_name="performed_steps")
    op.drop_table("performed_steps")
    op.drop_index("ix_worklist_items_patient_name_norm", table_name="worklist_items")
    op.drop_index("ix_worklist_items_patient_id", table_name="worklist_items")
    op.drop_index("ix_worklist_items_start", table_name="worklist_items")
    op.drop_index("ix_worklist_items_station", table_name="worklist_items")
    op.drop_table("worklist_items")
