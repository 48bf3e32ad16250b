"""The webhook tables (migration ``0006_changefeed_webhooks``).

A webhook's secret is not stored: it is derived from the archive's secret key and the row's
``secret_nonce`` (:mod:`pacs.webhooks.signing`), so a copy of the database alone signs nothing.
``last_seq`` is how far the dispatcher has turned the change feed into this webhook's deliveries;
each delivery keeps the body it sends, so every attempt sends the same bytes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from pacs.index.models import Base, BigId


class Webhook(Base):
    __tablename__ = "webhooks"
    __table_args__ = (Index("ix_webhooks_partition", "partition_fk"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(String(256), default="")
    actions: Mapped[str] = mapped_column(String(256), default="")  # comma-separated feed actions; "" = all
    secret_nonce: Mapped[str] = mapped_column(String(64))
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    # The partition whose change feed it follows (migration 0020).
    partition_fk: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WebhookDelivery(Base):
    """One event for one webhook: pending until the receiver answers 2xx, dead once attempts ran out."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_fk", "seq", name="uq_webhook_deliveries_event"),
        Index("ix_webhook_deliveries_lane", "status", "webhook_fk", "study_uid", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    webhook_fk: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(BigInteger)
    partition_fk: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    action: Mapped[str] = mapped_column(String(32))
    study_uid: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
