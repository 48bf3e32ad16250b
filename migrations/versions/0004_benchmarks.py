"""benchmarks: benchmarks, benchmark_versions, benchmark_cases, benchmark_copies,
benchmark_evaluations, benchmark_predictions

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "benchmarks",
        sa.Column("id", BigId, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("task", sa.String(16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("label_schema_json", sa.Text(), nullable=False),
        sa.Column("metrics_json", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "benchmark_versions",
        sa.Column("id", BigId, nullable=False),
        sa.Column("benchmark_fk", BigId, nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("change", sa.String(256), nullable=False),
        sa.Column("split_seed", sa.BigInteger(), nullable=True),
        sa.Column("test_fraction", sa.Float(), nullable=True),
        sa.Column("n_cases", sa.Integer(), nullable=False),
        sa.Column("n_labelled", sa.Integer(), nullable=False),
        sa.Column("n_dev", sa.Integer(), nullable=False),
        sa.Column("n_test", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["benchmark_fk"], ["benchmarks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("benchmark_fk", "number", name="uq_benchmark_versions_number"),
    )
    op.create_index("ix_benchmark_versions_digest", "benchmark_versions", ["benchmark_fk", "digest"])
    op.create_table(
        "benchmark_cases",
        sa.Column("id", BigId, nullable=False),
        sa.Column("version_fk", BigId, nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("label_json", sa.Text(), nullable=True),
        sa.Column("split", sa.String(8), nullable=False),
        sa.Column("stratum", sa.String(64), nullable=False),
        sa.Column("sex", sa.String(16), nullable=False),
        sa.Column("age_band", sa.String(16), nullable=False),
        sa.Column("manufacturer", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["version_fk"], ["benchmark_versions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("version_fk", "study_uid", name="uq_benchmark_cases_study"),
    )
    op.create_index("ix_benchmark_cases_split", "benchmark_cases", ["split", "study_uid"])
    op.create_table(
        "benchmark_copies",
        sa.Column("id", BigId, nullable=False),
        sa.Column("benchmark_fk", BigId, nullable=False),
        sa.Column("purpose", sa.String(8), nullable=False),
        sa.Column("source_study_uid", sa.String(64), nullable=False),
        sa.Column("copy_study_uid", sa.String(64), nullable=False),
        sa.Column("n_instances", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["benchmark_fk"], ["benchmarks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("copy_study_uid"),
        sa.UniqueConstraint("benchmark_fk", "purpose", "source_study_uid", name="uq_benchmark_copies"),
    )
    op.create_table(
        "benchmark_evaluations",
        sa.Column("id", BigId, nullable=False),
        sa.Column("benchmark_fk", BigId, nullable=False),
        sa.Column("version_fk", BigId, nullable=False),
        sa.Column("plugin_name", sa.String(64), nullable=False),
        sa.Column("plugin_version", sa.String(64), nullable=False),
        sa.Column("plugin_source", sa.String(16), nullable=False),
        sa.Column("cloudfilm_version", sa.String(32), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("requested_by", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("n_cases", sa.Integer(), nullable=False),
        sa.Column("n_failed", sa.Integer(), nullable=False),
        sa.Column("main_metric", sa.String(32), nullable=False),
        sa.Column("main_value", sa.Float(), nullable=True),
        sa.Column("ci_low", sa.Float(), nullable=True),
        sa.Column("ci_high", sa.Float(), nullable=True),
        sa.Column("metrics_json", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.ForeignKeyConstraint(["benchmark_fk"], ["benchmarks.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["version_fk"], ["benchmark_versions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_benchmark_evaluations_rate", "benchmark_evaluations",
                    ["benchmark_fk", "plugin_name", "created_at"])  # fmt: skip
    op.create_index("ix_benchmark_evaluations_version", "benchmark_evaluations", ["version_fk", "status"])
    op.create_table(
        "benchmark_predictions",
        sa.Column("id", BigId, nullable=False),
        sa.Column("evaluation_fk", BigId, nullable=False),
        sa.Column("case_fk", BigId, nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("output_json", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["evaluation_fk"], ["benchmark_evaluations.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["case_fk"], ["benchmark_cases.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("evaluation_fk", "case_fk", name="uq_benchmark_predictions_case"),
    )
    op.create_index("ix_benchmark_predictions_status", "benchmark_predictions", ["evaluation_fk", "status"])


def downgrade() -> None:
    op.drop_table("benchmark_predictions")
    op.drop_table("benchmark_evaluations")
    op.drop_table("benchmark_copies")
    op.drop_table("benchmark_cases")
    op.drop_table("benchmark_versions")
    op.drop_table("benchmarks")
