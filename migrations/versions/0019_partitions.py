"""partitions (issue 17): a partitions table, partition_fk on the index, users, shares and the outbox;
UIDs unique per partition

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-10 05:00:00.000000

Every existing row lands in partition 1 (``default``) through the columns' server default. The
unique constraints on ``study_uid``, ``series_uid``, ``sop_uid``, (``patient_id``, ``issuer``) and
(``sop_uid``, ``reason``) become unique per partition. That contracts the schema: the ingest code of
earlier revisions upserts with ``ON CONFLICT (study_uid)`` (and the like), which needs the old
constraints, so older nodes must not run on an index upgraded past this revision (``contract``).
On SQLite the five tables are rebuilt (``pacs.index.db.upgrade`` runs migrations with foreign keys
off, as SQLite's own procedure for table changes asks, and checks them afterwards).
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

#: Older code's upserts need the per-UID unique constraints this revision replaces.
contract = True

TS = sa.DateTime(timezone=True)
_NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}
#: (table, old unique constraint (None: the unnamed one on the column), its columns, new name)
_UNIQUES = (
    ("patients", "uq_patients_id_issuer", ("patient_id", "issuer"), "uq_patients_id_issuer"),
    ("studies", None, ("study_uid",), "uq_studies_partition_uid"),
    ("series", None, ("series_uid",), "uq_series_partition_uid"),
    ("instances", None, ("sop_uid",), "uq_instances_partition_uid"),
    ("withheld_instances", "uq_withheld_sop_reason", ("sop_uid", "reason"), "uq_withheld_sop_reason"),
)
_PLAIN = ("outbox", "users", "shares")


def _partition_column() -> sa.Column[int]:
    return sa.Column("partition_fk", sa.Integer(), nullable=False, server_default=sa.text("1"))


def upgrade() -> None:
    partitions = op.create_table(
        "partitions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("ae_titles", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("slug", name="uq_partitions_slug"),
    )
    op.bulk_insert(partitions, [{"id": 1, "slug": "default", "name": "", "ae_titles": "[]",
                                 "created_at": datetime.now(UTC)}])
    sqlite = op.get_bind().dialect.name == "sqlite"
    if not sqlite:  # the explicit id 1 did not advance the id sequence
        op.execute("SELECT setval(pg_get_serial_sequence('partitions', 'id'), 1)")
    for table, old, columns, new in _UNIQUES:
        old_name = old or (f"uq_{table}_{columns[0]}" if sqlite else f"{table}_{columns[0]}_key")
        kwargs = {"recreate": "always", "naming_convention": _NAMING} if sqlite else {}
        with op.batch_alter_table(table, **kwargs) as batch:
            batch.add_column(_partition_column())
            batch.drop_constraint(old_name, type_="unique")
            batch.create_unique_constraint(new, ["partition_fk", *columns])
            if old is None:  # lookups by UID alone (within a partition the constraint's index serves)
                batch.create_index(f"ix_{table}_{columns[0]}", [columns[0]])
    for table in _PLAIN:
        with op.batch_alter_table(table) as batch:
            batch.add_column(_partition_column())
    op.create_index("ix_outbox_partition_seq", "outbox", ["partition_fk", "seq"])
    op.create_index("ix_users_partition", "users", ["partition_fk"])


def downgrade() -> None:
    op.drop_index("ix_users_partition", table_name="users")
    op.drop_index("ix_outbox_partition_seq", table_name="outbox")
    for table in _PLAIN:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("partition_fk")
    sqlite = op.get_bind().dialect.name == "sqlite"
    if not sqlite:  # the explicit id 1 did not advance the id sequence
        op.execute("SELECT setval(pg_get_serial_sequence('partitions', 'id'), 1)")
    for table, old, columns, new in reversed(_UNIQUES):
        with op.batch_alter_table(table, **({"recreate": "always"} if sqlite else {})) as batch:
            if old is None:
                batch.drop_index(f"ix_{table}_{columns[0]}")
            batch.drop_constraint(new, type_="unique")
            batch.create_unique_constraint(old or f"{table}_{columns[0]}_key", list(columns))
            batch.drop_column("partition_fk")
    op.drop_table("partitions")
