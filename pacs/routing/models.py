"""The routing tables (migration ``0010``).

``routing_cursors`` holds how far each rule has read the change feed: a rule sees every event
after its cursor exactly once, whichever worker (on whichever node) dispatches, because the cursor
moves only by a conditional update in the transaction that writes the rule's forwards.
``routing_forwards`` holds one row per instance, rule and destination: pending until the peer
stored it, dead once its attempts ran out (``status_code`` keeps the peer's DIMSE status or
HTTP code, ``last_error`` its sentence).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from pacs.index.models import Base, BigId


class RoutingCursor(Base):
    __tablename__ = "routing_cursors"

    rule: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    partition_fk: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RoutingForward(Base):
    """One instance to send to one destination because of one rule's match on one feed event."""

    __tablename__ = "routing_forwards"
    __table_args__ = (
        UniqueConstraint("rule", "destination", "seq", "sop_uid", name="uq_routing_forwards_event"),
        Index("ix_routing_forwards_lane", "status", "destination", "study_uid", "id"),
        Index("ix_routing_forwards_destination", "destination", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    rule: Mapped[str] = mapped_column(String(64))
    destination: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)  # the change feed event that made it
    partition_fk: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    study_uid: Mapped[str] = mapped_column(String(64))
    series_uid: Mapped[str] = mapped_column(String(64))
    sop_uid: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
