"""One row per report version of a study (migration ``0013``).

A study's report starts as a ``draft`` (editable, durable, never shown to patients), becomes
``signed`` with the next version number once its SR, PDF (and key-image KOS) are in the study, and
``superseded`` when a later signed version names it in ``supersedes_id``. Versions are never
deleted: the old text stays readable, marked superseded.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from pacs.index.models import Base, BigId, partition_column


class ReportRow(Base):
    __tablename__ = "reports"
    __table_args__ = (
        Index("ix_reports_study", "partition_fk", "study_uid", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    partition_fk: Mapped[int] = partition_column()
    study_uid: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # draft | signed | superseded
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)  # set when signed: 1, 2, …
    supersedes_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # the version it amends
    modality: Mapped[str] = mapped_column(String(16), default="")  # the template's modality
    sections_json: Mapped[str] = mapped_column(Text)  # {clinical_information, technique, findings, impression}
    key_images_json: Mapped[str] = mapped_column(Text, default="[]")  # [{series_uid, sop_uid, sop_class_uid}]
    ai_findings_json: Mapped[str] = mapped_column(Text, default="[]")  # cited reviewed AI findings
    author: Mapped[str] = mapped_column(String(64))  # the account that wrote the draft ("" for a RIS)
    signer_name: Mapped[str] = mapped_column(String(128), default="")  # the verifying observer
    signed_by: Mapped[str] = mapped_column(String(64), default="")  # the account that signed ("" for a RIS)
    signed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    sr_uid: Mapped[str] = mapped_column(String(64), default="")
    pdf_uid: Mapped[str] = mapped_column(String(64), default="")
    kos_uid: Mapped[str] = mapped_column(String(64), default="")
    source: Mapped[str] = mapped_column(String(16), default="viewer")  # viewer | external (a RIS)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
