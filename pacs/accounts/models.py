"""Accounts, API keys, patient links, share links and the audit trail (SQLAlchemy 2 typed ORM).

The tables live in the index database next to the studies (same ``Base.metadata``) and exist only
through the Alembic migration ``0002``. Secrets are never stored in clear: passwords and PINs as
argon2 hashes, API keys and share tokens (high-entropy random strings) as SHA-256 digests.
``audit_events`` (:class:`AuditRow`; callers write :class:`pacs.accounts.audit.AuditEvent`) is
append-only; the migration installs triggers that refuse UPDATE and DELETE.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from pacs.index.models import Base, BigId

ROLES = ("admin", "physician", "patient", "vendor")


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    # The partition the account belongs to (pacs.partitions); admins of the default one act in every partition.
    partition_fk: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))  # one of ROLES
    full_name: Mapped[str] = mapped_column(String(128), default="")
    # Where a patient is told of a signed report (issue 13); never shown to other accounts.
    email: Mapped[str | None] = mapped_column(String(254), nullable=True, default=None)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class ApiKey(Base):
    """A long-lived machine credential; the clear key is shown once, only its SHA-256 is kept."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_user", "user_fk"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_fk: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64), default="")
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class EdgeCredential(Base):
    """An edge worker's credential (issue 15): the clear token is shown once, only its SHA-256 is kept."""

    __tablename__ = "edge_workers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class PatientLink(Base):
    """A patient account owns the studies of one (PatientID, IssuerOfPatientID)."""

    __tablename__ = "patient_links"
    __table_args__ = (
        UniqueConstraint("user_fk", "patient_id", "issuer", name="uq_patient_links_user_patient"),
        Index("ix_patient_links_patient", "patient_id", "issuer"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_fk: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Share(Base):
    """A link to one study: ``/s/{token}``, the token kept only as its SHA-256. A share made for a
    clinician also opens the study over DICOMweb with a bearer token (its SHA-256 kept likewise)."""

    __tablename__ = "shares"
    __table_args__ = (Index("ix_shares_study", "study_uid"),
                      Index("ux_shares_dicomweb_token", "dicomweb_token_hash", unique=True))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The token is HMAC(secret key, salt): re-derivable for the owner's QR code, never stored.
    token_salt: Mapped[str] = mapped_column(String(32))
    partition_fk: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))  # the study's
    study_uid: Mapped[str] = mapped_column(String(64))
    created_by_fk: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    pin_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    failed_tries: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    allow_download: Mapped[bool] = mapped_column(Boolean, default=False)
    views: Mapped[int] = mapped_column(Integer, default=0)
    last_viewed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Clinician shares only: the DICOMweb bearer token, HMAC(secret key, "dicomweb:" + salt), as SHA-256.
    dicomweb_token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    recipient: Mapped[str] = mapped_column(String(128), default="", server_default="")


class AuditRow(Base):
    """One row per security-relevant event (append-only): who, what, when, from where, outcome."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_partition", "partition_fk", "at"),
        Index("ix_audit_events_study", "study_uid", "at"),
        Index("ix_audit_events_username", "username", "at"),
        Index("ix_audit_events_action_source", "action", "source", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The partition the event happened in (migration 0020): its admins read it.
    partition_fk: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    action: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))  # success | failure | denied
    user_id: Mapped[int | None] = mapped_column(BigId, nullable=True)  # no FK: the trail outlives users
    username: Mapped[str] = mapped_column(String(64), default="")
    role: Mapped[str] = mapped_column(String(16), default="")
    share_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    study_uid: Mapped[str] = mapped_column(String(64), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    source: Mapped[str] = mapped_column(String(128), default="")  # client IP or calling AE title
    detail: Mapped[str] = mapped_column(Text, default="")
