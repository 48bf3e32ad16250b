"""Corrections and the instance versions they keep (migration ``0018``).

A ``corrections`` row is one change an admin (or an HL7 ADT feed) made to patient or study attributes:
its kind, what it named, the values before and after, and who made it. Each instance it rewrote keeps
the object it had before as an ``instance_versions`` row (version 1 is the object as first received),
its bytes under the reserved ``_versions/`` prefix of the object store, until retention removes them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pacs.index.models import Base, BigId, partition_column


class CorrectionRow(Base):
    __tablename__ = "corrections"
    __table_args__ = (Index("ix_corrections_created", "created_at"),
                      Index("ix_corrections_partition", "partition_fk", "created_at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    partition_fk: Mapped[int] = partition_column()
    kind: Mapped[str] = mapped_column(String(24))  # a corrections.types.Kind
    source: Mapped[str] = mapped_column(String(16))  # api | cli | hl7
    actor: Mapped[str] = mapped_column(String(64))  # the account (or the HL7 sending application)
    target: Mapped[str] = mapped_column(String(256))  # what it named, in words
    reverts_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    before_json: Mapped[str] = mapped_column(Text)
    after_json: Mapped[str] = mapped_column(Text)
    instance_count: Mapped[int] = mapped_column(Integer)
    study_uids: Mapped[str] = mapped_column(Text)  # JSON list of the studies it touched
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class InstanceVersionRow(Base):
    __tablename__ = "instance_versions"
    __table_args__ = (
        UniqueConstraint("partition_fk", "sop_uid", "version", name="uq_instance_versions_sop_version"),
        Index("ix_instance_versions_correction", "correction_id"),
        Index("ix_instance_versions_key", "object_key"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    partition_fk: Mapped[int] = partition_column()
    sop_uid: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)  # 1: as first received
    study_uid: Mapped[str] = mapped_column(String(64))
    series_uid: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(256))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # The correction that replaced this version (its revert restores it).
    correction_id: Mapped[int] = mapped_column(ForeignKey("corrections.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
