"""jobs: study_stability, stability_cursor, jobs, plugins, plugin_results

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 04:00:00.000000
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "study_stability",
        sa.Column("study_fk", BigId, nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("last_instance_at", TS, nullable=False),
        sa.Column("stable_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["study_fk"], ["studies.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("study_fk"),
    )
    cursor = op.create_table(
        "stability_cursor",
        sa.Column("id", BigId, nullable=False),
        sa.Column("floor_at", TS, nullable=False),
        sa.Column("scanned_to", TS, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # Detection starts now: studies already in the archive do not all trigger plugins at once.
    now = datetime.now(UTC)
    op.bulk_insert(cursor, [{"id": 1, "floor_at": now, "scanned_to": now}])

    op.create_table(
        "jobs",
        sa.Column("id", BigId, nullable=False),
        sa.Column("dedupe_key", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("target_version", sa.String(64), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("payload_json", sa.Text(), nullable=False),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=False),
        sa.Column("run_after", TS, nullable=False),
        sa.Column("lease_owner", sa.String(128), nullable=False),
        sa.Column("lease_expires_at", TS, nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("progress_message", sa.String(256), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("result_json", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedupe_key"),
    )
    op.create_index("ix_jobs_claim", "jobs", ["status", "run_after"])
    op.create_index("ix_jobs_lease", "jobs", ["status", "lease_expires_at"])
    op.create_index("ix_jobs_study", "jobs", ["study_uid", "created_at"])
    op.create_index("ix_jobs_target", "jobs", ["target", "target_version", "created_at"])

    op.create_table(
        "plugins",
        sa.Column("id", BigId, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("vendor", sa.String(128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("intended_use", sa.Text(), nullable=False),
        sa.Column("input_filter_json", sa.Text(), nullable=False),
        sa.Column("endpoint_url", sa.String(1024), nullable=False),
        sa.Column("entry_point", sa.String(256), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("registered_by", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", "version", name="uq_plugins_name_version"),
    )

    op.create_table(
        "plugin_results",
        sa.Column("id", BigId, nullable=False),
        sa.Column("job_id", BigId, nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("plugin_name", sa.String(64), nullable=False),
        sa.Column("plugin_version", sa.String(64), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("series_uid", sa.String(64), nullable=False),
        sa.Column("sop_uid", sa.String(64), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("summary_json", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sop_uid"),
    )
    op.create_index("ix_plugin_results_study", "plugin_results", ["study_uid", "plugin_name", "created_at"])
    op.create_index("ix_plugin_results_job", "plugin_results", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_plugin_results_job", table_name="plugin_results")
    op.drop_index("ix_plugin_results_study", table_name="plugin_results")
    op.drop_table("plugin_results")
    op.drop_table("plugins")
    op.drop_index("ix_jobs_target", table_name="jobs")
    op.drop_index("ix_jobs_study", table_name="jobs")
    op.drop_index("ix_jobs_lease", table_name="jobs")
    op.drop_index("ix_jobs_claim", table_name="jobs")
    op.drop_table("jobs")
    op.drop_table("stability_cursor")
    op.drop_table("study_stability")
