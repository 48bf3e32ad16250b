"""The SQL index: patients, studies, series, instances and the outbox (SQLAlchemy 2 typed ORM).

The schema exists only through Alembic migrations (``migrations/``). Attributes that C-FIND and
QIDO-RS match on are columns; patient attributes are copied onto the study row so study queries
need no join. Counts and byte sizes are recomputed under the study's row lock on every ingest
commit, so they stay exact with concurrent writers.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments INTEGER PRIMARY KEY; BigInteger elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


#: Every index row belongs to one partition (:mod:`pacs.partitions`); 1 is the default one.
def partition_column() -> Mapped[int]:
    return mapped_column(Integer, server_default=text("1"))  # server-side: raw inserts (pacs.index.rawsql) omit it



class PartitionRow(Base):
    """A partition (tenant): a hospital with its own AE titles, base path, users and data."""

    __tablename__ = "partitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    ae_titles: Mapped[str] = mapped_column(Text, default="[]")  # JSON list
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (
        UniqueConstraint("partition_fk", "patient_id", "issuer", name="uq_patients_id_issuer"),
        Index("ix_patients_name_norm", "patient_name_norm"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    partition_fk: Mapped[int] = partition_column()
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    patient_name_norm: Mapped[str] = mapped_column(String(324), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")
    study_count: Mapped[int] = mapped_column(Integer, default=0)
    series_count: Mapped[int] = mapped_column(Integer, default=0)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (
        Index("ix_studies_patient_name_norm", "patient_name_norm"),
        Index("ix_studies_patient_id", "patient_id"),
        Index("ix_studies_study_date", "study_date", "study_time"),
        Index("ix_studies_accession", "accession_number"),
        Index("ix_studies_last_instance_at", "last_instance_at"),
        Index("ix_studies_patient_fk", "patient_fk"),
        UniqueConstraint("partition_fk", "study_uid", name="uq_studies_partition_uid"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    partition_fk: Mapped[int] = partition_column()
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    patient_fk: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="RESTRICT"))
    # Patient attributes as they appear in this study (copied for join-free study queries).
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    issuer: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    patient_name_norm: Mapped[str] = mapped_column(String(324), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_time: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    study_id: Mapped[str] = mapped_column(String(16), default="")
    study_description: Mapped[str] = mapped_column(String(64), default="")
    referring_physician: Mapped[str] = mapped_column(String(324), default="")
    referring_physician_norm: Mapped[str] = mapped_column(String(324), default="")
    institution_name: Mapped[str] = mapped_column(String(64), default="")
    modalities: Mapped[str] = mapped_column(String(128), default="")  # backslash-joined, sorted
    specific_charset: Mapped[str] = mapped_column(String(128), default="")
    series_count: Mapped[int] = mapped_column(Integer, default=0)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_instance_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # When somebody last opened the study (viewer, WADO, C-MOVE/C-GET), to the hour: pacs.retention.last_access.
    last_accessed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Series(Base):
    __tablename__ = "series"
    __table_args__ = (
        Index("ix_series_study_fk", "study_fk", "series_number"),
        Index("ix_series_modality", "modality", "study_fk"),
        UniqueConstraint("partition_fk", "series_uid", name="uq_series_partition_uid"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    partition_fk: Mapped[int] = partition_column()
    series_uid: Mapped[str] = mapped_column(String(64), index=True)
    study_fk: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    modality: Mapped[str] = mapped_column(String(16), default="")
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    series_description: Mapped[str] = mapped_column(String(64), default="")
    body_part: Mapped[str] = mapped_column(String(64), default="")
    series_date: Mapped[str] = mapped_column(String(8), default="")
    series_time: Mapped[str] = mapped_column(String(16), default="")
    pps_start_date: Mapped[str] = mapped_column(String(8), default="")
    pps_start_time: Mapped[str] = mapped_column(String(16), default="")
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Instance(Base):
    __tablename__ = "instances"
    __table_args__ = (
        Index("ix_instances_series_fk", "series_fk", "instance_number"),
        Index("ix_instances_study_fk", "study_fk"),
        Index("ix_instances_sop_class", "sop_class_uid"),
        UniqueConstraint("partition_fk", "sop_uid", name="uq_instances_partition_uid"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    partition_fk: Mapped[int] = partition_column()
    sop_uid: Mapped[str] = mapped_column(String(64), index=True)
    series_fk: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    study_fk: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    columns: Mapped[int | None] = mapped_column(Integer, nullable=True)
    number_of_frames: Mapped[int | None] = mapped_column(Integer, nullable=True)
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(256))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))  # of the stored object
    # Of the data set (the bytes after the File Meta Information): two sends of one instance are the
    # same when these are. NULL on rows indexed before revision 0005 until the instance is sent again.
    dataset_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    metadata_json: Mapped[str] = mapped_column(Text)  # PS3.18 F.2, bulk data as BulkDataURI
    frames_json: Mapped[str] = mapped_column(Text, default="[]")  # [[offset, length], ...]
    encapsulated: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutboxEvent(Base):
    """Append-only record of changes, written in the same transaction as the index rows it describes.

    ``seq`` is the change feed's sequence number (:mod:`pacs.events`): NULL when written, assigned
    later in commit order by the feed's sequencer, so a reader paging by it never skips an event
    whose transaction committed after a later number became visible. ``detail_json`` holds what
    an event says beyond its UIDs (a stable transition's generation, an AI result's plugin).
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_study", "study_uid"),
        Index("ix_outbox_seq", "seq", unique=True),
        Index("ix_outbox_sop", "sop_uid"),
        Index("ix_outbox_unsequenced", "id", postgresql_where=text("seq IS NULL"), sqlite_where=text("seq IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event: Mapped[str] = mapped_column(String(32))
    partition_fk: Mapped[int] = partition_column()
    study_uid: Mapped[str] = mapped_column(String(64))
    series_uid: Mapped[str] = mapped_column(String(64), default="")
    sop_uid: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    seq: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    detail_json: Mapped[str | None] = mapped_column(Text, nullable=True)


class WithheldInstance(Base):
    """An instance the access scope hides (:mod:`pacs.access`), by reason.

    ``rejected``: named by an IHE IOCM rejection note (a KOS titled from CID 7011, :mod:`pacs.rejection`);
    hidden from every caller, deleted after the grace period (``delete_after``). ``superseded``: a
    document of a report version a later signed version replaced (:mod:`pacs.reports`); hidden from
    patients and share visitors only. Keyed by SOP Instance UID, not by row: a rejection that
    arrives before its instance, or an instance sent again after its deletion, stays hidden.
    """

    __tablename__ = "withheld_instances"
    __table_args__ = (
        UniqueConstraint("partition_fk", "sop_uid", "reason", name="uq_withheld_sop_reason"),
        Index("ix_withheld_study", "study_uid", "reason"),
        Index("ix_withheld_series", "series_uid", "reason"),
        Index("ix_withheld_delete_after", "delete_after"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    partition_fk: Mapped[int] = partition_column()
    sop_uid: Mapped[str] = mapped_column(String(64))
    study_uid: Mapped[str] = mapped_column(String(64))
    series_uid: Mapped[str] = mapped_column(String(64), default="")
    reason: Mapped[str] = mapped_column(String(16))  # rejected | superseded
    code_value: Mapped[str] = mapped_column(String(16), default="")  # CID 7011 code of the rejection note
    code_meaning: Mapped[str] = mapped_column(String(64), default="")
    note_uid: Mapped[str] = mapped_column(String(64), default="")  # the rejection KOS (or superseding report's SR)
    withheld_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delete_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
