"""partition lookups (issue 17): partition_fk on reports, corrections, instance versions, worklist
orders, performed procedure steps and AI reviews; accession numbers, instance versions and benchmark
names unique per partition; legal holds and deletion marks keyed by (partition, Study Instance UID)

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-11 05:00:00.000000

Every existing row lands in partition 1 (``default``) through the columns' server default. A
worklist order's Accession Number becomes unique per partition (two hospitals may use the same
one), and so does an instance version's (SOP Instance UID, version). That contracts the schema: the
worklist code of earlier revisions finds an order by its accession number alone and relies on the
unique constraint to turn two simultaneous first orders into one, so older nodes must not run on an
index upgraded past this revision (``contract``). On SQLite the two tables are rebuilt, as in 0019.

Benchmark names become unique per partition, and ``legal_holds`` and ``retention_marks`` (their
``partition_fk`` came with 0020) get the primary key (partition_fk, study_uid): the same Study
Instance UID may be held or marked for deletion in two partitions independently. Earlier code holds
and marks by the UID alone (``on_conflict`` on it), one more reason this revision contracts. On
SQLite these three tables are rebuilt too; on PostgreSQL the keys are replaced in place. A downgrade
fails while two partitions hold, mark or name the same UID or benchmark name.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

#: Older worklist code needs the per-accession unique constraint this revision replaces.
contract = True

_NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}
#: (table, old unique constraint (None: the unnamed one on the column), its columns, new name)
_UNIQUES = (
    ("worklist_items", None, ("accession_number",), "uq_worklist_items_partition_accession"),
    ("instance_versions", "uq_instance_versions_sop_version", ("sop_uid", "version"),
     "uq_instance_versions_sop_version"),
)
#: (table, old unique constraint as in _UNIQUES, columns, new name): partition_fk came with 0020
_SCOPED = (("benchmarks", None, ("name",), "uq_benchmarks_partition_name"),)
#: tables keyed by study_uid alone before, by (partition_fk, study_uid) after
_KEYED = ("legal_holds", "retention_marks")
_PLAIN = ("reports", "corrections", "performed_steps", "ai_reviews")
#: (index, table, columns before, columns after): lookups by study now name the partition first
_INDEXES = (
    ("ix_reports_study", "reports", ("study_uid", "status"), ("partition_fk", "study_uid", "status")),
    ("ix_ai_reviews_study", "ai_reviews", ("study_uid",), ("partition_fk", "study_uid")),
)


def _partition_column() -> sa.Column[int]:
    return sa.Column("partition_fk", sa.Integer(), nullable=False, server_default=sa.text("1"))


def _old_name(table: str, old: str | None, columns: tuple[str, ...], sqlite: bool) -> str:
    """The name of the unique constraint a table had before (unnamed ones as each dialect names them)."""
    return old or (f"uq_{table}_{columns[0]}" if sqlite else f"{table}_{columns[0]}_key")


def _keyed_columns(table: str) -> list[sa.Column[Any]]:
    """``table``'s columns as 0017 and 0020 made them."""
    ts = sa.DateTime(timezone=True)
    own = {
        "legal_holds": [sa.Column("reason", sa.String(256), nullable=False),
                        sa.Column("held_by", sa.String(64), nullable=False),
                        sa.Column("created_at", ts, nullable=False)],
        "retention_marks": [sa.Column("rule", sa.String(64), nullable=False),
                            sa.Column("marked_at", ts, nullable=False),
                            sa.Column("delete_after", ts, nullable=False)],
    }[table]  # fmt: skip
    return [sa.Column("study_uid", sa.String(64), nullable=False), *own, _partition_column()]


def _rekey(table: str, columns: list[str], *, sqlite: bool) -> None:
    """Make ``columns`` the primary key of ``table`` (PostgreSQL: in place; SQLite: a rebuild)."""
    if sqlite:
        key = sa.PrimaryKeyConstraint(*columns, name=f"{table}_pkey")
        shape = sa.Table(table, sa.MetaData(), *_keyed_columns(table), key)
        with op.batch_alter_table(table, copy_from=shape, recreate="always"):
            pass
        return
    op.drop_constraint(f"{table}_pkey", table, type_="primary")
    op.create_primary_key(f"{table}_pkey", table, columns)


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table, old, columns, new in _UNIQUES:
        old_name = _old_name(table, old, columns, sqlite)
        kwargs = {"recreate": "always", "naming_convention": _NAMING} if sqlite else {}
        with op.batch_alter_table(table, **kwargs) as batch:
            batch.add_column(_partition_column())
            batch.drop_constraint(old_name, type_="unique")
            batch.create_unique_constraint(new, ["partition_fk", *columns])
    for table, old, columns, new in _SCOPED:
        old_name = _old_name(table, old, columns, sqlite)
        kwargs = {"recreate": "always", "naming_convention": _NAMING} if sqlite else {}
        with op.batch_alter_table(table, **kwargs) as batch:
            batch.drop_constraint(old_name, type_="unique")
            batch.create_unique_constraint(new, ["partition_fk", *columns])
    for table in _KEYED:
        _rekey(table, ["partition_fk", "study_uid"], sqlite=sqlite)
    for table in _PLAIN:
        with op.batch_alter_table(table) as batch:
            batch.add_column(_partition_column())
    for name, table, _before, after in _INDEXES:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, list(after))
    op.create_index("ix_corrections_partition", "corrections", ["partition_fk", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_corrections_partition", table_name="corrections")
    for name, table, before, _after in _INDEXES:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, list(before))
    for table in _PLAIN:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("partition_fk")
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table in _KEYED:
        _rekey(table, ["study_uid"], sqlite=sqlite)
    for table, old, columns, new in _SCOPED:
        with op.batch_alter_table(table, **({"recreate": "always"} if sqlite else {})) as batch:
            batch.drop_constraint(new, type_="unique")
            batch.create_unique_constraint(_old_name(table, old, columns, sqlite), list(columns))
    for table, old, columns, new in reversed(_UNIQUES):
        with op.batch_alter_table(table, **({"recreate": "always"} if sqlite else {})) as batch:
            batch.drop_constraint(new, type_="unique")
            batch.create_unique_constraint(_old_name(table, old, columns, sqlite), list(columns))
            batch.drop_column("partition_fk")
