"""Legal holds and deletion marks (migration ``0017``); ``studies.last_accessed_at`` is the index's.

Both are keyed by (partition, Study Instance UID), not by the study's row: a hold set before a study
arrives (or kept while it is sent again) protects it all the same, and the same UID in two partitions
is held or marked in each independently (migration ``0021``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, PrimaryKeyConstraint, String, text
from sqlalchemy.orm import Mapped, mapped_column

from pacs.index.models import Base


class LegalHold(Base):
    """A study no retention rule may touch until the hold is cleared."""

    __tablename__ = "legal_holds"
    __table_args__ = (PrimaryKeyConstraint("partition_fk", "study_uid", name="legal_holds_pkey"),)

    study_uid: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(256), default="")
    held_by: Mapped[str] = mapped_column(String(64), default="")
    partition_fk: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DeletionMark(Base):
    """A study a delete rule matched: deleted by the first run after ``delete_after`` that still finds
    it eligible; the mark is dropped when it no longer is."""

    __tablename__ = "retention_marks"
    __table_args__ = (PrimaryKeyConstraint("partition_fk", "study_uid", name="retention_marks_pkey"),)

    study_uid: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str] = mapped_column(String(64))
    partition_fk: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    marked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delete_after: Mapped[datetime] = mapped_column(DateTime(timezone=True))
