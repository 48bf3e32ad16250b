"""One row per review decision on one AI finding (migration ``0006``); the newest per finding is current.

A finding is named by the AI report's SOP Instance UID and its key in that report (the measurement
group's tracking identifier). ``review_sr_uid`` is the physician's SR that records the decision in
the study (``ai_plugins.sr.review``); accepted and edited findings' SRs are what patients see.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from pacs.index.models import Base, BigId


class AiReview(Base):
    __tablename__ = "ai_reviews"
    __table_args__ = (
        Index("ix_ai_reviews_finding", "report_uid", "finding_key"),
        Index("ix_ai_reviews_study", "study_uid"),
        Index("ix_ai_reviews_plugin", "plugin_name", "plugin_version"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64))
    report_uid: Mapped[str] = mapped_column(String(64))  # the AI's SR
    finding_key: Mapped[str] = mapped_column(String(128))
    plugin_name: Mapped[str] = mapped_column(String(64))
    plugin_version: Mapped[str] = mapped_column(String(64), default="")
    decision: Mapped[str] = mapped_column(String(16))  # accepted | rejected | edited
    label: Mapped[str] = mapped_column(String(64))  # as reviewed
    changes_json: Mapped[str] = mapped_column(Text, default="{}")  # {field: [AI's value, physician's value]}
    reviewer: Mapped[str] = mapped_column(String(64))
    review_sr_uid: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
