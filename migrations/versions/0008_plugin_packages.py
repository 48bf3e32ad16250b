"""plugin_packages, plugins.package_digest, benchmark_evaluations.plugin_digest: algorithm packages

A vendor's package file is recorded when uploaded (its SHA-256 digest, manifest and uploader) and
marked admitted when an admin installs it; its plugin version then has a ``plugins`` row with
``source = 'package'`` and the digest, which every evaluation of it records.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 01:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "plugin_packages",
        sa.Column("id", BigId, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("vendor", sa.String(128), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("filename", sa.String(256), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("manifest_json", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("uploaded_by", sa.String(64), nullable=False),
        sa.Column("admitted_by", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("admitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("name", "version", name="uq_plugin_packages_name_version"),
    )
    op.add_column("plugins", sa.Column("package_digest", sa.String(64), nullable=False, server_default=""))
    op.add_column("benchmark_evaluations",
                  sa.Column("plugin_digest", sa.String(64), nullable=False, server_default=""))  # fmt: skip


def downgrade() -> None:
    with op.batch_alter_table("benchmark_evaluations") as batch:
        batch.drop_column("plugin_digest")
    with op.batch_alter_table("plugins") as batch:
        batch.drop_column("package_digest")
    op.drop_table("plugin_packages")
