"""The notification tables (migration ``0014``).

``notification_deliveries`` is the outbox of patient messages and their delivery log: one row per
notification (a share link made for someone, a report signed) and recipient, unique on that pair,
so however often a cause is seen it is sent to an address once. ``notification_cursors`` holds how
far the report notices have read the change feed (moved only by a conditional update in the
transaction that writes their deliveries).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pacs.index.models import Base, BigId, partition_column


class NotificationCursor(Base):
    __tablename__ = "notification_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)


class NotificationDelivery(Base):
    """One message to one recipient for one notification (``share:{id}``, ``report:{seq}``)."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        UniqueConstraint("notification", "recipient", name="uq_notification_deliveries_recipient"),
        Index("ix_notification_deliveries_status", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    notification: Mapped[str] = mapped_column(String(96))
    kind: Mapped[str] = mapped_column(String(16))  # share | report
    channel: Mapped[str] = mapped_column(String(16))  # email | sms
    recipient: Mapped[str] = mapped_column(String(254))
    first_name: Mapped[str] = mapped_column(String(64), default="")  # the greeting; "" for none
    study_uid: Mapped[str] = mapped_column(String(64))
    share_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    partition_fk: Mapped[int] = partition_column()  # the study's partition: its admins read the log
    message_key: Mapped[str] = mapped_column(String(32))  # the Message-ID's left part, the same on every attempt
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
