"""The worklist tables (migration ``0012``).

``worklist_items`` holds one scheduled procedure step per order, keyed by its Accession Number
(what the RIS, the modality and the study share); patient attributes are copied onto it because
the modality needs them before the archive has any study of the patient. A cancelled order stays
(status ``CANCELED``) so that an MPPS arriving late still finds it. ``performed_steps`` holds each
Modality Performed Procedure Step a modality created, linked to the order it performed when one
matches.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pacs.index.models import Base, BigId, partition_column


class WorklistItem(Base):
    __tablename__ = "worklist_items"
    __table_args__ = (
        Index("ix_worklist_items_station", "station_aet", "start_date"),
        Index("ix_worklist_items_start", "start_date", "start_time"),
        Index("ix_worklist_items_patient_id", "patient_id"),
        Index("ix_worklist_items_patient_name_norm", "patient_name_norm"),
        UniqueConstraint("partition_fk", "accession_number", name="uq_worklist_items_partition_accession"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    partition_fk: Mapped[int] = partition_column()
    accession_number: Mapped[str] = mapped_column(String(16))
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    issuer: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    patient_name_norm: Mapped[str] = mapped_column(String(324), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")
    requested_procedure_id: Mapped[str] = mapped_column(String(16), default="")
    requested_procedure: Mapped[str] = mapped_column(String(64), default="")  # its description
    step_id: Mapped[str] = mapped_column(String(16), default="")  # Scheduled Procedure Step ID
    modality: Mapped[str] = mapped_column(String(16), default="")
    station_aet: Mapped[str] = mapped_column(String(16), default="")
    start_date: Mapped[str] = mapped_column(String(8), default="")
    start_time: Mapped[str] = mapped_column(String(16), default="")
    study_uid: Mapped[str] = mapped_column(String(64), default="")
    referring_physician: Mapped[str] = mapped_column(String(324), default="")
    status: Mapped[str] = mapped_column(String(16), default="SCHEDULED")  # PS3.3 C.4.10 defined terms
    source: Mapped[str] = mapped_column(String(16), default="api")  # "hl7" or "api"
    placer_order: Mapped[str] = mapped_column(String(64), default="")
    filler_order: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PerformedStep(Base):
    """One Modality Performed Procedure Step (PS3.4 F.7), as its N-CREATE and N-SETs left it."""

    __tablename__ = "performed_steps"
    __table_args__ = (Index("ix_performed_steps_item", "item_fk"),)

    sop_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    partition_fk: Mapped[int] = partition_column()
    item_fk: Mapped[int | None] = mapped_column(ForeignKey("worklist_items.id", ondelete="SET NULL"), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # IN PROGRESS, COMPLETED, DISCONTINUED
    accession_number: Mapped[str] = mapped_column(String(16), default="")
    study_uid: Mapped[str] = mapped_column(String(64), default="")
    step_id: Mapped[str] = mapped_column(String(16), default="")  # Performed Procedure Step ID
    station_aet: Mapped[str] = mapped_column(String(16), default="")  # Performed Station AE Title
    modality: Mapped[str] = mapped_column(String(16), default="")
    calling_aet: Mapped[str] = mapped_column(String(16), default="")
    start_date: Mapped[str] = mapped_column(String(8), default="")
    start_time: Mapped[str] = mapped_column(String(16), default="")
    end_date: Mapped[str] = mapped_column(String(8), default="")
    end_time: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
