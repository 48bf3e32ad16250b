"""corrections: corrections with instance versions, and withheld instances (IOCM rejection, superseded reports)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-08 03:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "corrections",
        sa.Column("id", BigId, nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("reverts_id", sa.BigInteger(), nullable=True),
        sa.Column("before_json", sa.Text(), nullable=False),
        sa.Column("after_json", sa.Text(), nullable=False),
        sa.Column("instance_count", sa.Integer(), nullable=False),
        sa.Column("study_uids", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_corrections_created", "corrections", ["created_at"])
    op.create_table(
        "instance_versions",
        sa.Column("id", BigId, nullable=False),
        sa.Column("sop_uid", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("series_uid", sa.String(64), nullable=False),
        sa.Column("object_key", sa.String(256), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("correction_id", BigId, sa.ForeignKey("corrections.id", ondelete="RESTRICT"), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sop_uid", "version", name="uq_instance_versions_sop_version"),
    )
    op.create_index("ix_instance_versions_correction", "instance_versions", ["correction_id"])
    op.create_index("ix_instance_versions_key", "instance_versions", ["object_key"])
    op.create_table(
        "withheld_instances",
        sa.Column("id", BigId, nullable=False),
        sa.Column("sop_uid", sa.String(64), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("series_uid", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("code_value", sa.String(16), nullable=False),
        sa.Column("code_meaning", sa.String(64), nullable=False),
        sa.Column("note_uid", sa.String(64), nullable=False),
        sa.Column("withheld_at", TS, nullable=False),
        sa.Column("delete_after", TS, nullable=True),
        sa.Column("deleted_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sop_uid", "reason", name="uq_withheld_sop_reason"),
    )
    op.create_index("ix_withheld_study", "withheld_instances", ["study_uid", "reason"])
    op.create_index("ix_withheld_series", "withheld_instances", ["series_uid", "reason"])
    op.create_index("ix_withheld_delete_after", "withheld_instances", ["delete_after"])
    # The documents of report versions superseded before this revision: withheld from patients and
    # share visitors from now on, as those superseded later are.
    for column in ("sr_uid", "pdf_uid", "kos_uid"):
        op.execute(sa.text(
            "INSERT INTO withheld_instances (sop_uid, study_uid, series_uid, reason, code_value, code_meaning, "
            "note_uid, withheld_at) "
            f"SELECT r.{column}, r.study_uid, COALESCE(s.series_uid, ''), 'superseded', '', 'superseded report', "
            "'', r.updated_at FROM reports r "
            f"LEFT JOIN instances i ON i.sop_uid = r.{column} LEFT JOIN series s ON s.id = i.series_fk "
            f"WHERE r.status = 'superseded' AND r.{column} <> '' AND NOT EXISTS (SELECT 1 FROM withheld_instances w "
            f"WHERE w.sop_uid = r.{column} AND w.reason = 'superseded')"))


def downgrade() -> None:
    op.drop_index("ix_withheld_delete_after", table_name="withheld_instances")
    op.drop_index("ix_withheld_series", table_name="withheld_instances")
    op.drop_index("ix_withheld_study", table_name="withheld_instances")
    op.drop_table("withheld_instances")
    op.drop_index("ix_instance_versions_key", table_name="instance_versions")
    op.drop_index("ix_instance_versions_correction", table_name="instance_versions")
    op.drop_table("instance_versions")
    op.drop_index("ix_corrections_created", table_name="corrections")
    op.drop_table("corrections")
